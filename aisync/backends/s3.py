"""``s3://``: Amazon S3 and any S3-compatible endpoint (MinIO, Ceph RGW, moto, ...) via boto3.

Owns: one boto3 client per backend (thread-safe, one connection pool), the translation of S3
answers into :class:`VersionToken` records, multipart uploads and copies, and the one error table.

* **Version token**: ``size``; ``etag`` unquoted; ``version_id`` only when the bucket is versioned
  (S3's ``"null"`` version of an unversioned or suspended bucket is reported as None);
  ``last_modified`` from ``LastModified`` (epoch seconds). ``md5`` is the ETag only when that is a
  plain 32-hex digest and the object is not SSE-KMS / SSE-C encrypted: multipart ETags
  (``<hex>-<parts>``) are never MD5s. A profile may set ``etag_is_md5: false`` for endpoints whose
  plain ETags are not MD5s either. ``sha256`` / ``crc32c`` / ``crc32`` come from
  ``ChecksumSHA256`` / ``ChecksumCRC32C`` / ``ChecksumCRC32`` when the server sends full-object
  values (``head`` asks for them with ``ChecksumMode=ENABLED``); composite multipart checksums (``...-N``) are ignored. Listings carry
  no version ids (ListObjectsV2 has none).
* **Pinned reads** (``open(if_version=...)``): a GET of the *current* object with ``If-Match`` on the
  token's ETag (the server enforces it: 412 -> ``PreconditionFailed``); when the token also has a
  version id, the version id of that very response must match too. A GET by ``VersionId`` is
  deliberately not used: it would happily return the old version, while the contract asks for
  ``PreconditionFailed`` once the object is no longer the compared version.
* **Writes** (``put``, ``copy``) go through ``put_object`` / ``copy_object`` below the multipart
  thresholds and through our own multipart upload (parts read straight from the file, in parallel,
  aborted on failure) above them, so the ETag and version id of *our* write are known exactly. The
  returned token then comes from a HEAD pinned to that write (by version id, else ``If-Match``);
  if another writer got in between, the token is built from the write's own answer instead (no
  ``last_modified``), never from the other writer's object.
* **Listing** uses ListObjectsV2 with ``StartAfter``: continuation tokens are plain keys (the last
  key of the page), so they are resumable and provider-neutral.
* **Errors**: one table, :data:`ERRORS`. A HEAD answers 404 without a body, so a missing object and
  a missing bucket are told apart with a HEAD on the bucket.

Known deviations from the contract / from AWS S3:

* ``delete`` of a missing object must raise ``ObjectNotFound``, but S3 DeleteObject succeeds on
  missing keys: we HEAD first, so an object deleted by someone else between the two calls is
  reported as deleted by us (harmless), and in a versioned bucket a delete adds a delete marker.
* ``conditional_put`` is False: ``put`` has no precondition in the contract, and many
  S3-compatible servers ignore ``If-Match`` on PUT.
* A ``byte_range`` starting at or past the end of the object is S3's 416 -> ``InvalidRange``
  (also for any range of an empty object).
"""

from __future__ import annotations

import binascii
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.httpchecksum import StreamingChecksumBody
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aisync.backends.base import (
    CHUNK,
    Capabilities,
    ErrorTable,
    LevelPage,
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
    InvalidBucketName,
    InvalidRange,
    ObjectNotFound,
    PreconditionFailed,
    Throttled,
)

MiB = 1 << 20
GiB = 1 << 30
MIN_PART = 5 * MiB          # S3's smallest part (but the last)
MAX_PARTS = 10_000          # S3's largest part count
MAX_SINGLE_COPY = 5 * GiB   # CopyObject's limit; larger objects are copied part by part
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_RANGE = re.compile(r"^bytes \d+-\d+/(\d+)$")


# -- the error table --

def _error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _http_status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
        code = _error_code(exc)
        return int(code) if code.isdigit() else 0
    return 0


def _client_error(codes: frozenset[str] = frozenset(), statuses: frozenset[int] = frozenset(),
                  min_status: int | None = None) -> Callable[[BaseException], bool]:
    def matches(exc: BaseException) -> bool:
        if not isinstance(exc, ClientError):
            return False
        status = _http_status(exc)
        return (_error_code(exc) in codes or status in statuses
                or (min_status is not None and status >= min_status))
    return matches


_ACCESS_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                           "ExpiredToken", "InvalidToken", "AllAccessDisabled",
                           "AccountProblem", "InvalidSecurity"})
_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException",
                             "RequestLimitExceeded", "TooManyRequestsException",
                             "RequestThrottled", "ServiceUnavailable"})

#: SDK exception -> aisync error; the first matching row wins (see ``base.translate``).
#: Factories leave the message empty so ``translate`` fills in what was being done.
ERRORS: ErrorTable = [
    (_client_error(frozenset({"NoSuchBucket"})), lambda e: BucketNotFound()),
    (_client_error(frozenset({"NoSuchKey", "NoSuchVersion", "NotFound"}), frozenset({404})),
     lambda e: ObjectNotFound()),
    (_client_error(frozenset({"PreconditionFailed"}), frozenset({412})),
     lambda e: PreconditionFailed()),
    (_client_error(frozenset({"InvalidRange"}), frozenset({416})), lambda e: InvalidRange()),
    (_client_error(frozenset({"InvalidBucketName"})), lambda e: InvalidBucketName()),
    # an archived (Glacier) object answers 403 InvalidObjectState: permanent until restored
    (_client_error(frozenset({"InvalidObjectState"})),
     lambda e: BackendError("", hint="the object is archived; restore it first")),
    (_client_error(_ACCESS_CODES, frozenset({401, 403})), lambda e: AccessDenied()),
    (_client_error(_THROTTLE_CODES, frozenset({429, 503})), lambda e: Throttled()),
    (_client_error(min_status=500), lambda e: BackendUnavailable()),
    (lambda e: isinstance(e, (BotoConnectionError, HTTPClientError, IncompleteReadError,
                              FlexibleChecksumError)),
     lambda e: BackendUnavailable()),
    (lambda e: isinstance(e, (NoCredentialsError, PartialCredentialsError)),
     lambda e: AccessDenied()),
]


# -- profile settings --

class S3Settings(BaseModel):
    """A profile's settings (everything but ``provider``). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = Field(None, validation_alias=AliasChoices("endpoint_url",
                                                                         "endpoint"))
    region: str | None = None
    access_key: str | None = None
    secret_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile_name: str | None = None           # a profile of ~/.aws/config
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    max_pool_connections: int = Field(32, ge=1, le=1024)
    max_threads: int = Field(16, ge=1, le=1024)
    max_attempts: int = Field(3, ge=1, le=20)
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    multipart_threshold: int = Field(64 * MiB, ge=MIN_PART)
    part_size: int = Field(16 * MiB, ge=MIN_PART, le=5 * GiB)
    multipart_concurrency: int = Field(8, ge=1, le=256)
    etag_is_md5: bool = True
    checksum_calculation: Literal["when_supported", "when_required"] = "when_supported"
    verify: bool | str | None = None          # TLS: False, or a CA bundle path

    def backend_kwargs(self) -> dict[str, Any]:
        kwargs = self.model_dump()
        kwargs["secret_key"] = self.secret_key.get_secret_value() if self.secret_key else None
        kwargs["session_token"] = (self.session_token.get_secret_value()
                                   if self.session_token else None)
        return kwargs


def _describe(exc: ValidationError) -> str:
    # never echo the input: it may be a secret given under the wrong key or type
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# -- helpers --

def _unquote(etag: str | None) -> str | None:
    if not etag:
        return None
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"') or None


def _version_id(value: str | None) -> str | None:
    return None if not value or value == "null" else value


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _checksum(value: str | None) -> str | None:
    if not value or "-" in value:  # composite multipart checksum: not of the whole object
        return None
    try:
        return b64_to_hex(value)
    except (binascii.Error, ValueError):
        return None


class _FileSlice:
    """A seekable, read-only window ``[offset, offset+length)`` of a file: one part's body,
    read straight from disk (botocore may rewind it to retry)."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._start, self._length, self._pos = offset, length, 0

    def __len__(self) -> int:
        return self._length - self._pos

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        return self._pos

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._pos
        if size is None or size < 0 or size > left:
            size = left
        if size <= 0:
            return b""
        data = os.pread(self._f.fileno(), size, self._start + self._pos)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._f.close()


# -- the provider --

class S3Backend(ThreadedBackend):
    provider = "s3"
    capabilities = Capabilities(versioned=True, conditional_get=True, conditional_put=False,
                                server_side_copy=True, checksums=frozenset({"md5"}),
                                level_listing=True,
                                max_page=1000)
    ERRORS = ERRORS

    def __init__(self, *, endpoint_url: str | None = None, region: str | None = None,
                 access_key: str | None = None, secret_key: str | SecretStr | None = None,
                 session_token: str | SecretStr | None = None, profile_name: str | None = None,
                 addressing_style: str = "auto", max_pool_connections: int = 32,
                 max_threads: int = 16, max_attempts: int = 3, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, multipart_threshold: int = 64 * MiB,
                 part_size: int = 16 * MiB, multipart_concurrency: int = 8,
                 copy_threshold: int = MAX_SINGLE_COPY, etag_is_md5: bool = True,
                 checksum_calculation: str = "when_supported",
                 verify: bool | str | None = None) -> None:
        super().__init__(max_threads)
        if isinstance(secret_key, SecretStr):
            secret_key = secret_key.get_secret_value()
        if isinstance(session_token, SecretStr):
            session_token = session_token.get_secret_value()
        if part_size < MIN_PART or multipart_threshold < MIN_PART:
            raise ConfigError("s3: part_size and multipart_threshold must be at least 5 MiB")
        self.endpoint_url = endpoint_url
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.copy_threshold = min(copy_threshold, MAX_SINGLE_COPY)
        self.etag_is_md5 = etag_is_md5
        self._upload_checksums = checksum_calculation == "when_supported"
        # None everywhere -> boto3's usual chain (AWS_* variables, ~/.aws files, instance roles)
        config = Config(max_pool_connections=max_pool_connections,
                        retries={"mode": "standard", "max_attempts": max_attempts},
                        connect_timeout=connect_timeout, read_timeout=read_timeout,
                        s3={"addressing_style": addressing_style},
                        request_checksum_calculation=checksum_calculation,
                        response_checksum_validation=checksum_calculation)
        try:
            session = boto3.session.Session(aws_access_key_id=access_key,
                                            aws_secret_access_key=secret_key,
                                            aws_session_token=session_token,
                                            region_name=region, profile_name=profile_name)
            self.client = session.client("s3", endpoint_url=endpoint_url, config=config,
                                         verify=verify)
        except (BotoCoreError, ValueError) as exc:  # unknown profile, bad endpoint URL, ...
            self._pool.shutdown(wait=False)
            raise ConfigError(f"s3: cannot build a client: {exc}") from exc
        # parts of multipart uploads/copies run here, never in the call pool (no nested waits)
        self._parts = ThreadPoolExecutor(multipart_concurrency,
                                         thread_name_prefix="aisync-s3-part")

    @classmethod
    def from_profile(cls, settings: Mapping[str, Any]) -> S3Backend:
        """``{"endpoint_url": "https://s3.example", "region": "us-east-1", "access_key": ...,
        "secret_key": ..., "addressing_style": "path", ...}`` (see :class:`S3Settings`)."""
        try:
            parsed = S3Settings.model_validate(dict(settings))
        except ValidationError as exc:
            raise ConfigError(f"invalid s3 profile: {_describe(exc)}") from None
        return cls(**parsed.backend_kwargs())

    def __repr__(self) -> str:
        return f"S3Backend(endpoint_url={self.endpoint_url!r})"

    async def close(self) -> None:
        await super().close()
        self._parts.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    # -- tokens --
    def token(self, response: Mapping[str, Any], *, size: int | None = None) -> VersionToken:
        """A token from a HEAD/GET/list answer (``size`` overrides a ranged ``ContentLength``)."""
        etag = _unquote(response.get("ETag"))
        md5 = None
        encrypted = (response.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse")
                     or response.get("SSECustomerAlgorithm"))
        if self.etag_is_md5 and etag and not encrypted and _MD5_ETAG.match(etag.lower()):
            md5 = etag.lower()
        if size is None:
            size = int(response.get("ContentLength", response.get("Size", 0)))
        return VersionToken(size=size, etag=etag,
                            version_id=_version_id(response.get("VersionId")),
                            last_modified=_epoch(response.get("LastModified")), md5=md5,
                            crc32=_checksum(response.get("ChecksumCRC32")),
                            crc32c=_checksum(response.get("ChecksumCRC32C")),
                            sha256=_checksum(response.get("ChecksumSHA256")))

    # -- blocking pieces (run in the pool through ``call``) --
    def _check_bucket(self, bucket: str) -> None:
        """Raise BucketNotFound when the bucket is missing; any other answer says nothing."""
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _http_status(exc) == 404 or _error_code(exc) == "NoSuchBucket":
                raise BucketNotFound(f"s3://{bucket}: no such bucket") from exc

    def _head(self, bucket: str, name: str) -> dict[str, Any]:
        try:
            return self.client.head_object(Bucket=bucket, Key=name, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _http_status(exc) != 404:
                raise
            self._check_bucket(bucket)  # a HEAD 404 has no body: bucket or key?
            raise ObjectNotFound(f"s3://{bucket}/{name}: no such object") from exc

    def _after_write(self, bucket: str, name: str, answer: Mapping[str, Any], size: int,
                     last_modified: datetime | None = None) -> VersionToken:
        """The token of the write that returned ``answer``, from a HEAD pinned to that write."""
        etag, version_id = answer.get("ETag"), _version_id(answer.get("VersionId"))
        try:
            if version_id:
                head = self.client.head_object(Bucket=bucket, Key=name, VersionId=version_id,
                                               ChecksumMode="ENABLED")
            else:
                head = self.client.head_object(Bucket=bucket, Key=name, IfMatch=etag,
                                               ChecksumMode="ENABLED")
            if _unquote(head.get("ETag")) == _unquote(etag):
                return self.token(head)
        except ClientError as exc:
            if _http_status(exc) not in (404, 412):
                raise
        # overwritten or deleted by someone else already: describe our write from its answer
        return self.token({**answer, "LastModified": last_modified}, size=size)

    def _multipart(self, bucket: str, name: str, size: int, extra: Mapping[str, Any],
                   send_part: Callable[[str, int, int, int], Mapping[str, Any]],
                   part_checksums: bool) -> dict[str, Any]:
        """Create, send parts in parallel (``send_part(upload_id, number, offset, length)``
        answers ``{"ETag": ..., maybe "ChecksumCRC32": ...}``), complete; abort on failure."""
        part = max(self.part_size, math.ceil(size / MAX_PARTS))
        plan = [(n + 1, offset, min(part, size - offset))
                for n, offset in enumerate(range(0, size, part))]
        if part_checksums:
            extra = {**extra, "ChecksumAlgorithm": "CRC32"}
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=name,
                                                        **extra)["UploadId"]
        futures: list[Future] = []
        try:
            futures = [self._parts.submit(send_part, upload_id, n, offset, length)
                       for n, offset, length in plan]
            parts = []
            for (number, _, _), future in zip(plan, futures, strict=True):
                answer = future.result()
                entry = {"PartNumber": number, "ETag": answer["ETag"]}
                if part_checksums and answer.get("ChecksumCRC32"):
                    entry["ChecksumCRC32"] = answer["ChecksumCRC32"]
                parts.append(entry)
            return self.client.complete_multipart_upload(
                Bucket=bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            for future in futures:
                future.cancel()
            wait(futures)  # let parts in flight land, so the abort frees them all
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
            except Exception:  # noqa: BLE001 (the original failure matters more)
                pass
            raise

    def _put(self, bucket: str, name: str, path: Path, content_type: str | None) -> VersionToken:
        size = os.stat(path).st_size
        extra = {"ContentType": content_type} if content_type else {}
        if size < self.multipart_threshold:
            with open(path, "rb") as f:
                answer = self.client.put_object(Bucket=bucket, Key=name, Body=f, **extra)
            return self._after_write(bucket, name, answer, size)

        def send_part(upload_id: str, number: int, offset: int, length: int) -> Mapping[str, Any]:
            body = _FileSlice(path, offset, length)
            try:
                kwargs = {"ChecksumAlgorithm": "CRC32"} if self._upload_checksums else {}
                return self.client.upload_part(Bucket=bucket, Key=name, UploadId=upload_id,
                                               PartNumber=number, Body=body,
                                               ContentLength=length, **kwargs)
            finally:
                body.close()

        answer = self._multipart(bucket, name, size, extra, send_part, self._upload_checksums)
        return self._after_write(bucket, name, answer, size)

    def _copy(self, bucket: str, src: str, dst: str) -> VersionToken:
        head = self._head(bucket, src)
        size, etag = int(head["ContentLength"]), head["ETag"]
        source: dict[str, str] = {"Bucket": bucket, "Key": src}
        pin: dict[str, str] = {}
        if _version_id(head.get("VersionId")):
            source["VersionId"] = head["VersionId"]  # exactly the version we measured
        else:
            pin["CopySourceIfMatch"] = etag
        if size <= self.copy_threshold:
            answer = self.client.copy_object(Bucket=bucket, Key=dst, CopySource=source, **pin)
            result = answer.get("CopyObjectResult", {})
            return self._after_write(bucket, dst, {**answer, **result}, size,
                                     result.get("LastModified"))

        extra: dict[str, Any] = {"Metadata": head.get("Metadata", {})}
        for key in ("ContentType", "ContentEncoding", "ContentDisposition", "CacheControl"):
            if head.get(key):
                extra[key] = head[key]

        def send_part(upload_id: str, number: int, offset: int, length: int) -> Mapping[str, Any]:
            answer = self.client.upload_part_copy(
                Bucket=bucket, Key=dst, UploadId=upload_id, PartNumber=number,
                CopySource=source, CopySourceRange=f"bytes={offset}-{offset + length - 1}", **pin)
            return answer["CopyPartResult"]

        answer = self._multipart(bucket, dst, size, extra, send_part, False)
        return self._after_write(bucket, dst, answer, size)

    # -- contract --
    async def head(self, bucket: str, name: str) -> VersionToken:
        return self.token(await self.call(self._head, bucket, name,
                                          what=f"head s3://{bucket}/{name}"))

    async def open(self, bucket: str, name: str, *, byte_range: tuple[int, int] | None = None,
                   if_version: VersionToken | None = None) -> ObjectStream:
        what = f"get s3://{bucket}/{name}"
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if byte_range is not None:
            first, last = byte_range
            if first < 0 or last < first:
                raise InvalidRange(f"{what}: bad byte range {first}-{last}")
            kwargs["Range"] = f"bytes={first}-{last}"
        if if_version is not None:
            if if_version.etag:
                kwargs["IfMatch"] = f'"{if_version.etag}"'
            elif not if_version.version_id:
                raise InvalidArgument(f"{what}: a pinned read needs an ETag or a version id")

        def _open() -> tuple[Any, VersionToken]:
            answer = self.client.get_object(**kwargs)
            body = answer["Body"]
            total = None
            match = _CONTENT_RANGE.match(answer.get("ContentRange") or "")
            if match:
                total = int(match.group(1))
            version = self.token(answer, size=total)
            if (if_version is not None and if_version.version_id
                    and version.version_id != if_version.version_id):
                body.close()
                raise PreconditionFailed(f"s3://{bucket}/{name} is no longer version "
                                         f"{if_version.version_id}")
            return body, version

        body, version = await self.call(_open, what=what)
        chunks: Iterator[bytes] = body.iter_chunks(CHUNK)
        # botocore checks a full-object CRC/SHA the server sent while the body streams (and
        # raises at its end on a mismatch): such a stream needs no second hash by the caller.
        verifying = isinstance(body, StreamingChecksumBody) and byte_range is None
        return self.stream_blocking(version, chunks, body.close, what, self_verifying=verifying)

    async def put(self, bucket: str, name: str, path: Path, *,
                  content_type: str | None = None) -> VersionToken:
        return await self.call(self._put, bucket, name, Path(path), content_type,
                               what=f"put s3://{bucket}/{name}")

    async def delete(self, bucket: str, name: str) -> None:
        def _delete() -> None:
            # S3 DeleteObject succeeds on a missing key, the contract wants ObjectNotFound: HEAD
            # first. Racy by nature (the object may go or come between the two requests); a
            # lost race only means reporting success for a delete someone else did.
            self._head(bucket, name)
            self.client.delete_object(Bucket=bucket, Key=name)

        await self.call(_delete, what=f"delete s3://{bucket}/{name}")

    async def copy(self, bucket: str, src: str, dst: str) -> VersionToken:
        return await self.call(self._copy, bucket, src, dst,
                               what=f"copy s3://{bucket}/{src} -> {dst}")

    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000) -> ListPage:
        limit = max(1, min(limit, self.capabilities.max_page))

        def _list() -> ListPage:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": limit}
            if token:
                kwargs["StartAfter"] = token
            entries: list[ListEntry] = []
            while True:
                answer = self.client.list_objects_v2(**kwargs)
                entries += [ListEntry(item["Key"], self.token(item, size=int(item["Size"])))
                            for item in answer.get("Contents", [])]
                truncated = bool(answer.get("IsTruncated"))
                # a server may answer an empty but truncated page: keep going until keys come
                if entries or not truncated:
                    break
                if not answer.get("NextContinuationToken"):  # it would end the listing early
                    raise BackendError(f"list s3://{bucket}/{prefix}: a truncated page without "
                                       f"keys or a continuation token", bucket=bucket)
                kwargs["ContinuationToken"] = answer["NextContinuationToken"]
            entries = entries[:limit]
            return ListPage(entries, entries[-1].name if truncated and entries else None)

        return await self.call(_list, what=f"list s3://{bucket}/{prefix}")

    async def list_level(self, bucket: str, prefix: str = "", token: str | None = None,
                         limit: int = 1000) -> LevelPage:
        limit = max(1, min(limit, self.capabilities.max_page))

        def _level() -> LevelPage:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": limit,
                                      "Delimiter": "/"}
            if token:
                kwargs["StartAfter"] = token
            answer = self.client.list_objects_v2(**kwargs)
            entries = [ListEntry(item["Key"], self.token(item, size=int(item["Size"])))
                       for item in answer.get("Contents", [])]
            prefixes = [p["Prefix"] for p in answer.get("CommonPrefixes", [])]
            last = max([e.name for e in entries[-1:]] + prefixes[-1:], default=None)
            if last is not None and last.endswith("/") and prefixes and last == prefixes[-1]:
                last += "\U0010ffff"  # resume after everything under that prefix
            if answer.get("IsTruncated") and last is None:  # it would end the listing early
                raise BackendError(f"list s3://{bucket}/{prefix} by level: a truncated page "
                                   f"without keys or prefixes", bucket=bucket)
            return LevelPage(entries, prefixes, last if answer.get("IsTruncated") else None)

        return await self.call(_level, what=f"list s3://{bucket}/{prefix} by level")

