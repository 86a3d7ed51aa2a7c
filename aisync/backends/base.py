"""The backend contract: what every source of truth (S3, GCS, Azure, OCI, a POSIX directory, a
peer aisync cluster) offers aisync, in a handful of async methods.

A :class:`Backend` is one configured account/endpoint of one provider; every call names the
bucket (the provider's container) and the object. Five methods are required (``head``, ``open``,
``put``, ``delete``, ``list_page``); ``copy`` is optional and declared in :class:`Capabilities`.

Rules every provider follows (the conformance suite in ``tests/backends/`` checks them):

* Objects come back as :class:`VersionToken` records: size plus whatever the provider knows
  (ETag, version id or generation, last-modified, MD5 / CRC32C / SHA-256). A token changes on
  every overwrite, also one that keeps the size.
* ``open`` streams: it returns an :class:`ObjectStream` whose ``version`` is known before the
  first byte is read, and whose chunks arrive as the provider sends them. A ``byte_range`` is
  ``(first, last)`` inclusive, as in HTTP. ``if_version`` pins the read: when the object is no
  longer that version, ``PreconditionFailed`` is raised (at open or, at the latest, before the
  stream ends) instead of returning a mix.
* ``put`` reads a local file (the target always has the bytes on disk before a write-through),
  so providers may retry or use multipart freely; it returns the new version token.
* ``list_page`` returns entries in key order (UTF-8 byte order) with their tokens, and a
  continuation token that resumes after the last entry.
* Errors are the typed ones of ``aisync.util.errors``: ``ObjectNotFound``, ``BucketNotFound``,
  ``PreconditionFailed``, ``AccessDenied``, ``Throttled`` and ``BackendUnavailable`` (transient,
  retried by callers with backoff), ``BackendError`` (permanent). Each provider translates its
  SDK's errors through one table (``ERRORS``) with the original chained as ``__cause__``.
* Blocking SDK calls never run on the event loop: providers built on a blocking SDK use
  :class:`ThreadedBackend`, which runs them in one bounded thread pool per backend.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from aisync.util.errors import AisyncError, BackendError, NotSupported

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class VersionToken:
    """What a backend says about one version of an object. Unknown fields are None.

    ``etag`` is unquoted. ``version_id`` holds the S3/Azure/OCI version id or the GCS generation
    (as a string). Checksums are lower-case hex; ``last_modified`` is epoch seconds.
    """

    size: int
    etag: str | None = None
    version_id: str | None = None
    last_modified: float | None = None
    md5: str | None = None
    crc32: str | None = None
    crc32c: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionToken:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def b64_to_hex(value: str | None) -> str | None:
    """Providers that send base64 digests (GCS, Azure Content-MD5) normalize with this."""
    if not value:
        return None
    return base64.b64decode(value).hex()


@dataclass(frozen=True, slots=True)
class ListEntry:
    name: str
    version: VersionToken


@dataclass(frozen=True, slots=True)
class ListPage:
    entries: list[ListEntry]
    next_token: str | None = None


@dataclass(frozen=True, slots=True)
class LevelPage:
    """One level of a listing split at ``/``: objects directly under the prefix, and the
    sub-prefixes (each ending with ``/``), both in key order."""

    entries: list[ListEntry]
    prefixes: list[str]
    next_token: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do beyond the required methods, and how its tokens behave."""

    versioned: bool = False            # reports version ids / generations
    conditional_get: bool = False      # ``if_version`` enforced by the server itself
    conditional_put: bool = False      # ``if_match`` on put enforced by the server
    server_side_copy: bool = False     # ``copy`` is implemented
    checksums: frozenset[str] = field(default_factory=frozenset)  # md5, crc32, crc32c, sha256
    max_page: int = 1000               # largest ``limit`` honoured by ``list_page``
    level_listing: bool = False        # ``list_level`` is implemented (listing by "folder")


class ObjectStream(abc.ABC):
    """An open object: ``version`` is known now; iterate for the bytes; always ``close``.

    ``self_verifying`` is True when the stream itself checks the whole object against a
    checksum the source sent (an SDK validating a full-object CRC as it reads): iteration then
    raises instead of ending normally when the bytes do not match, so callers need not hash.
    """

    version: VersionToken
    self_verifying: bool = False

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> ObjectStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Backend(abc.ABC):
    """One account/endpoint of one provider. See the module docstring for the rules."""

    provider: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    @abc.abstractmethod
    async def head(self, bucket: str, name: str) -> VersionToken: ...

    @abc.abstractmethod
    async def open(self, bucket: str, name: str, *, byte_range: tuple[int, int] | None = None,
                   if_version: VersionToken | None = None) -> ObjectStream: ...

    @abc.abstractmethod
    async def put(self, bucket: str, name: str, path: Path, *,
                  content_type: str | None = None) -> VersionToken: ...

    @abc.abstractmethod
    async def delete(self, bucket: str, name: str) -> None: ...

    @abc.abstractmethod
    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000) -> ListPage: ...

    async def copy(self, bucket: str, src: str, dst: str) -> VersionToken:
        raise NotSupported(f"{self.provider} does not copy server-side")

    async def list_level(self, bucket: str, prefix: str = "", token: str | None = None,
                         limit: int = 1000) -> LevelPage:
        """Optional (``capabilities.level_listing``): one level under ``prefix``, split at
        ``/``. Lets a caller list sub-prefixes in parallel (S3 scales listing per prefix)."""
        raise NotSupported(f"{self.provider} does not list by level")

    @classmethod
    def from_profile(cls, settings: Mapping[str, Any]) -> Backend:
        """Build from a profile's settings (everything but ``provider``); see ``registry``."""
        raise NotSupported(f"{cls.__name__} cannot be built from a profile")

    async def close(self) -> None:  # noqa: B027 (optional hook, a no-op by default)
        """Release connections and threads."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- shared machinery for providers whose SDK blocks --

ErrorTable = list[tuple[Callable[[BaseException], bool], Callable[[BaseException], AisyncError]]]


def translate(exc: BaseException, table: ErrorTable, what: str) -> AisyncError:
    """Map an SDK exception through a provider's table; the first matching row wins."""
    if isinstance(exc, AisyncError):
        return exc
    for matches, make in table:
        if matches(exc):
            err = make(exc)
            break
    else:
        err = BackendError(f"{what}: {type(exc).__name__}: {exc}")
    if not err.message or err.message == err.code:
        err.message = f"{what}: {exc}"
    err.__cause__ = exc
    return err


class ThreadedBackend(Backend):
    """Base for providers built on a blocking SDK: a bounded thread pool and error translation.

    Subclasses set ``ERRORS`` and call ``await self.call(fn, *args, what=...)``; streaming reads
    use :meth:`stream_blocking` to turn a blocking chunk iterator into an :class:`ObjectStream`.
    """

    ERRORS: ClassVar[ErrorTable] = []

    def __init__(self, max_threads: int = 16) -> None:
        self._pool = ThreadPoolExecutor(max_threads, thread_name_prefix=f"aisync-{self.provider}")

    async def call(self, fn: Callable[..., Any], *args: Any, what: str = "") -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args))
        except Exception as exc:
            err = translate(exc, self.ERRORS, what or f"{self.provider} call")
            if err is exc:
                raise  # already typed: keep its own cause
            raise err from exc

    def stream_blocking(self, version: VersionToken, chunks: Iterator[bytes],
                        closer: Callable[[], None], what: str, *,
                        self_verifying: bool = False) -> ObjectStream:
        stream = _ThreadedStream(self, version, chunks, closer, what)
        stream.self_verifying = self_verifying
        return stream

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _ThreadedStream(ObjectStream):
    """Reads a blocking chunk iterator ahead in one pool thread, into a bounded queue.

    Reading and consuming overlap (no thread round trip per chunk), and at most ``PREFETCH``
    chunks are held in memory: the producer waits for the consumer beyond that.
    """

    PREFETCH = 4

    def __init__(self, backend: ThreadedBackend, version: VersionToken, chunks: Iterator[bytes],
                 closer: Callable[[], None], what: str) -> None:
        self.version = version
        self._backend, self._chunks, self._closer, self._what = backend, chunks, closer, what
        self._closed = threading.Event()
        self._room = threading.Semaphore(self.PREFETCH)
        self._producer: asyncio.Future | None = None

    def _produce(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        try:
            for chunk in self._chunks:
                while not self._room.acquire(timeout=0.5):
                    if self._closed.is_set():
                        return
                if self._closed.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, ("chunk", chunk))
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
        except BaseException as exc:  # handed to the consumer, translated there
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        self._producer = loop.run_in_executor(self._backend._pool, self._produce, loop, queue)
        while True:
            kind, item = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                err = translate(item, self._backend.ERRORS, self._what)
                if err is item:
                    raise item
                raise err from item
            self._room.release()
            if item:
                yield item

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._producer is not None:
            # The producer stops at its next chunk; a source stalled mid-read is closed under it
            # after a grace period (closing it first would race the producer's iteration).
            try:
                await asyncio.wait_for(asyncio.shield(self._producer), 5.0)
            except TimeoutError:
                pass
            except Exception:
                pass
        await self._backend.call(self._closer, what=f"closing {self._what}")
