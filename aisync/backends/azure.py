"""``az://``: Azure Blob Storage (and Azurite) via azure-storage-blob; a bucket is a container.

Owns: one ``BlobServiceClient`` per backend (thread-safe, used from the backend's thread pool),
the translation of blob properties into :class:`VersionToken` records, and the one error table.

* **Version token**: ``size``; ``etag`` unquoted (``0x…``, renewed by every write, also a
  same-content one); ``version_id`` is the blob version id when the account has blob versioning
  on, else None; ``last_modified``; ``md5`` from Content-MD5 when the blob has one. The service
  computes it for single-shot uploads; for block uploads (files above ``max_single_put_size``)
  ``put`` computes the file's MD5 and stores it, so blobs written by aisync always carry one.
  ``Capabilities.versioned`` is False because only some accounts have versioning (Azurite none).
* **Reads** (``open``): one ``download_blob`` whose first answer (at most ``read_chunk`` bytes)
  gives the version before any byte is handed out; the SDK pins the following chunk requests
  with ``If-Match`` on that ETag. ``if_version`` pins the first request too (``If-Match`` on the
  token's ETag): a changed blob is 412 -> ``PreconditionFailed`` at open, or on the chunk after
  the change, never a mix. A range starting at or past the end is ``InvalidRange``.
* **Writes** (``put``) ``upload_blob(overwrite=True)`` from the open file (block upload with
  ``upload_concurrency`` parallel blocks above ``max_single_put_size``); the token comes from the
  answer. ``put`` also accepts ``if_match`` (``If-Match`` on the token's ETag).
* **Copies**: ``start_copy_from_url`` pinned to the source ETag; same-account copies complete
  synchronously (always on Azurite); a pending copy is polled until done (``copy_timeout``).
* **Listing**: continuation tokens are keys (the last name returned). Azure markers are opaque,
  so the marker that resumes after a page's last name is remembered in a bounded in-memory map;
  a token not in the map resumes with ``startFrom`` (inclusive; names up to the token are
  dropped), and where the service ignores ``startFrom`` (Azurite) by scanning from the prefix.
* **Errors**: one table, :data:`ERRORS`; a 404 names the container (``ContainerNotFound``) or the
  blob (``BlobNotFound``) in its error code, also on HEAD (``x-ms-error-code``).

Credentials: a connection string, or an account URL with a credential (account key, SAS token,
``{"account_name", "account_key"}``, or any azure-identity token credential), else the
``AZURE_STORAGE_CONNECTION_STRING`` environment variable.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ContentSettings, ExponentialRetry
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

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
    BackendError,
    BackendUnavailable,
    BucketNotFound,
    ConfigError,
    InvalidArgument,
    InvalidRange,
    ObjectNotFound,
    PreconditionFailed,
    Throttled,
)

ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
_CONTENT_RANGE = re.compile(r"^bytes \d+-\d+/(\d+)$")
_MARKERS_KEPT = 4096


# -- the error table --

def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "status_code", None) or 0) if isinstance(exc, HttpResponseError) else 0


def _http(codes: frozenset[str] = frozenset(), statuses: frozenset[int] = frozenset(),
          classes: tuple[type[BaseException], ...] = (), min_status: int | None = None):
    def matches(exc: BaseException) -> bool:
        if not isinstance(exc, HttpResponseError):
            return False
        status = _status(exc)
        return (isinstance(exc, classes) or _code(exc) in codes or status in statuses
                or (min_status is not None and status >= min_status))
    return matches


#: SDK exception -> aisync error; the first matching row wins (see ``base.translate``). Other
#: 409s (``ResourceExistsError``: leases, snapshots present) stay ``BackendError``.
ERRORS: ErrorTable = [
    (_http(frozenset({"ContainerNotFound", "ContainerBeingDeleted"})),
     lambda e: BucketNotFound()),
    (_http(frozenset({"BlobNotFound"}), frozenset({404}), (ResourceNotFoundError,)),
     lambda e: ObjectNotFound()),
    (_http(frozenset({"ConditionNotMet", "BlobAlreadyExists", "SourceConditionNotMet",
                      "TargetConditionNotMet"}), frozenset({412}), (ResourceModifiedError,)),
     lambda e: PreconditionFailed()),
    (_http(frozenset({"InvalidRange"}), frozenset({416})), lambda e: InvalidRange()),
    (_http(frozenset({"AuthenticationFailed", "AuthorizationFailure"}), frozenset({401, 403}),
           (ClientAuthenticationError,)), lambda e: AccessDenied()),
    (_http(frozenset({"ServerBusy"}), frozenset({429})), lambda e: Throttled()),
    (_http(min_status=500), lambda e: BackendUnavailable()),
    (lambda e: isinstance(e, (ServiceRequestError, ServiceResponseError, DecodeError,
                              ConnectionError, TimeoutError)),
     lambda e: BackendUnavailable()),
]


# -- profile settings --

class AzureSettings(BaseModel):
    """An ``az`` profile's settings (everything but ``provider``). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connection_string: SecretStr | None = None   # default: AZURE_STORAGE_CONNECTION_STRING
    account_url: str | None = None               # https://ACCOUNT.blob.core.windows.net
    account_name: str | None = None
    account_key: SecretStr | None = None
    sas_token: SecretStr | None = None
    connect_timeout: float = Field(10.0, gt=0)
    timeout: float = Field(60.0, gt=0)
    retries: int = Field(3, ge=0, le=20)
    read_chunk: int = Field(4 * CHUNK, ge=64 * 1024, le=256 * CHUNK)
    max_single_put_size: int = Field(64 * CHUNK, ge=CHUNK, le=5000 * CHUNK)
    block_size: int = Field(8 * CHUNK, ge=64 * 1024, le=4000 * CHUNK)
    upload_concurrency: int = Field(4, ge=1, le=64)
    copy_timeout: float = Field(600.0, gt=0)
    max_threads: int = Field(16, ge=1, le=1024)

    @model_validator(mode="after")
    def _consistent(self) -> AzureSettings:
        if self.connection_string is not None:
            extra = [k for k in ("account_url", "account_name", "account_key", "sas_token")
                     if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"connection_string excludes {', '.join(extra)}")
        if self.account_key is not None and self.sas_token is not None:
            raise ValueError("give account_key or sas_token, not both")
        if self.account_key is not None and not self.account_name:
            raise ValueError("account_key needs account_name")
        if (self.account_key is not None or self.sas_token is not None) \
                and not (self.account_url or self.account_name):
            raise ValueError("a credential needs account_url or account_name")
        return self


def _describe(exc: ValidationError) -> str:
    # never echo the input: it may be a secret given under the wrong key or type
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                     for err in exc.errors(include_input=False, include_url=False))


# -- helpers --

def _unquote(etag: str | None) -> str | None:
    return etag.strip('"') or None if etag else None


def _quote(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _md5(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex() or None
    if isinstance(value, str):
        return b64_to_hex(value)
    return None


def _secret(value: str | SecretStr | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _file_md5(f: Any) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    while data := f.read(CHUNK):
        digest.update(data)
    f.seek(0)
    return digest.digest()


class _PooledAdapter(HTTPAdapter):
    """Large socket blocks, as azure-core's own adapter, on a pool of the size we choose."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        pool_kwargs.setdefault("blocksize", 1 << 16)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


def _transport(pool: int, connect_timeout: float, read_timeout: float) -> RequestsTransport:
    """One pooled connection per thread (requests keeps 10 per host and warns beyond). Retries
    stay with the SDK's retry policy, as in azure-core's default transport."""
    session = requests.Session()
    adapter = _PooledAdapter(pool_connections=4, pool_maxsize=pool,
                             max_retries=Retry(total=False, redirect=False,
                                               raise_on_status=False))
    for scheme in ("https://", "http://"):
        session.mount(scheme, adapter)
    return RequestsTransport(session=session, session_owner=True,
                             connection_timeout=connect_timeout, read_timeout=read_timeout)


class AzureBackend(ThreadedBackend):
    provider = "az"
    capabilities = Capabilities(versioned=False, conditional_get=True, conditional_put=True,
                                server_side_copy=True, checksums=frozenset({"md5"}),
                                max_page=5000)
    ERRORS = ERRORS

    def __init__(self, *, account_url: str | None = None, credential: Any = None,
                 connection_string: str | SecretStr | None = None,
                 connect_timeout: float = 10.0, timeout: float = 60.0, retries: int = 3,
                 read_chunk: int = 4 * CHUNK, max_single_put_size: int = 64 * CHUNK,
                 block_size: int = 8 * CHUNK, upload_concurrency: int = 4,
                 copy_timeout: float = 600.0, max_threads: int = 16) -> None:
        connection_string = _secret(connection_string)
        if isinstance(credential, SecretStr):
            credential = credential.get_secret_value()
        if connection_string and account_url:
            raise ConfigError("az: give a connection string or an account URL, not both")
        if not connection_string and not account_url:
            connection_string = os.environ.get(ENV_CONNECTION_STRING)
            if not connection_string:
                raise ConfigError(f"az: no account_url or connection_string, and "
                                  f"{ENV_CONNECTION_STRING} is not set")
        super().__init__(max_threads)
        self.max_single_put_size = max_single_put_size
        self.upload_concurrency = upload_concurrency
        self.copy_timeout = copy_timeout
        options: dict[str, Any] = {
            "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=3,
                                             retry_total=retries, random_jitter_range=1),
            "max_single_get_size": read_chunk, "max_chunk_get_size": read_chunk,
            "max_single_put_size": max_single_put_size, "max_block_size": block_size,
            "transport": _transport(max_threads, connect_timeout, timeout),
        }
        try:
            if connection_string:
                self.client = BlobServiceClient.from_connection_string(
                    connection_string, credential=credential, **options)
            else:
                self.client = BlobServiceClient(account_url, credential=credential, **options)
        except (ValueError, TypeError) as exc:
            self._pool.shutdown(wait=False)
            # the connection string is secret: name the failure, never quote it
            raise ConfigError(f"az: cannot set up the client ({type(exc).__name__}); check "
                              f"the connection string or account URL") from None
        self.account_url = self.client.url.split("?", 1)[0]
        self._markers: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._markers_lock = threading.Lock()

    @classmethod
    def from_profile(cls, settings: Mapping[str, Any]) -> AzureBackend:
        """``{"account_name": "acct", "account_key": "..."}``, ``{"account_url": "https://...",
        "sas_token": "..."}`` or ``{"connection_string": "..."}`` (see :class:`AzureSettings`)."""
        try:
            p = AzureSettings.model_validate(dict(settings))
        except ValidationError as exc:
            raise ConfigError(f"invalid az profile: {_describe(exc)}") from None
        url = p.account_url
        if url is None and p.account_name:
            url = f"https://{p.account_name}.blob.core.windows.net"
        credential: Any = None
        if p.account_key is not None:
            credential = {"account_name": p.account_name,
                          "account_key": p.account_key.get_secret_value()}
        elif p.sas_token is not None:
            credential = p.sas_token.get_secret_value()
        return cls(account_url=url, credential=credential,
                   connection_string=p.connection_string, connect_timeout=p.connect_timeout,
                   timeout=p.timeout, retries=p.retries, read_chunk=p.read_chunk,
                   max_single_put_size=p.max_single_put_size, block_size=p.block_size,
                   upload_concurrency=p.upload_concurrency, copy_timeout=p.copy_timeout,
                   max_threads=p.max_threads)

    def __repr__(self) -> str:
        return f"AzureBackend(account_url={self.account_url!r})"

    async def close(self) -> None:
        await super().close()
        self.client.close()

    # -- tokens --
    @staticmethod
    def token(props: Any, size: int | None = None) -> VersionToken:
        return VersionToken(size=int(props.size if size is None else size),
                            etag=_unquote(props.etag), version_id=props.version_id or None,
                            last_modified=_epoch(props.last_modified),
                            md5=_md5(props.content_settings.content_md5))

    # -- blocking pieces (run in the pool through ``call``) --
    def _blob(self, bucket: str, name: str) -> Any:
        return self.client.get_blob_client(bucket, name)

    def _head(self, bucket: str, name: str) -> Any:
        try:
            return self._blob(bucket, name).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _code(exc) or self.client.get_container_client(bucket).exists():
                raise
            raise BucketNotFound(f"az://{bucket}: no such container") from exc

    def _remember(self, bucket: str, prefix: str, name: str, marker: str) -> None:
        with self._markers_lock:
            self._markers[(bucket, prefix, name)] = marker
            while len(self._markers) > _MARKERS_KEPT:
                self._markers.popitem(last=False)

    def _recall(self, bucket: str, prefix: str, name: str) -> str | None:
        with self._markers_lock:
            return self._markers.pop((bucket, prefix, name), None)

    # -- contract --
    async def head(self, bucket: str, name: str) -> VersionToken:
        return self.token(await self.call(self._head, bucket, name,
                                          what=f"head az://{bucket}/{name}"))

    async def open(self, bucket: str, name: str, *, byte_range: tuple[int, int] | None = None,
                   if_version: VersionToken | None = None) -> ObjectStream:
        what = f"get az://{bucket}/{name}"
        kwargs: dict[str, Any] = {"max_concurrency": 1}
        if byte_range is not None:
            first, last = byte_range
            if first < 0 or last < first:
                raise InvalidRange(f"{what}: bad byte range {first}-{last}")
            kwargs.update(offset=first, length=last - first + 1)
        if if_version is not None and if_version.etag:
            kwargs.update(etag=_quote(if_version.etag),
                          match_condition=MatchConditions.IfNotModified)

        def _open() -> tuple[Any, VersionToken]:
            downloader = self._blob(bucket, name).download_blob(**kwargs)
            props = downloader.properties
            found = _CONTENT_RANGE.match(props.content_range or "")
            version = self.token(props, size=int(found.group(1)) if found else None)
            if if_version is not None and (
                    (if_version.etag and if_version.etag != version.etag)
                    or (if_version.version_id and if_version.version_id != version.version_id)):
                raise PreconditionFailed(f"az://{bucket}/{name} changed since it was compared")
            if byte_range is not None and byte_range[0] >= version.size:
                raise InvalidRange(f"{what}: range starts at {byte_range[0]}, the blob has "
                                   f"{version.size} bytes")
            return downloader, version

        downloader, version = await self.call(_open, what=what)

        def chunks() -> Iterator[bytes]:
            try:
                yield from downloader.chunks()
            except (ResourceModifiedError, ResourceNotFoundError) as exc:
                raise PreconditionFailed(f"az://{bucket}/{name} changed while being "
                                         f"read") from exc

        stream = chunks()
        return self.stream_blocking(version, stream, stream.close, what)

    async def put(self, bucket: str, name: str, path: Path, *,
                  content_type: str | None = None,
                  if_match: VersionToken | None = None) -> VersionToken:
        """Upload ``path``; with ``if_match``, only while the blob still has that ETag."""
        conditions: dict[str, Any] = {}
        if if_match is not None:
            if not if_match.etag:
                raise InvalidArgument(f"put az://{bucket}/{name}: the token has no ETag")
            conditions = {"etag": _quote(if_match.etag),
                          "match_condition": MatchConditions.IfNotModified}

        def _put() -> VersionToken:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                settings = ContentSettings(content_type=content_type) if content_type else None
                md5 = None
                if size > self.max_single_put_size:  # block upload: the service keeps no MD5
                    md5 = _file_md5(f)
                    settings = settings or ContentSettings()
                    settings.content_md5 = bytearray(md5)
                answer = self._blob(bucket, name).upload_blob(
                    f, length=size, overwrite=True, content_settings=settings,
                    max_concurrency=self.upload_concurrency, **conditions)
            # a block upload's answer carries the MD5 of the block list, not of the blob
            return VersionToken(size=size, etag=_unquote(answer.get("etag")),
                                version_id=answer.get("version_id") or None,
                                last_modified=_epoch(answer.get("last_modified")),
                                md5=md5.hex() if md5 else _md5(answer.get("content_md5")))

        return await self.call(_put, what=f"put az://{bucket}/{name}")

    async def delete(self, bucket: str, name: str) -> None:
        await self.call(lambda: self._blob(bucket, name).delete_blob(),
                        what=f"delete az://{bucket}/{name}")

    async def copy(self, bucket: str, src: str, dst: str) -> VersionToken:
        def _copy() -> Any:
            source = self._blob(bucket, src)
            measured = self._head(bucket, src)
            target = self._blob(bucket, dst)
            answer = target.start_copy_from_url(
                source.url, source_etag=measured.etag,
                source_match_condition=MatchConditions.IfNotModified)
            status, delay = answer.get("copy_status"), 0.05
            deadline = time.monotonic() + self.copy_timeout
            while True:
                props = target.get_blob_properties()
                status = props.copy.status or status
                if status != "pending":
                    break
                if time.monotonic() > deadline:
                    target.abort_copy(props.copy.id)
                    raise BackendUnavailable(f"copy az://{bucket}/{src} to {dst}: still "
                                             f"pending after {self.copy_timeout:.0f}s")
                time.sleep(delay)  # polling the server's copy status, with backoff
                delay = min(delay * 2, 2.0)
            if status != "success":
                raise BackendError(f"copy az://{bucket}/{src} to {dst}: {status} "
                                   f"({props.copy.status_description})")
            return props

        return self.token(await self.call(_copy, what=f"copy az://{bucket}/{src} to {dst}"))

    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000) -> ListPage:
        limit = max(1, min(limit, self.capabilities.max_page))

        def _list() -> ListPage:
            container = self.client.get_container_client(bucket)
            marker = self._recall(bucket, prefix, token) if token is not None else None
            extra = {"start_from": token} if token is not None and marker is None else {}
            pages = container.list_blobs(name_starts_with=prefix or None,
                                         results_per_page=limit, **extra).by_page(marker)
            entries: list[ListEntry] = []
            more, resume = False, None
            while not more:
                page_marker = pages.continuation_token  # the marker that fetched this page
                page = next(pages, None)
                if page is None:
                    break
                for props in page:
                    if token is not None and props.name <= token:
                        continue
                    if len(entries) == limit:
                        more, resume = True, page_marker  # resume within this page
                        break
                    entries.append(ListEntry(props.name, self.token(props)))
                if not more and len(entries) == limit and pages.continuation_token:
                    more, resume = True, pages.continuation_token  # resume at the next page
            if more and entries and resume is not None:
                self._remember(bucket, prefix, entries[-1].name, resume)
            return ListPage(entries, entries[-1].name if more else None)

        return await self.call(_list, what=f"list az://{bucket}")
