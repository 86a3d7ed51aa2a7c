"""``gs://``: Google Cloud Storage (and fake-gcs-server) via google-cloud-storage.

Owns: one ``google.cloud.storage.Client`` per backend (used from the backend's thread pool), the
translation of GCS object resources into :class:`VersionToken` records, and the one error table.

* **Version token**: ``size``; ``etag``; ``version_id`` is the *generation* (a string), which GCS
  renews on every write of the object data; ``last_modified`` is ``updated`` (epoch seconds);
  ``md5`` and ``crc32c`` are the base64 ``md5Hash`` / ``crc32c`` in hex (composite objects have
  no MD5). Listings carry the same fields.
* **Reads** (``open``) first read the object's metadata (so the version is known before a byte is
  read), then fetch the bytes in ranged requests of ``read_chunk`` bytes, each addressed to that
  very generation *and* conditioned with ``ifGenerationMatch``: an overwrite between two chunks
  fails the next chunk (412, or 404 once that generation is gone) and is reported as
  ``PreconditionFailed``, never as a mix. ``if_version`` is checked against the metadata at open
  (``ifGenerationMatch`` on the metadata request too). Bytes are fetched raw (no decompressive
  transcoding), so they always add up to ``size``.
* **Writes** (``put``) upload the file (multipart below 8 MiB, resumable above; retried by the
  SDK within ``retry_deadline``); the token comes from the upload's answer. ``put`` also accepts
  ``if_match`` (a token whose generation must still be current: ``ifGenerationMatch``).
* **Copies** use the rewrite API (loops until done, so large and cross-class copies work too),
  pinned to the source generation measured first.
* **Listing** uses ``startOffset`` (inclusive) with the continuation token, which is the last name
  returned: names equal to it are dropped. GCS lists in UTF-8 byte order.
* **Errors**: one table, :data:`ERRORS`. GCS's 404 says "bucket does not exist" for a missing
  bucket; servers that do not (fake-gcs-server) are disambiguated with a bucket lookup.

Credentials: an explicit ``credentials`` object, a credentials file or inline JSON, or
``anonymous``; otherwise the SDK's usual environment (``STORAGE_EMULATOR_HOST`` means anonymous
access to that endpoint; ``GOOGLE_APPLICATION_CREDENTIALS`` / application-default credentials).

Deviations seen on fake-gcs-server (the test emulator): it ignores ``ifGenerationMatch`` on
reads, deletes and copies (the generation in the read URL still pins reads: an overwritten
generation is 404), and its ``etag`` is the MD5, so it does not change on a same-content
overwrite (the generation does). In a *versioned* bucket on fake-gcs-server a stream that started
before an overwrite keeps reading the old generation's bytes instead of failing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import google.auth.exceptions as auth_exc
import requests.exceptions
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from requests.adapters import HTTPAdapter

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

SCOPES = ("https://www.googleapis.com/auth/devstorage.full_control",)


# -- the error table --

def _is(*classes: type[BaseException]):
    return lambda e: isinstance(e, classes)


def _bucket_missing(exc: BaseException) -> bool:
    return isinstance(exc, gexc.NotFound) and "bucket does not exist" in str(exc).lower()


def _retry_error(exc: BaseException) -> BackendError:
    cause = exc.cause if isinstance(exc, gexc.RetryError) else None
    return Throttled() if isinstance(cause, gexc.TooManyRequests) else BackendUnavailable()


#: SDK exception -> aisync error; the first matching row wins (see ``base.translate``).
ERRORS: ErrorTable = [
    (_bucket_missing, lambda e: BucketNotFound()),
    (_is(gexc.NotFound), lambda e: ObjectNotFound()),
    (_is(gexc.PreconditionFailed, gexc.NotModified), lambda e: PreconditionFailed()),
    (_is(gexc.RequestRangeNotSatisfiable), lambda e: InvalidRange()),
    (_is(gexc.Unauthorized, gexc.Forbidden, auth_exc.RefreshError,
         auth_exc.DefaultCredentialsError), lambda e: AccessDenied()),
    (_is(gexc.TooManyRequests), lambda e: Throttled()),
    (_is(gexc.ServerError), lambda e: BackendUnavailable()),  # 500/502/503/504
    (_is(gexc.RetryError), _retry_error),  # the SDK gave up retrying something transient
    (_is(requests.exceptions.ConnectionError, requests.exceptions.Timeout,
         requests.exceptions.ChunkedEncodingError, auth_exc.TransportError, ConnectionError,
         TimeoutError, DataCorruption, InvalidResponse), lambda e: BackendUnavailable()),
]


# -- profile settings --

class GcsSettings(BaseModel):
    """A ``gs`` profile's settings (everything but ``provider``). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str | None = None            # default: STORAGE_EMULATOR_HOST, else Google's
    project: str | None = None
    credentials_file: str | None = None    # default: GOOGLE_APPLICATION_CREDENTIALS / ADC
    credentials_json: SecretStr | None = None  # a credentials file's content, inline
    anonymous: bool = False
    timeout: float = Field(60.0, gt=0)
    retry_deadline: float = Field(30.0, ge=0)
    read_chunk: int = Field(4 * CHUNK, ge=64 * 1024, le=256 * CHUNK)
    max_threads: int = Field(16, ge=1, le=1024)

    @model_validator(mode="after")
    def _one_credential_source(self) -> GcsSettings:
        given = [k for k in ("credentials_file", "credentials_json") if getattr(self, k)]
        if self.anonymous:
            given.append("anonymous")
        if len(given) > 1:
            raise ValueError(f"give at most one of credentials_file, credentials_json, "
                             f"anonymous (got {', '.join(given)})")
        return self


def _describe(exc: ValidationError) -> str:
    # never echo the input: it may be a secret given under the wrong key or type
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                     for err in exc.errors(include_input=False, include_url=False))


# -- helpers --

def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _load_credentials(info: Any) -> tuple[Credentials, str | None]:
    """Credentials from a credentials file's content: the two kinds a profile may name (other
    kinds work through ``GOOGLE_APPLICATION_CREDENTIALS``, i.e. application-default)."""
    kind = info.get("type") if isinstance(info, Mapping) else None
    if kind == "service_account":
        creds = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        return creds, info.get("project_id")
    if kind == "authorized_user":
        creds = user_credentials.Credentials.from_authorized_user_info(info, scopes=SCOPES)
        return creds, info.get("quota_project_id")
    raise ConfigError(f"gs: unsupported credentials type {str(kind)[:40]!r} (a profile takes "
                      f"service_account or authorized_user; other kinds work through "
                      f"GOOGLE_APPLICATION_CREDENTIALS)")


def _same_version(wanted: VersionToken, current: VersionToken) -> bool:
    if wanted.version_id and current.version_id:
        return wanted.version_id == current.version_id
    return wanted.etag == current.etag and wanted.size == current.size


def _generation(token: VersionToken, what: str) -> int:
    try:
        return int(token.version_id or "")
    except ValueError:
        raise InvalidArgument(f"{what}: the token has no GCS generation") from None


class GcsBackend(ThreadedBackend):
    provider = "gs"
    capabilities = Capabilities(versioned=True, conditional_get=True, conditional_put=True,
                                server_side_copy=True, checksums=frozenset({"md5", "crc32c"}),
                                max_page=1000)
    ERRORS = ERRORS

    def __init__(self, *, project: str | None = None, endpoint: str | None = None,
                 credentials: Credentials | None = None, credentials_file: str | None = None,
                 credentials_info: Mapping[str, Any] | None = None, anonymous: bool = False,
                 timeout: float = 60.0, retry_deadline: float = 30.0,
                 read_chunk: int = 4 * CHUNK, max_threads: int = 16) -> None:
        if sum(x is not None for x in (credentials, credentials_file, credentials_info)) \
                + bool(anonymous) > 1:
            raise ConfigError("gs: give at most one of credentials, credentials_file, "
                              "credentials_info, anonymous")
        super().__init__(max_threads)
        self.endpoint = endpoint
        self.timeout = timeout
        self.read_chunk = read_chunk
        self._retry: Retry = DEFAULT_RETRY.with_timeout(retry_deadline)
        try:
            if credentials_file is not None:
                with open(credentials_file, encoding="utf-8") as f:
                    credentials, found = _load_credentials(json.load(f))
                project = project or found
            elif credentials_info is not None:
                credentials, found = _load_credentials(credentials_info)
                project = project or found
            elif anonymous:
                credentials = AnonymousCredentials()
            kwargs: dict[str, Any] = {"credentials": credentials}
            if project is not None or isinstance(credentials, AnonymousCredentials):
                kwargs["project"] = project  # None = no project (skips the ADC project lookup)
            if endpoint:
                kwargs["client_options"] = {"api_endpoint": endpoint}
            self.client = storage.Client(**kwargs)
            # one pooled connection per thread (requests keeps 10 per host and warns beyond)
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max_threads)
            for scheme in ("https://", "http://"):
                self.client._http.mount(scheme, adapter)
        except Exception as exc:
            self._pool.shutdown(wait=False)
            if isinstance(exc, ConfigError):
                raise
            # credentials are secret: name the failure, never quote what was parsed
            detail = type(exc).__name__
            if isinstance(exc, OSError) and credentials_file is not None:
                detail = f"cannot read {credentials_file}: {exc.strerror or detail}"
            elif isinstance(exc, auth_exc.DefaultCredentialsError) and credentials is None:
                detail = f"no usable application-default credentials: {str(exc)[:300]}"
            raise ConfigError(f"gs: cannot set up the client ({detail})") from None

    @classmethod
    def from_profile(cls, settings: Mapping[str, Any]) -> GcsBackend:
        """``{"project": "p", "credentials_file": "/etc/aisync/sa.json"}``, or
        ``{"endpoint": "http://127.0.0.1:4443", "anonymous": true}`` (see :class:`GcsSettings`)."""
        try:
            parsed = GcsSettings.model_validate(dict(settings))
        except ValidationError as exc:
            raise ConfigError(f"invalid gs profile: {_describe(exc)}") from None
        info = None
        if parsed.credentials_json is not None:
            try:
                info = json.loads(parsed.credentials_json.get_secret_value())
            except ValueError:
                info = None
            if not isinstance(info, dict):
                raise ConfigError("invalid gs profile: credentials_json is not a JSON object")
        return cls(project=parsed.project, endpoint=parsed.endpoint,
                   credentials_file=parsed.credentials_file, credentials_info=info,
                   anonymous=parsed.anonymous, timeout=parsed.timeout,
                   retry_deadline=parsed.retry_deadline, read_chunk=parsed.read_chunk,
                   max_threads=parsed.max_threads)

    def __repr__(self) -> str:
        return f"GcsBackend(endpoint={self.endpoint!r}, project={self.client.project!r})"

    async def close(self) -> None:
        await super().close()
        self.client.close()

    # -- tokens --
    @staticmethod
    def token(blob: storage.Blob) -> VersionToken:
        return VersionToken(size=int(blob.size or 0), etag=blob.etag,
                            version_id=str(blob.generation) if blob.generation else None,
                            last_modified=_epoch(blob.updated), md5=b64_to_hex(blob.md5_hash),
                            crc32c=b64_to_hex(blob.crc32c))

    # -- blocking pieces (run in the pool through ``call``) --
    def _opts(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "retry": self._retry}

    def _check_bucket(self, bucket: str, exc: BaseException) -> None:
        """Raise BucketNotFound when ``bucket`` is missing (a 404 did not say which)."""
        try:
            exists = self.client.bucket(bucket).exists(**self._opts())
        except Exception:  # noqa: BLE001 (the probe only refines the original 404)
            return
        if not exists:
            raise BucketNotFound(f"gs://{bucket}: no such bucket") from exc

    def _object_404(self, bucket: str, name: str,
                    exc: gexc.NotFound) -> BucketNotFound | ObjectNotFound:
        if _bucket_missing(exc):
            return BucketNotFound(f"gs://{bucket}: no such bucket")
        self._check_bucket(bucket, exc)
        return ObjectNotFound(f"gs://{bucket}/{name}: no such object")

    def _meta(self, bucket: str, name: str, generation: int | None = None) -> storage.Blob:
        blob = self.client.bucket(bucket).blob(name)
        try:
            blob.reload(if_generation_match=generation, **self._opts())
        except gexc.NotFound as exc:
            raise self._object_404(bucket, name, exc) from exc
        return blob

    def _chunks(self, bucket: str, name: str, generation: int, first: int,
                last: int) -> Iterator[bytes]:
        pinned = self.client.bucket(bucket).blob(name, generation=generation)
        offset = first
        while offset <= last:
            end = min(last, offset + self.read_chunk - 1)
            try:
                data = pinned.download_as_bytes(start=offset, end=end, raw_download=True,
                                                checksum=None, if_generation_match=generation,
                                                **self._opts())
            except (gexc.NotFound, gexc.PreconditionFailed, gexc.RequestRangeNotSatisfiable) \
                    as exc:
                raise PreconditionFailed(f"gs://{bucket}/{name} changed while being read "
                                         f"(generation {generation} is gone)") from exc
            if len(data) != end - offset + 1:
                raise PreconditionFailed(f"gs://{bucket}/{name}: short read at {offset} "
                                         f"({len(data)} of {end - offset + 1} bytes)")
            offset = end + 1
            yield data

    # -- contract --
    async def head(self, bucket: str, name: str) -> VersionToken:
        return self.token(await self.call(self._meta, bucket, name,
                                          what=f"head gs://{bucket}/{name}"))

    async def open(self, bucket: str, name: str, *, byte_range: tuple[int, int] | None = None,
                   if_version: VersionToken | None = None) -> ObjectStream:
        what = f"get gs://{bucket}/{name}"
        if byte_range is not None and (byte_range[0] < 0 or byte_range[1] < byte_range[0]):
            raise InvalidRange(f"{what}: bad byte range {byte_range[0]}-{byte_range[1]}")
        pin = None
        if if_version is not None and if_version.version_id:
            pin = _generation(if_version, what)

        def _open() -> VersionToken:
            try:
                version = self.token(self._meta(bucket, name, pin))
            except gexc.PreconditionFailed as exc:
                raise PreconditionFailed(f"gs://{bucket}/{name} changed since it was "
                                         f"compared") from exc
            if if_version is not None and not _same_version(if_version, version):
                raise PreconditionFailed(f"gs://{bucket}/{name} changed since it was compared")
            return version

        version = await self.call(_open, what=what)
        first, last = 0, version.size - 1
        if byte_range is not None:
            if byte_range[0] >= version.size:
                raise InvalidRange(f"{what}: range starts at {byte_range[0]}, the object has "
                                   f"{version.size} bytes")
            first, last = byte_range[0], min(byte_range[1], version.size - 1)
        chunks = self._chunks(bucket, name, int(version.version_id or 0), first, last)
        return self.stream_blocking(version, chunks, chunks.close, what)

    async def put(self, bucket: str, name: str, path: Path, *,
                  content_type: str | None = None,
                  if_match: VersionToken | None = None) -> VersionToken:
        """Upload ``path``; with ``if_match``, only while that generation is still current."""
        what = f"put gs://{bucket}/{name}"
        generation = _generation(if_match, what) if if_match is not None else None

        def _put() -> storage.Blob:
            blob = self.client.bucket(bucket).blob(name)
            try:
                blob.upload_from_filename(os.fspath(path), content_type=content_type,
                                          if_generation_match=generation, **self._opts())
            except gexc.NotFound as exc:
                raise BucketNotFound(f"gs://{bucket}: no such bucket") from exc
            return blob

        return self.token(await self.call(_put, what=what))

    async def delete(self, bucket: str, name: str) -> None:
        def _delete() -> None:
            try:
                self.client.bucket(bucket).blob(name).delete(**self._opts())
            except gexc.NotFound as exc:
                raise self._object_404(bucket, name, exc) from exc

        await self.call(_delete, what=f"delete gs://{bucket}/{name}")

    async def copy(self, bucket: str, src: str, dst: str) -> VersionToken:
        def _copy() -> storage.Blob:
            source = self._meta(bucket, src)
            pinned = self.client.bucket(bucket).blob(src, generation=source.generation)
            target = self.client.bucket(bucket).blob(dst)
            rewrite_token = None
            while True:
                rewrite_token, _, _ = target.rewrite(
                    pinned, token=rewrite_token, if_source_generation_match=source.generation,
                    **self._opts())
                if rewrite_token is None:
                    return target

        return self.token(await self.call(_copy, what=f"copy gs://{bucket}/{src} to {dst}"))

    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000) -> ListPage:
        limit = max(1, min(limit, self.capabilities.max_page))

        def _list() -> ListPage:
            # startOffset is inclusive: ask for one more than needed, drop the token itself
            blobs = self.client.list_blobs(bucket, prefix=prefix or None, start_offset=token,
                                           max_results=limit + 2, **self._opts())
            entries: list[ListEntry] = []
            try:
                for blob in blobs:
                    if token is not None and blob.name <= token:
                        continue
                    entries.append(ListEntry(blob.name, self.token(blob)))
                    if len(entries) > limit:
                        break
            except gexc.NotFound as exc:  # a listing 404 can only be the bucket
                raise BucketNotFound(f"gs://{bucket}: no such bucket") from exc
            more = len(entries) > limit
            entries = entries[:limit]
            return ListPage(entries, entries[-1].name if more else None)

        return await self.call(_list, what=f"list gs://{bucket}")

