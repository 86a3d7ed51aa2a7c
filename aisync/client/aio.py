"""The asynchronous SDK: :class:`AsyncClient`, one ``aiohttp`` session per client.

Object requests go to a proxy, which answers ``307`` with the owning target's URL. Redirects are
followed here, by hand (at most :data:`MAX_REDIRECTS` hops, same method): an upload is first sent
to the proxy with ``Expect: 100-continue`` so the proxy redirects it before any body byte
travels, then the body goes straight to the target. Any non-2xx answer becomes the typed error of
:mod:`aisync.util.errors`; a node that cannot be reached becomes ``NodeUnavailable``.

Owns: the HTTP conversation with a cluster. May import: ``aisync.util`` and ``aisync.config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import aiohttp
from yarl import URL

from aisync.client.body import BodySource, BytesBody, Progress, make_body
from aisync.client.jobs import JobsMixin
from aisync.client.keys import KeysMixin
from aisync.client.types import (
    ObjectEntry,
    ObjectInfo,
    ObjectPage,
    range_header,
)
from aisync.util.errors import (
    AisyncError,
    InvalidArgument,
    NodeUnavailable,
    error_from_dict,
)
from aisync.util.names import BucketRef, parse_uri, validate_object_name

MAX_REDIRECTS = 5
READ_CHUNK = 1 << 20
ERROR_CODE_HEADER = "X-Aisync-Error-Code"
_REDIRECTS = (301, 302, 303, 307, 308)
#: Messages for errors that arrive without a body (HEAD): the code travels in a header.
_HEAD_MESSAGES = {
    "ObjectNotFound": "no such object",
    "BucketNotFound": "no such bucket",
    "NotFound": "not found",
    "ObjectCorrupted": "the stored object failed its checksum",
    "NoActiveTargets": "the cluster has no active target",
}

BucketLike = str | BucketRef


#: Where ``aisync cluster up`` leaves the admin token, inside the cluster directory.
TOKEN_FILE = "admin-token"


def find_token() -> str | None:
    """The admin token: ``$AISYNC_TOKEN``, else ``<cluster dir>/admin-token`` (the cluster dir
    is ``$AISYNC_CLUSTER_DIR`` or ``./.aisync-cluster``), else None (only health answers)."""
    token = os.environ.get("AISYNC_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get("AISYNC_CLUSTER_DIR") or ".aisync-cluster") / TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def normalize_endpoint(endpoint: str) -> str:
    """``host:port`` → ``http://host:port``; trailing slashes dropped; scheme checked."""
    endpoint = endpoint.strip()
    if not endpoint:
        raise InvalidArgument("empty endpoint")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    url = URL(endpoint)
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidArgument(f"invalid endpoint {endpoint!r}; expected http://HOST:PORT")
    return endpoint.rstrip("/")


def as_bucket(bucket: BucketLike) -> BucketRef:
    """``"ais://train"``, ``"train"`` or a :class:`BucketRef` → :class:`BucketRef`."""
    if isinstance(bucket, BucketRef):
        return bucket
    if not isinstance(bucket, str):
        raise TypeError(f"bucket must be a str or BucketRef, not {type(bucket).__name__}")
    ref, obj = parse_uri(bucket)
    if obj:
        raise InvalidArgument(f"expected a bucket, got an object URI {bucket!r}")
    return ref


class ObjectReader:
    """An open GET: ``info`` from the response headers and the body as chunks."""

    def __init__(self, response: aiohttp.ClientResponse, info: ObjectInfo, label: str) -> None:
        self._response = response
        self.info = info
        self.status = response.status
        self._label = label

    async def iter_chunks(self, size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """Yield the body in chunks of at most ``size`` bytes (only the last may be short)."""
        buf = bytearray()
        try:
            async for data in self._response.content.iter_any():
                buf += data
                while len(buf) >= size:
                    yield bytes(buf[:size])
                    del buf[:size]
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise NodeUnavailable(f"{self._label}: connection lost while reading: {exc}") from exc
        if buf:
            yield bytes(buf)

    async def read(self) -> bytes:
        """The whole (remaining) body in memory."""
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise NodeUnavailable(f"{self._label}: connection lost while reading: {exc}") from exc

    def close(self) -> None:
        self._response.release()


class AsyncClient(JobsMixin, KeysMixin):
    """Asynchronous client of one aisync cluster (any proxy's URL as ``endpoint``).

    ``timeout`` bounds connecting and every wait for data, not the length of a transfer.
    Use ``async with AsyncClient(url) as c:`` or call :meth:`close`.
    """

    def __init__(self, endpoint: str, *, timeout: float = 60, connector_limit: int = 64,
                 token: str | None = None) -> None:
        self.endpoint = normalize_endpoint(endpoint)
        self.timeout = timeout
        self.connector_limit = connector_limit
        self._session: aiohttp.ClientSession | None = None
        token = find_token() if token is None else token
        #: Sent to the endpoint's origin only: a redirect to a target carries its own signature.
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._origin = URL(self.endpoint).origin()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connector_limit),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout, sock_read=self.timeout
                ),
                auto_decompress=False,
            )
        return self._session

    # -- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, object] | None = None) -> URL:
        url = URL(self.endpoint + path, encoded=True)
        if params:
            query = {k: str(v) for k, v in params.items() if v is not None}
            url = url.update_query(query)
        return url

    @staticmethod
    def _bucket_params(ref: BucketRef) -> dict[str, object]:
        params: dict[str, object] = {"provider": ref.provider}
        if ref.namespace:
            params["namespace"] = ref.namespace
        return params

    @staticmethod
    def _bucket_path(ref: BucketRef, suffix: str = "") -> str:
        return f"/v1/buckets/{quote(ref.name, safe='')}{suffix}"

    @staticmethod
    def _object_path(ref: BucketRef, name: str) -> str:
        validate_object_name(name)
        return f"/v1/objects/{quote(ref.name, safe='')}/{quote(name, safe='/')}"

    async def _open(
        self,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str] | None = None,
        body: BodySource | None = None,
        label: str = "",
    ) -> aiohttp.ClientResponse:
        """Send a request, following redirects by hand; return the final (open) response.

        Non-2xx answers are raised as typed errors (the response is released).
        """
        session = self._get_session()
        hdrs = dict(headers or {})
        if body is not None and body.size is not None:
            hdrs["Content-Length"] = str(body.size)
        hops = 0
        first = True
        while True:
            data = body.open() if body is not None else None
            expect100 = first and body is not None and method == "PUT"
            send = {**hdrs, **self._auth} if url.origin() == self._origin else hdrs
            try:
                resp = await session.request(
                    method, url, headers=send, data=data, allow_redirects=False,
                    expect100=expect100,
                )
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                raise NodeUnavailable(
                    f"cannot reach {url.origin()}{' (' + label + ')' if label else ''}: "
                    f"{_describe(exc)}"
                ) from exc
            if resp.status in _REDIRECTS:
                location = resp.headers.get("Location")
                resp.release()
                if not location:
                    raise AisyncError(f"{url.origin()} answered {resp.status} without Location")
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise AisyncError(f"{label or url}: more than {MAX_REDIRECTS} redirects")
                url = url.join(URL(location, encoded=True))
                first = False
                continue
            if resp.status >= 300:
                try:
                    raise await _error_from_response(resp, method, label or str(url))
                finally:
                    resp.release()
            return resp

    async def _json(self, method: str, path: str, params: Mapping[str, object] | None = None,
                    label: str = "", payload: Any = None) -> Any:
        body = headers = None
        if payload is not None:
            body = BytesBody(json.dumps(payload).encode(), None)
            headers = {"Content-Type": "application/json"}
        resp = await self._open(method, self._url(path, params), headers=headers, body=body,
                                label=label)
        try:
            if resp.status == 204:
                return None
            raw = await resp.read()
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise NodeUnavailable(f"{self.endpoint}: connection lost: {_describe(exc)}") from exc
        finally:
            resp.release()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise AisyncError(f"{path}: the server sent invalid JSON") from exc

    # -- cluster -----------------------------------------------------------------------------

    async def health(self) -> dict:
        """``GET /v1/health``: ``{"status", "id", "role", "cluster"}``."""
        return await self._json("GET", "/v1/health")

    async def ready(self) -> bool:
        """True when the node answers ``/v1/health/ready`` with 200 (503 → False)."""
        url = self._url("/v1/health/ready")
        try:
            resp = await self._get_session().get(url, allow_redirects=False,
                                                 headers=self._auth)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise NodeUnavailable(f"cannot reach {self.endpoint}: {_describe(exc)}") from exc
        async with resp:
            if resp.status == 200:
                return True
            if resp.status == 503:
                return False
            raise await _error_from_response(resp, "GET", "/v1/health/ready")

    async def cluster_map(self) -> dict:
        return await self._json("GET", "/v1/cluster/map")

    async def bucket_map(self) -> dict:
        return await self._json("GET", "/v1/cluster/bucket-map")

    async def cluster_status(self) -> dict:
        return await self._json("GET", "/v1/cluster/status")

    async def node_status(self) -> dict:
        return await self._json("GET", "/v1/node/status")

    # -- buckets -----------------------------------------------------------------------------

    async def list_buckets(self) -> list[dict]:
        doc = await self._json("GET", "/v1/buckets")
        return list((doc or {}).get("buckets") or [])

    async def create_bucket(self, bucket: BucketLike, *, profile: str | None = None,
                            settings: Mapping[str, Any] | None = None,
                            source: str | None = None) -> dict:
        """Create ``ais://name``, or a cached view of a source bucket (``s3://``, ``fs://`` …):
        ``profile`` names a backend profile of the nodes' configuration (credentials),
        ``settings`` holds non-secret provider settings (``endpoint_url``, ``path`` …),
        ``source`` the bucket's name at the provider when it differs."""
        ref = as_bucket(bucket)
        props: dict[str, Any] = {}
        if profile:
            props["profile"] = profile
        if settings:
            props["settings"] = dict(settings)
        if source:
            props["source"] = source
        return await self._json("PUT", self._bucket_path(ref), self._bucket_params(ref),
                                label=str(ref), payload=props or None) or {}

    async def head_bucket(self, bucket: BucketLike) -> bool:
        """True if the bucket exists (404 → False; other errors raise)."""
        ref = as_bucket(bucket)
        try:
            resp = await self._open("HEAD", self._url(self._bucket_path(ref),
                                                      self._bucket_params(ref)), label=str(ref))
        except FileNotFoundError:
            return False
        resp.release()
        return True

    async def bucket_info(self, bucket: BucketLike) -> dict:
        ref = as_bucket(bucket)
        return await self._json("GET", self._bucket_path(ref, "/info"),
                                self._bucket_params(ref), label=str(ref))

    async def destroy_bucket(self, bucket: BucketLike) -> None:
        ref = as_bucket(bucket)
        await self._json("DELETE", self._bucket_path(ref), self._bucket_params(ref),
                         label=str(ref))

    async def set_bucket_props(self, bucket: BucketLike, **props: Any) -> dict:
        """Change a cached bucket's properties and return them all: ``consistency``
        (``none|validate|synchronize``) and ``max_staleness`` (seconds or ``"5m"``; ``None``
        clears it)."""
        ref = as_bucket(bucket)
        return await self._json("PATCH", self._bucket_path(ref), self._bucket_params(ref),
                                label=str(ref), payload=dict(props)) or {}

    async def list_objects(self, bucket: BucketLike, prefix: str = "", limit: int | None = None,
                           token: str | None = None, *, cached: bool = False) -> ObjectPage:
        """One page of the bucket listing, in key order. For a cached bucket it merges the
        source's listing with the cluster's copies; ``cached=True`` lists only the copies."""
        ref = as_bucket(bucket)
        params = self._bucket_params(ref)
        if cached:
            params["cached"] = "true"
        if prefix:
            params["prefix"] = prefix
        if limit is not None:
            params["limit"] = int(limit)
        if token:
            params["token"] = token
        doc = await self._json("GET", self._bucket_path(ref), params, label=str(ref))
        return ObjectPage.from_dict(doc or {})

    async def iter_objects(self, bucket: BucketLike, prefix: str = "",
                           page_size: int = 1000, *,
                           cached: bool = False) -> AsyncIterator[ObjectEntry]:
        """Every object (under ``prefix``), fetching one page at a time."""
        token: str | None = None
        while True:
            page = await self.list_objects(bucket, prefix=prefix, limit=page_size, token=token,
                                           cached=cached)
            for entry in page.objects:
                yield entry
            if not page.next_token or page.next_token == token:
                return
            token = page.next_token

    async def metrics(self) -> str:
        """The cluster's Prometheus metrics (text exposition format)."""
        resp = await self._open("GET", self._url("/v1/metrics"), label="metrics")
        try:
            return await resp.text()
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise NodeUnavailable(f"{self.endpoint}: connection lost: {_describe(exc)}") from exc
        finally:
            resp.release()

    # -- objects -----------------------------------------------------------------------------

    async def put_object(self, bucket: BucketLike, name: str, data: Any, *,
                         size: int | None = None, checksum: str | None = None,
                         progress: Progress | None = None) -> ObjectInfo:
        """Store an object. ``data``: bytes, a path (``os.PathLike``), a binary file object, or
        an (async) iterator of bytes. Files are streamed in chunks. ``checksum``
        (``xxh3:<hex>``) is verified by the target. ``progress(n)`` is called as bytes go out.
        """
        ref = as_bucket(bucket)
        url = self._url(self._object_path(ref, name), self._bucket_params(ref))
        headers = {"Content-Type": "application/octet-stream"}
        if checksum:
            headers["X-Aisync-Checksum"] = checksum
        body = make_body(data, size=size, progress=progress)
        label = f"{ref}/{name}"
        try:
            resp = await self._open("PUT", url, headers=headers, body=body, label=label)
            try:
                raw = await resp.read()
            finally:
                resp.release()
        finally:
            body.close()
        body.report_done()
        doc: dict = {}
        if raw:
            with contextlib.suppress(ValueError):
                doc = json.loads(raw)
        if not doc:
            return ObjectInfo.from_headers(resp.headers, bucket=ref.name, provider=ref.provider,
                                           name=name)
        return ObjectInfo.from_put_answer(doc, bucket=ref.name, provider=ref.provider, name=name)

    @contextlib.asynccontextmanager
    async def open_object(self, bucket: BucketLike, name: str,
                          byte_range: tuple[int, int | None] | None = None
                          ) -> AsyncIterator[ObjectReader]:
        """``async with client.open_object(b, name) as r:`` → ``r.info``, ``r.iter_chunks()``."""
        ref = as_bucket(bucket)
        url = self._url(self._object_path(ref, name), self._bucket_params(ref))
        headers = {"Range": range_header(byte_range)} if byte_range is not None else None
        resp = await self._open("GET", url, headers=headers, label=f"{ref}/{name}")
        info = ObjectInfo.from_headers(resp.headers, bucket=ref.name, provider=ref.provider,
                                       name=name)
        reader = ObjectReader(resp, info, f"{ref}/{name}")
        try:
            yield reader
        finally:
            reader.close()

    async def get_object(self, bucket: BucketLike, name: str, *,
                         byte_range: tuple[int, int | None] | None = None) -> bytes:
        """The object's bytes (or the ``(first, last)`` inclusive range) in memory."""
        async with self.open_object(bucket, name, byte_range) as reader:
            return await reader.read()

    async def download_to(self, bucket: BucketLike, name: str, fileobj: BinaryIO, *,
                          byte_range: tuple[int, int | None] | None = None,
                          progress: Progress | None = None,
                          on_info: Callable[[ObjectInfo], Any] | None = None) -> ObjectInfo:
        """Stream an object into a binary file object (written from a worker thread)."""
        async with self.open_object(bucket, name, byte_range) as reader:
            if on_info is not None:
                on_info(reader.info)
            async for chunk in reader.iter_chunks(READ_CHUNK):
                await asyncio.to_thread(fileobj.write, chunk)
                if progress is not None:
                    progress(len(chunk))
            return reader.info

    async def download(self, bucket: BucketLike, name: str, path: str | os.PathLike, *,
                       byte_range: tuple[int, int | None] | None = None,
                       progress: Progress | None = None,
                       on_info: Callable[[ObjectInfo], Any] | None = None) -> ObjectInfo:
        """Save an object to ``path`` atomically: temp file next to it, fsync, rename."""
        dest = Path(path)
        if dest.is_dir():
            raise IsADirectoryError(f"{dest} is a directory")
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.aisync-part"
        fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        f = os.fdopen(fd, "wb")
        try:
            try:
                info = await self.download_to(bucket, name, f, byte_range=byte_range,
                                              progress=progress, on_info=on_info)
                await asyncio.to_thread(_flush_fsync, f)
            finally:
                await asyncio.to_thread(f.close)
            await asyncio.to_thread(os.replace, tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        await asyncio.to_thread(_fsync_dir, dest.parent)
        return info

    async def head_object(self, bucket: BucketLike, name: str) -> ObjectInfo:
        ref = as_bucket(bucket)
        url = self._url(self._object_path(ref, name), self._bucket_params(ref))
        resp = await self._open("HEAD", url, label=f"{ref}/{name}")
        resp.release()
        return ObjectInfo.from_headers(resp.headers, bucket=ref.name, provider=ref.provider,
                                       name=name)

    async def delete_object(self, bucket: BucketLike, name: str) -> None:
        ref = as_bucket(bucket)
        url = self._url(self._object_path(ref, name), self._bucket_params(ref))
        resp = await self._open("DELETE", url, label=f"{ref}/{name}")
        resp.release()


async def _error_from_response(resp: aiohttp.ClientResponse, method: str,
                               label: str) -> AisyncError:
    """The typed error for a non-2xx answer (JSON body, or the HEAD error-code header)."""
    code = resp.headers.get(ERROR_CODE_HEADER, "")
    body: dict[str, object] = {}
    if method != "HEAD":
        try:
            raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            raw = b""
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                body = parsed
            else:
                text = raw[:200].decode("utf-8", "replace").strip()
                body = {"message": f"{label}: HTTP {resp.status} {resp.reason}: {text}"}
    if code and "code" not in body:
        body["code"] = code
    if "message" not in body:
        what = _HEAD_MESSAGES.get(code) or code or f"HTTP {resp.status} {resp.reason or ''}"
        body["message"] = f"{label}: {what.strip()}"
    return error_from_dict(resp.status, body)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        if err.errno and err.errno > 0:
            return os.strerror(err.errno)
        return err.strerror or str(err) or str(exc)
    return str(exc) or type(exc).__name__


def _flush_fsync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
