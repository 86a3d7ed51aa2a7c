"""The synchronous SDK: :class:`Client`, a blocking facade over :class:`AsyncClient`.

A private event loop runs in a daemon thread; every call is submitted to it with
``asyncio.run_coroutine_threadsafe`` and waited for, so a ``Client`` may be shared by threads.
Callbacks (``progress``, ``on_info``) run on that loop's thread.

Owns: nothing beyond the loop thread. May import: ``aisync.util`` and ``aisync.config``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, BinaryIO, TypeVar

from aisync.client.aio import AsyncClient, BucketLike
from aisync.client.body import Progress
from aisync.client.types import ObjectEntry, ObjectInfo, ObjectPage

T = TypeVar("T")


class Client:
    """Blocking client of one aisync cluster: the methods of :class:`AsyncClient`, synchronous.

    >>> with Client("http://127.0.0.1:51080") as c:   # doctest: +SKIP
    ...     c.create_bucket("ais://train")
    ...     c.put_object("ais://train", "a.txt", b"hello")
    """

    def __init__(self, endpoint: str, *, timeout: float = 60, connector_limit: int = 64,
                 token: str | None = None) -> None:
        """``token``: the admin token; default ``$AISYNC_TOKEN`` or the cluster dir's
        ``admin-token`` file (see :func:`aisync.client.aio.find_token`)."""
        self._async = AsyncClient(endpoint, timeout=timeout, connector_limit=connector_limit,
                                  token=token)
        self.endpoint = self._async.endpoint
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(target=self._run_loop, name="aisync-client", daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a Client method was called from one of its own callbacks")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._call(self._async.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; prefer close() / with
        if not getattr(self, "_closed", True) and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- cluster -----------------------------------------------------------------------------

    def health(self) -> dict:
        return self._call(self._async.health())

    def ready(self) -> bool:
        return self._call(self._async.ready())

    def cluster_map(self) -> dict:
        return self._call(self._async.cluster_map())

    def bucket_map(self) -> dict:
        return self._call(self._async.bucket_map())

    def cluster_status(self) -> dict:
        return self._call(self._async.cluster_status())

    def node_status(self) -> dict:
        return self._call(self._async.node_status())

    # -- buckets -----------------------------------------------------------------------------

    def list_buckets(self) -> list[dict]:
        return self._call(self._async.list_buckets())

    def create_bucket(self, bucket: BucketLike, **props: Any) -> dict:
        """See :meth:`AsyncClient.create_bucket` (``profile``, ``settings``, ``source``)."""
        return self._call(self._async.create_bucket(bucket, **props))

    def head_bucket(self, bucket: BucketLike) -> bool:
        return self._call(self._async.head_bucket(bucket))

    def bucket_info(self, bucket: BucketLike) -> dict:
        return self._call(self._async.bucket_info(bucket))

    def destroy_bucket(self, bucket: BucketLike) -> None:
        return self._call(self._async.destroy_bucket(bucket))

    def list_objects(self, bucket: BucketLike, prefix: str = "", limit: int | None = None,
                     token: str | None = None, *, cached: bool = False) -> ObjectPage:
        return self._call(self._async.list_objects(bucket, prefix, limit, token, cached=cached))

    def iter_objects(self, bucket: BucketLike, prefix: str = "", page_size: int = 1000, *,
                     cached: bool = False) -> Iterator[ObjectEntry]:
        """Every object (under ``prefix``), fetching one page at a time."""
        token: str | None = None
        while True:
            page = self.list_objects(bucket, prefix=prefix, limit=page_size, token=token,
                                     cached=cached)
            yield from page.objects
            if not page.next_token or page.next_token == token:
                return
            token = page.next_token

    def set_bucket_props(self, bucket: BucketLike, **props: Any) -> dict:
        """See :meth:`AsyncClient.set_bucket_props` (``consistency``, ``max_staleness``)."""
        return self._call(self._async.set_bucket_props(bucket, **props))

    # -- jobs --------------------------------------------------------------------------------

    def start_job(self, spec: Mapping[str, Any] | None = None, **fields: Any) -> dict:
        """See :meth:`AsyncClient.start_job`:
        ``c.start_job(kind="prefetch", bucket="s3://datasets", prefix="train/")``."""
        return self._call(self._async.start_job(spec, **fields))

    def list_jobs(self, states: str | Iterable[str] | None = None,
                  limit: int = 100) -> list[dict]:
        return self._call(self._async.list_jobs(states, limit))

    def get_job(self, job_id: str, wait: float = 0) -> dict:
        return self._call(self._async.get_job(job_id, wait))

    def wait_job(self, job_id: str, timeout: float | None = None, poll: float = 20,
                 on_progress: Callable[[dict], Any] | None = None) -> dict:
        """The finished job, or the job as it is after ``timeout`` seconds (check ``state``).
        ``on_progress(job)`` runs on the client's loop thread."""
        return self._call(self._async.wait_job(job_id, timeout, poll, on_progress))

    def abort_job(self, job_id: str) -> dict:
        return self._call(self._async.abort_job(job_id))

    def get_job_report(self, job_id: str, actions: str | Iterable[str] | None = None,
                       after: str | None = None, limit: int | None = None) -> dict:
        return self._call(self._async.get_job_report(job_id, actions, after, limit))

    def iter_job_report(self, job_id: str, actions: str | Iterable[str] | None = None,
                        page_size: int = 1000) -> Iterator[dict]:
        """Every report entry of a job, fetching one page at a time."""
        after: str | None = None
        while True:
            page = self.get_job_report(job_id, actions, after, page_size)
            yield from page.get("entries") or []
            token = page.get("next_token")
            if not token or token == after:
                return
            after = token

    # -- schedules ---------------------------------------------------------------------------

    def add_schedule(self, name: str, *, job: Mapping[str, Any], cron: str | None = None,
                     every: str | float | None = None, replace: bool = False) -> dict:
        return self._call(self._async.add_schedule(name, job=job, cron=cron, every=every,
                                                   replace=replace))

    def list_schedules(self) -> list[dict]:
        return self._call(self._async.list_schedules())

    def get_schedule(self, name: str) -> dict:
        return self._call(self._async.get_schedule(name))

    def remove_schedule(self, name: str) -> None:
        return self._call(self._async.remove_schedule(name))

    def attach_remote(self, alias: str, urls: str | Iterable[str] | None = None) -> dict:
        return self._call(self._async.attach_remote(alias, urls))

    def list_remotes(self) -> list[dict]:
        return self._call(self._async.list_remotes())

    def detach_remote(self, alias: str) -> None:
        return self._call(self._async.detach_remote(alias))

    def metrics(self) -> str:
        return self._call(self._async.metrics())

    # -- S3 access keys ----------------------------------------------------------------------

    def create_access_key(self, access_key: str | None = None, secret_key: str | None = None,
                          description: str = "") -> dict:
        """See :meth:`AsyncClient.create_access_key`: the answer holds the secret, once."""
        return self._call(self._async.create_access_key(access_key, secret_key, description))

    def list_access_keys(self) -> list[dict]:
        return self._call(self._async.list_access_keys())

    def delete_access_key(self, access_key: str) -> None:
        return self._call(self._async.delete_access_key(access_key))

    # -- objects -----------------------------------------------------------------------------

    def put_object(self, bucket: BucketLike, name: str, data: Any, *, size: int | None = None,
                   checksum: str | None = None, progress: Progress | None = None) -> ObjectInfo:
        """``data``: bytes, a path (``os.PathLike``), a binary file object or an iterator of
        bytes; files are streamed in chunks."""
        return self._call(self._async.put_object(bucket, name, data, size=size,
                                                 checksum=checksum, progress=progress))

    def get_object(self, bucket: BucketLike, name: str, *,
                   byte_range: tuple[int, int | None] | None = None) -> bytes:
        return self._call(self._async.get_object(bucket, name, byte_range=byte_range))

    def download(self, bucket: BucketLike, name: str, path: str | os.PathLike, *,
                 byte_range: tuple[int, int | None] | None = None,
                 progress: Progress | None = None,
                 on_info: Callable[[ObjectInfo], Any] | None = None) -> ObjectInfo:
        return self._call(self._async.download(bucket, name, path, byte_range=byte_range,
                                               progress=progress, on_info=on_info))

    def download_to(self, bucket: BucketLike, name: str, fileobj: BinaryIO, *,
                    byte_range: tuple[int, int | None] | None = None,
                    progress: Progress | None = None,
                    on_info: Callable[[ObjectInfo], Any] | None = None) -> ObjectInfo:
        return self._call(self._async.download_to(bucket, name, fileobj, byte_range=byte_range,
                                                  progress=progress, on_info=on_info))

    def head_object(self, bucket: BucketLike, name: str) -> ObjectInfo:
        return self._call(self._async.head_object(bucket, name))

    def delete_object(self, bucket: BucketLike, name: str) -> None:
        return self._call(self._async.delete_object(bucket, name))
