"""``oci://``: Oracle Cloud Infrastructure Object Storage, through the ``oci`` Python SDK.

Owns: one ``ObjectStorageClient`` per backend (used from the backend's thread pool), the
translation of OCI answers into :class:`VersionToken` records, multipart uploads, and the one
error table :data:`ERRORS`.

* **Credentials**: an oci config dict (``user``, ``fingerprint``, ``tenancy``, ``region``,
  ``key_file`` or ``key_content``, ``pass_phrase``), or a config file and profile read the SDK's
  usual way (``~/.oci/config`` or ``OCI_CONFIG_FILE``, profile ``DEFAULT``); keys given inline
  override the file's. In profiles the key material and pass phrase are ``SecretStr``: never
  logged, never in a ``repr`` or an error message. The namespace comes from the profile or is
  looked up once (GetNamespace) on first use.
* **No hidden retries**: the SDK's retry strategy and its process-wide circuit breaker are turned
  off (callers retry transient errors with backoff; a shared breaker would fail unrelated
  backends); connect/read timeouts are bounded.
* **Version token**: ``size``; ``etag`` (OCI makes a new one on every write, so a same-size
  overwrite is a new version); ``version_id`` from ``version-id`` when the service sends one
  (buckets with versioning on); ``last_modified`` from ``last-modified`` (whole seconds); ``md5``
  from ``opc-content-md5`` (base64 -> hex). A multipart object has only a multipart MD5
  (``opc-multipart-md5``, ``<base64>-<parts>``), which is not the MD5 of its bytes: its ``md5`` is
  None. Listing entries carry size, etag, md5 (same rule) and ``last_modified`` floored to whole
  seconds so they compare equal with ``head``; ListObjects returns no version ids.
* **Reads** stream the raw body (no Content-Encoding decoding: the stored bytes, byte-exact) in
  1 MiB chunks through ``stream_blocking``; the token comes from the response headers (the total
  size from ``content-range`` for a range). A pinned read sends ``if-match: <etag>``: the service
  answers 412 -> ``PreconditionFailed`` once the object changed (the response is checked again).
* **Writes**: PutObject with ``Content-Length`` and ``Content-MD5`` (the service verifies the
  bytes) up to ``multipart_threshold``; above it our own multipart upload (create, parts read
  straight from the file one after another, each with its ``Content-MD5``, commit; aborted on any
  failure). The token is built from the write's own answer.
* **Listing**: ListObjects with ``fields=name,size,etag,md5,timeModified``; continuation tokens
  are plain names (the last name of the page). OCI's ``start`` is inclusive, so the token is sent
  as ``start`` and dropped from the page.
* **Errors**: one table, :data:`ERRORS` (412 -> ``PreconditionFailed``, 401/403 ->
  ``AccessDenied``, 429 -> ``Throttled``, 5xx and connection errors -> ``BackendUnavailable``).
  A HEAD answers 404 without a body, and OCI answers ``NotAuthorizedOrNotFound`` both for missing
  and for forbidden resources: such 404s on object calls are told apart by a HEAD on the bucket
  (``BucketNotFound`` if that 404s too, else ``ObjectNotFound`` for reads and deletes and
  ``AccessDenied`` for writes).
* **No server-side copy**: OCI's CopyObject is asynchronous (a work request), so
  ``server_side_copy`` is False.

Tested against ``tests/backends/oci_server.py``, a local HTTP server speaking the OCI REST calls
used here with OCI's semantics, because no usable OCI Object Storage emulator exists (the one
public toy returns stale bytes after an overwrite). It does not verify request signatures.

``conditional_put`` is True because OCI enforces ``if-match`` on PutObject; ``put`` itself
sends no precondition (the contract has none).

Known deviations: a ``byte_range`` starting at or past the end of the object (or any range of an
empty object) is OCI's 416 -> ``InvalidRange``; listings have no ``version_id``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hashlib
import math
import os
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import circuitbreaker
import oci
import oci.base_client
import urllib3.exceptions
from oci._vendor.requests import exceptions as requests_exceptions
from oci._vendor.requests.adapters import HTTPAdapter
from oci.circuit_breaker import NoCircuitBreakerStrategy
from oci.exceptions import ClientError, ServiceError
from oci.object_storage import ObjectStorageClient
from oci.object_storage.models import (
    CommitMultipartUploadDetails,
    CommitMultipartUploadPartDetails,
    CreateMultipartUploadDetails,
)
from oci.retry import NoneRetryStrategy
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aisync.backends.base import (
    CHUNK,
    Capabilities,
    ErrorTable,
    ListEntry,
    ListPage,
    ObjectStream,
    ThreadedBackend,
    VersionToken,
    b64_to_hex,
)
from aisync.util.errors import (
    AccessDenied,
    AisyncError,
    BackendError,
    BackendUnavailable,
    BucketNotFound,
    ConfigError,
    InvalidObjectName,
    InvalidRange,
    ObjectNotFound,
    PreconditionFailed,
    Throttled,
)

MiB = 1 << 20
MAX_PARTS = 10_000
MAX_PAGE = 1000
LIST_FIELDS = "name,size,etag,md5,timeModified"
DEFAULT_TYPE = "application/octet-stream"
_BUCKET_OPS = frozenset({"list_objects", "get_bucket", "head_bucket", "create_multipart_upload"})
_OBJECT_OPS = frozenset({"get_object", "head_object", "delete_object"})
_CREDENTIAL_KEYS = ("user", "fingerprint", "tenancy", "region", "key_file", "key_content",
                    "pass_phrase")


# -- the error table --

def _service(statuses: frozenset[int] = frozenset(), codes: frozenset[str] = frozenset(),
             min_status: int | None = None):
    def matches(exc: BaseException) -> bool:
        if not isinstance(exc, ServiceError):
            return False
        return (exc.status in statuses or exc.code in codes
                or (min_status is not None and exc.status >= min_status))
    return matches


def _ambiguous_not_found(exc: BaseException) -> AisyncError:
    """A 404 that does not say what is missing: decide by what the call addressed."""
    operation = getattr(exc, "operation_name", None)
    if operation in _BUCKET_OPS:
        return BucketNotFound()
    if operation in _OBJECT_OPS:
        return ObjectNotFound()
    return BackendError()


#: SDK exception -> aisync error; the first matching row wins (see ``base.translate``).
#: Factories leave the message empty so ``translate`` fills in what was being done.
ERRORS: ErrorTable = [
    (_service(frozenset({412})), lambda e: PreconditionFailed()),
    (lambda e: isinstance(e, ServiceError) and e.status == 404
     and e.code in ("BucketNotFound", "NamespaceNotFound"), lambda e: BucketNotFound()),
    (lambda e: isinstance(e, ServiceError) and e.status == 404 and e.code == "ObjectNotFound",
     lambda e: ObjectNotFound()),
    # NotAuthorizedOrNotFound, UploadNotFound, a HEAD's body-less 404, ...
    (_service(frozenset({404})), _ambiguous_not_found),
    (_service(frozenset({401, 403}), frozenset({"NotAuthenticated", "NotAuthorized"})),
     lambda e: AccessDenied()),
    (_service(frozenset({429}), frozenset({"TooManyRequests"})), lambda e: Throttled()),
    (_service(frozenset({416})), lambda e: InvalidRange()),
    (_service(codes=frozenset({"InvalidObjectName"})), lambda e: InvalidObjectName()),
    # the bytes were damaged on the way (the service refused them) or a concurrent write won a
    # race: both are worth retrying
    (_service(codes=frozenset({"UnmatchedContentMD5", "ConcurrentObjectUpdate"})),
     lambda e: BackendUnavailable()),
    (_service(min_status=500), lambda e: BackendUnavailable()),
    # oci.exceptions.RequestException / ConnectTimeout derive from the vendored requests ones
    (lambda e: isinstance(e, (requests_exceptions.RequestException, urllib3.exceptions.HTTPError,
                              circuitbreaker.CircuitBreakerError, ConnectionError,
                              TimeoutError)),
     lambda e: BackendUnavailable()),
    (lambda e: isinstance(e, ClientError), lambda e: ConfigError()),
]


# -- profile settings --

class OciSettings(BaseModel):
    """A profile's settings (everything but ``provider``). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_file: str | None = None         # default: the SDK's (~/.oci/config, OCI_CONFIG_FILE)
    profile: str = "DEFAULT"
    user: str | None = None
    fingerprint: str | None = None
    tenancy: str | None = None
    region: str | None = None
    key_file: str | None = None
    key_content: SecretStr | None = None
    pass_phrase: SecretStr | None = None
    service_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("service_endpoint", "endpoint"))
    namespace: str | None = None
    max_threads: int = Field(16, ge=1, le=1024)
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    multipart_threshold: int = Field(128 * MiB, ge=MiB)
    part_size: int = Field(128 * MiB, ge=MiB, le=50 * 1024 * MiB)

    def config(self) -> dict[str, Any]:
        """The oci config dict: the file's profile (unless only inline keys are given), with
        the inline keys on top."""
        inline = {k: getattr(self, k) for k in _CREDENTIAL_KEYS if getattr(self, k) is not None}
        inline = {k: v.get_secret_value() if isinstance(v, SecretStr) else v
                  for k, v in inline.items()}
        if inline and self.config_file is None and {"user", "fingerprint", "tenancy"} <= set(
                inline):
            return {**oci.config.DEFAULT_CONFIG, **inline}
        return {**load_config_file(self.config_file, self.profile), **inline}


def load_config_file(path: str | None = None, profile: str = "DEFAULT") -> dict[str, Any]:
    try:
        return oci.config.from_file(path or oci.config.DEFAULT_LOCATION, profile)
    except (ClientError, ValueError, OSError) as exc:
        raise ConfigError(f"oci: cannot read config file profile {profile!r}: "
                          f"{type(exc).__name__}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    # never echo the input: it may be key material given under the wrong key or type
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# -- helpers --

def _md5(value: str | None) -> str | None:
    if not value or "-" in value:  # a multipart MD5 "<base64>-<parts>" is not the content's
        return None
    try:
        return b64_to_hex(value)
    except (binascii.Error, ValueError):
        return None


def _http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _token(headers: Mapping[str, str], size: int | None = None) -> VersionToken:
    if size is None:
        size = _total_size(headers)
    multipart = bool(headers.get("opc-multipart-md5"))
    return VersionToken(size=size, etag=(headers.get("etag") or "").strip('"') or None,
                        version_id=headers.get("version-id") or None,
                        last_modified=_http_time(headers.get("last-modified")),
                        md5=None if multipart else _md5(headers.get("opc-content-md5")))


def _total_size(headers: Mapping[str, str]) -> int:
    content_range = headers.get("content-range")  # "bytes 0-9/200"
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    return int(headers.get("content-length") or 0)


def _file_md5(path: Path, offset: int, length: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        f.seek(offset)
        while length > 0:
            data = f.read(min(CHUNK, length))
            if not data:
                raise BackendError(f"{path} shrank while being uploaded")
            digest.update(data)
            length -= len(data)
    return base64.b64encode(digest.digest()).decode()


class _FileSlice:
    """A read-only window ``[offset, offset+length)`` of an open file: one part's body."""

    def __init__(self, f: Any, offset: int, length: int) -> None:
        self._fd, self._start, self._length, self._pos = f.fileno(), offset, length, 0

    def __len__(self) -> int:
        return self._length - self._pos

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._pos
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        data = os.pread(self._fd, size, self._start + self._pos)
        self._pos += len(data)
        return data


# -- the provider --

class OciBackend(ThreadedBackend):
    provider = "oci"
    capabilities = Capabilities(versioned=True, conditional_get=True, conditional_put=True,
                                server_side_copy=False, checksums=frozenset({"md5"}),
                                max_page=MAX_PAGE)
    ERRORS = ERRORS

    def __init__(self, config: Mapping[str, Any] | None = None, *,
                 config_file: str | None = None, profile: str = "DEFAULT",
                 service_endpoint: str | None = None, namespace: str | None = None,
                 max_threads: int = 16, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, multipart_threshold: int = 128 * MiB,
                 part_size: int = 128 * MiB) -> None:
        if part_size < MiB or multipart_threshold < MiB:
            raise ConfigError("oci: part_size and multipart_threshold must be at least 1 MiB")
        cfg = dict(config) if config is not None else load_config_file(config_file, profile)
        cfg = {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in cfg.items()}
        if service_endpoint is not None:
            parsed = urllib.parse.urlsplit(service_endpoint)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ConfigError(f"oci: service_endpoint {service_endpoint!r} is not an "
                                  "http(s) URL")
        try:
            client = ObjectStorageClient(
                cfg, service_endpoint=service_endpoint, timeout=(connect_timeout, read_timeout),
                retry_strategy=NoneRetryStrategy(),
                circuit_breaker_strategy=NoCircuitBreakerStrategy())
        except (ClientError, ValueError, TypeError) as exc:  # bad or missing keys, bad endpoint
            raise ConfigError(f"oci: invalid configuration: {type(exc).__name__}: "
                              f"{_scrub(exc, cfg)}") from None
        super().__init__(max_threads)
        # one pooled connection per worker thread (the default pool keeps only 10)
        session = client.base_client.session
        https_adapter = getattr(oci.base_client, "OCIHTTPAdapter", None)  # newer SDKs only
        if https_adapter is not None:
            session.mount("https://", https_adapter(pool_maxsize=max_threads))
        session.mount("http://", HTTPAdapter(pool_maxsize=max_threads))
        self.client = client
        self.region = cfg.get("region")
        self.service_endpoint = client.base_client.endpoint
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._namespace = namespace
        self._ns_lock = threading.Lock()

    @classmethod
    def from_profile(cls, settings: Mapping[str, Any]) -> OciBackend:
        """``{"config_file": "~/.oci/config", "profile": "DEFAULT"}``, or the keys inline:
        ``{"user": "ocid1.user...", "fingerprint": "..", "tenancy": "ocid1.tenancy...",
        "region": "us-ashburn-1", "key_content": "-----BEGIN ...", "namespace": "..."}``,
        plus ``endpoint`` / ``service_endpoint`` and tuning (see :class:`OciSettings`)."""
        try:
            parsed = OciSettings.model_validate(dict(settings))
        except ValidationError as exc:
            raise ConfigError(f"invalid oci profile: {_describe(exc)}") from None
        return cls(parsed.config(), service_endpoint=parsed.service_endpoint,
                   namespace=parsed.namespace, max_threads=parsed.max_threads,
                   connect_timeout=parsed.connect_timeout, read_timeout=parsed.read_timeout,
                   multipart_threshold=parsed.multipart_threshold, part_size=parsed.part_size)

    def __repr__(self) -> str:
        return (f"OciBackend(service_endpoint={self.service_endpoint!r}, "
                f"region={self.region!r}, namespace={self._namespace!r})")

    async def close(self) -> None:
        await super().close()
        self.client.base_client.session.close()

    # -- blocking helpers (run in the pool) --
    def namespace(self) -> str:
        if self._namespace is None:
            with self._ns_lock:
                if self._namespace is None:
                    self._namespace = self.client.get_namespace().data
        return self._namespace

    def _not_found(self, bucket: str, exc: ServiceError, write: bool) -> AisyncError:
        """The precise error for a 404 on an object call (a HEAD's has no code at all)."""
        if exc.code in ("BucketNotFound", "NamespaceNotFound"):
            err: AisyncError = BucketNotFound(f"oci://{bucket}: no such bucket")
        elif exc.code == "ObjectNotFound" and not write:
            err = ObjectNotFound(f"oci://{bucket}: no such object")
        else:
            try:
                self.client.head_bucket(self.namespace(), bucket)
            except ServiceError as probe:
                if probe.status != 404:
                    raise
                err = BucketNotFound(f"oci://{bucket}: no such bucket (or not authorized)")
            else:
                err = (AccessDenied(f"oci://{bucket}: not authorized to write ({exc.code})")
                       if write else
                       ObjectNotFound(f"oci://{bucket}: no such object (or not authorized)"))
        err.__cause__ = exc
        return err

    def _object_call(self, bucket: str, fn: Any, *args: Any, write: bool = False,
                     **kwargs: Any) -> Any:
        try:
            return fn(self.namespace(), bucket, *args, **kwargs)
        except ServiceError as exc:
            if exc.status == 404 and exc.code != "UploadNotFound":
                raise self._not_found(bucket, exc, write) from exc
            raise

    # -- contract --
    async def head(self, bucket: str, name: str) -> VersionToken:
        def _head() -> VersionToken:
            return _token(self._object_call(bucket, self.client.head_object, name).headers)

        return await self.call(_head, what=f"head oci://{bucket}/{name}")

    async def open(self, bucket: str, name: str, *, byte_range: tuple[int, int] | None = None,
                   if_version: VersionToken | None = None) -> ObjectStream:
        what = f"get oci://{bucket}/{name}"
        kwargs: dict[str, str] = {}
        if byte_range is not None:
            kwargs["range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        if if_version is not None and if_version.etag:
            kwargs["if_match"] = if_version.etag

        def _open() -> tuple[Any, VersionToken]:
            response = self._object_call(bucket, self.client.get_object, name, **kwargs)
            version = _token(response.headers)
            if if_version is not None and _changed(if_version, version):
                response.data.close()
                raise PreconditionFailed(f"oci://{bucket}/{name} changed since it was compared")
            return response, version

        response, version = await self.call(_open, what=what)
        body = response.data
        expected = int(response.headers.get("content-length") or 0)

        def chunks() -> Iterator[bytes]:
            got = 0
            for data in body.raw.stream(CHUNK, decode_content=False):
                got += len(data)
                yield data
            if got != expected:
                raise BackendUnavailable(f"{what}: {got} of {expected} bytes arrived")

        return self.stream_blocking(version, chunks(), body.close, what)

    async def put(self, bucket: str, name: str, path: Path, *,
                  content_type: str | None = None) -> VersionToken:
        def _put() -> VersionToken:
            size = os.stat(path).st_size
            if size > self.multipart_threshold:
                return self._put_multipart(bucket, name, path, size, content_type)
            md5 = _file_md5(path, 0, size)
            with open(path, "rb") as f:
                response = self._object_call(bucket, self.client.put_object, name, f,
                                             write=True, content_length=size, content_md5=md5,
                                             content_type=content_type or DEFAULT_TYPE)
            return _token(response.headers, size)

        return await self.call(_put, what=f"put oci://{bucket}/{name}")

    def _put_multipart(self, bucket: str, name: str, path: Path, size: int,
                       content_type: str | None) -> VersionToken:
        part_size = max(self.part_size, math.ceil(size / MAX_PARTS))
        details = CreateMultipartUploadDetails(object=name,
                                               content_type=content_type or DEFAULT_TYPE)
        upload = self._object_call(bucket, self.client.create_multipart_upload, details,
                                   write=True).data
        try:
            parts = []
            with open(path, "rb") as f:
                for number, offset in enumerate(range(0, size, part_size), start=1):
                    length = min(part_size, size - offset)
                    response = self._object_call(
                        bucket, self.client.upload_part, name, upload.upload_id, number,
                        _FileSlice(f, offset, length), write=True, content_length=length,
                        content_md5=_file_md5(path, offset, length))
                    parts.append(CommitMultipartUploadPartDetails(
                        part_num=number, etag=response.headers["etag"]))
            response = self._object_call(
                bucket, self.client.commit_multipart_upload, name, upload.upload_id,
                CommitMultipartUploadDetails(parts_to_commit=parts), write=True)
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the original error matters
                self.client.abort_multipart_upload(self.namespace(), bucket, name,
                                                   upload.upload_id)
            raise
        return _token(response.headers, size)

    async def delete(self, bucket: str, name: str) -> None:
        await self.call(lambda: self._object_call(bucket, self.client.delete_object, name),
                        what=f"delete oci://{bucket}/{name}")

    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000) -> ListPage:
        limit = max(1, min(limit, MAX_PAGE))

        def _list() -> ListPage:
            kwargs: dict[str, Any] = {"fields": LIST_FIELDS,
                                      "limit": min(limit + (1 if token else 0), MAX_PAGE)}
            if prefix:
                kwargs["prefix"] = prefix
            if token:
                kwargs["start"] = token  # inclusive: the token itself is dropped below
            while True:
                listing = self.client.list_objects(self.namespace(), bucket, **kwargs).data
                entries = [_entry(o) for o in listing.objects or []
                           if token is None or o.name.encode() > token.encode()]
                if entries or not listing.next_start_with:
                    break
                # a page of only the token itself: the listing goes on (ending it here
                # would truncate it), unless the server does not move on
                if listing.next_start_with == kwargs.get("start"):
                    raise BackendError(f"list oci://{bucket}/{prefix}: the listing does not "
                                       f"advance past {token!r}", bucket=bucket)
                kwargs["start"] = listing.next_start_with
            more = bool(listing.next_start_with) or len(entries) > limit
            entries = entries[:limit]
            return ListPage(entries, entries[-1].name if more and entries else None)

        return await self.call(_list, what=f"list oci://{bucket}")


def _changed(wanted: VersionToken, got: VersionToken) -> bool:
    if wanted.etag and got.etag and wanted.etag != got.etag:
        return True
    return bool(wanted.version_id and got.version_id and wanted.version_id != got.version_id)


def _entry(summary: Any) -> ListEntry:
    modified = summary.time_modified or summary.time_created
    return ListEntry(summary.name, VersionToken(
        size=summary.size or 0, etag=summary.etag or None, md5=_md5(summary.md5),
        last_modified=float(math.floor(modified.timestamp()))
        if isinstance(modified, datetime) else None))


def _scrub(exc: BaseException, cfg: Mapping[str, Any]) -> str:
    """An SDK error message without any secret from the config in it."""
    text = str(exc)
    for key in ("key_content", "pass_phrase"):
        secret = cfg.get(key)
        if secret:
            text = text.replace(str(secret), "***")
    return text
