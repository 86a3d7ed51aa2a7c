"""The s3 provider (boto3) against a real moto server over HTTP: conformance on a plain and on a
versioned bucket, plus what is particular to S3 (multipart ETags, pinned reads by version,
endpoint failures, profile validation)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import zlib

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from pydantic import SecretStr

from aisync.backends.base import translate
from aisync.backends.registry import make_backend
from aisync.backends.s3 import ERRORS, MiB, S3Backend, S3Settings
from aisync.util.errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    BucketNotFound,
    ConfigError,
    InvalidRange,
    ObjectNotFound,
    PreconditionFailed,
    Throttled,
)
from tests.backends.conformance import Conformance, put_bytes, read_all
from tests.backends.moto_server import CREDENTIALS, admin_client, moto_endpoint, temp_bucket

__all__ = ["moto_endpoint"]  # the session fixture, re-exported for pytest


@pytest.fixture(scope="session")
def admin(moto_endpoint):
    return admin_client(moto_endpoint)


@pytest.fixture
async def backend(moto_endpoint):
    async with S3Backend(endpoint_url=moto_endpoint, **CREDENTIALS) as b:
        yield b


@pytest.fixture
def plain_bucket(admin):
    with temp_bucket(admin) as name:
        yield name


@pytest.fixture
def versioned_bucket(admin):
    with temp_bucket(admin, versioning="Enabled") as name:
        yield name


class TestS3Plain(Conformance):
    @pytest.fixture
    def bucket(self, plain_bucket):
        return plain_bucket

    async def test_versioned_tokens(self, backend, bucket, tmp_path):
        """``versioned`` is a provider capability, but on S3 it is a bucket setting: a bucket
        without versioning has no version ids (S3 itself, not a moto gap). Overwrites are told
        apart by ETag instead (``test_token_changes_on_same_size_overwrite``)."""
        a = await put_bytes(backend, bucket, "v", b"1", tmp_path)
        b = await put_bytes(backend, bucket, "v", b"2", tmp_path)
        assert a.version_id is None and b.version_id is None and a.etag != b.etag


class TestS3Versioned(Conformance):
    @pytest.fixture
    def bucket(self, versioned_bucket):
        return versioned_bucket


# -- tokens --

async def test_plain_bucket_tokens(backend, plain_bucket, tmp_path):
    data = b"hello s3"
    token = await put_bytes(backend, plain_bucket, "t", data, tmp_path)
    assert token.version_id is None  # no versioning: no version id
    assert token.md5 == token.etag == hashlib.md5(data).hexdigest()
    assert token.last_modified and token.last_modified > 1e9
    assert await backend.head(plain_bucket, "t") == token
    [entry] = (await backend.list_page(plain_bucket)).entries
    assert entry.version.md5 == token.md5 and entry.version.version_id is None


async def test_suspended_versioning_null_version_is_none(backend, admin, tmp_path):
    with temp_bucket(admin, versioning="Suspended") as bucket:
        token = await put_bytes(backend, bucket, "n", b"x", tmp_path)
        assert token.version_id is None
        assert (await backend.head(bucket, "n")).version_id is None


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
async def test_multipart_etag_is_not_md5(moto_endpoint, versioned_bucket, tmp_path, checksums):
    data = os.urandom(11 * MiB + 3)
    async with S3Backend(endpoint_url=moto_endpoint, multipart_threshold=5 * MiB,
                         part_size=5 * MiB, checksum_calculation=checksums,
                         **CREDENTIALS) as b:
        token = await put_bytes(b, versioned_bucket, "mp", data, tmp_path)
        assert token.etag and token.etag.endswith("-3")
        assert token.md5 is None
        assert token.size == len(data) and token.version_id
        head = await b.head(versioned_bucket, "mp")
        assert head == token
        got, version = await read_all(b, versioned_bucket, "mp", if_version=token)
        assert got == data and version.md5 is None
        [entry] = (await b.list_page(versioned_bucket)).entries
        assert entry.version.etag == token.etag and entry.version.md5 is None


async def test_multipart_copy(moto_endpoint, admin, plain_bucket, tmp_path):
    data = os.urandom(11 * MiB)
    async with S3Backend(endpoint_url=moto_endpoint, copy_threshold=5 * MiB,
                         part_size=5 * MiB, **CREDENTIALS) as b:
        path = tmp_path / "src"
        path.write_bytes(data)
        await b.put(plain_bucket, "big", path, content_type="application/x-test")
        token = await b.copy(plain_bucket, "big", "big-copy")
        assert token.size == len(data) and token.etag.endswith("-3")
        assert (await read_all(b, plain_bucket, "big-copy"))[0] == data
    head = admin.head_object(Bucket=plain_bucket, Key="big-copy")
    assert head["ContentType"] == "application/x-test"
    assert admin.list_multipart_uploads(Bucket=plain_bucket).get("Uploads", []) == []


async def test_content_type_is_stored(backend, admin, plain_bucket, tmp_path):
    path = tmp_path / "page"
    path.write_bytes(b"<html></html>")
    await backend.put(plain_bucket, "index.html", path, content_type="text/html")
    assert admin.head_object(Bucket=plain_bucket, Key="index.html")["ContentType"] == "text/html"


async def test_server_checksums_are_reported(backend, admin, plain_bucket):
    data = b"checksummed"
    admin.put_object(Bucket=plain_bucket, Key="c", Body=data, ChecksumAlgorithm="SHA256")
    token = await backend.head(plain_bucket, "c")
    assert token.sha256 == hashlib.sha256(data).hexdigest()
    assert token.md5 == hashlib.md5(data).hexdigest()


async def test_a_crc32_checked_read_is_self_verifying(backend, admin, plain_bucket):
    """boto3 uploads with a CRC32 by default; a whole-object GET then carries it and botocore
    checks it while streaming, so the stream says it verifies itself (a ranged read does not)."""
    data = os.urandom(70_000)
    admin.put_object(Bucket=plain_bucket, Key="crc", Body=data, ChecksumAlgorithm="CRC32")
    token = await backend.head(plain_bucket, "crc")
    assert token.crc32 == format(zlib.crc32(data), "08x")
    async with await backend.open(plain_bucket, "crc") as stream:
        assert stream.self_verifying and stream.version.crc32 == token.crc32
        assert b"".join([c async for c in stream]) == data
    async with await backend.open(plain_bucket, "crc", byte_range=(0, 9)) as stream:
        assert not stream.self_verifying
        assert b"".join([c async for c in stream]) == data[:10]


# -- pinned reads --

async def test_pin_by_version_fails_on_same_content_rewrite(backend, versioned_bucket, tmp_path):
    """Same bytes, same ETag, new version: the pinned read must still refuse."""
    old = await put_bytes(backend, versioned_bucket, "same", b"same", tmp_path)
    new = await put_bytes(backend, versioned_bucket, "same", b"same", tmp_path)
    assert old.etag == new.etag and old.version_id != new.version_id
    with pytest.raises(PreconditionFailed):
        await backend.open(versioned_bucket, "same", if_version=old)
    got, version = await read_all(backend, versioned_bucket, "same", if_version=new)
    assert got == b"same" and version.version_id == new.version_id


async def test_ranged_read_reports_the_whole_size(backend, plain_bucket, tmp_path):
    data = os.urandom(5000)
    token = await put_bytes(backend, plain_bucket, "r", data, tmp_path)
    got, version = await read_all(backend, plain_bucket, "r", byte_range=(100, 199),
                                  if_version=token)
    assert got == data[100:200] and version.size == 5000 and version.etag == token.etag
    with pytest.raises(InvalidRange):
        await backend.open(plain_bucket, "r", byte_range=(5000, 6000))


# -- failures --

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_endpoint_is_unavailable(tmp_path):
    async with S3Backend(endpoint_url=f"http://127.0.0.1:{_free_port()}", max_attempts=1,
                         connect_timeout=2, **CREDENTIALS) as b:
        with pytest.raises(BackendUnavailable) as info:
            await b.head("any-bucket", "x")
        assert isinstance(info.value.__cause__, EndpointConnectionError)
        assert info.value.transient
        path = tmp_path / "f"
        path.write_bytes(b"x")
        with pytest.raises(BackendUnavailable):
            await b.put("any-bucket", "x", path)


async def test_missing_bucket_everywhere(backend, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    for call in (backend.open("aisync-no-such-bucket-x1", "x"),
                 backend.put("aisync-no-such-bucket-x1", "x", path),
                 backend.delete("aisync-no-such-bucket-x1", "x"),
                 backend.copy("aisync-no-such-bucket-x1", "x", "y")):
        with pytest.raises(BucketNotFound):
            await call


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize("code,status,expected", [
    ("NoSuchKey", 404, ObjectNotFound), ("404", 404, ObjectNotFound),
    ("NoSuchBucket", 404, BucketNotFound), ("PreconditionFailed", 412, PreconditionFailed),
    ("412", 412, PreconditionFailed), ("AccessDenied", 403, AccessDenied),
    ("InvalidAccessKeyId", 403, AccessDenied), ("SignatureDoesNotMatch", 403, AccessDenied),
    ("403", 403, AccessDenied), ("SlowDown", 503, Throttled), ("Throttling", 400, Throttled),
    ("RequestLimitExceeded", 400, Throttled), ("TooManyRequests", 429, Throttled),
    ("InternalError", 500, BackendUnavailable), ("BadGateway", 502, BackendUnavailable),
    ("InvalidObjectState", 403, BackendError), ("MalformedXML", 400, BackendError),
])
def test_error_table(code, status, expected):
    exc = _client_error(code, status)
    err = translate(exc, ERRORS, "get s3://b/k")
    assert type(err) is expected
    assert err.__cause__ is exc and "get s3://b/k" in err.message


# -- profiles --

def test_profile_type_errors_are_config_errors():
    with pytest.raises(ConfigError, match="max_pool_connections"):
        S3Backend.from_profile({"max_pool_connections": "lots"})
    with pytest.raises(ConfigError, match="addressing_style"):
        S3Backend.from_profile({"addressing_style": "sideways"})
    with pytest.raises(ConfigError, match="secret_keyy"):
        S3Backend.from_profile({"secret_keyy": "hunter2-typo"})
    with pytest.raises(ConfigError) as info:
        S3Backend.from_profile({"access_key": ["hunter2-in-a-list"]})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="profile"):
        S3Backend.from_profile({"profile_name": "aisync-no-such-aws-profile"})
    with pytest.raises(ConfigError):
        S3Backend.from_profile({"endpoint_url": "not a url"})


async def test_profile_secrets_stay_hidden(moto_endpoint, plain_bucket, tmp_path):
    secret = "s3cr3t-value-never-shown"
    settings = S3Settings.model_validate({"endpoint": moto_endpoint, "access_key": "testing",
                                          "secret_key": secret, "session_token": "tok-hidden",
                                          "region": "us-east-1"})
    assert isinstance(settings.secret_key, SecretStr)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert secret not in text and "tok-hidden" not in text
    backend = make_backend({"provider": "s3", "endpoint_url": moto_endpoint,
                            "access_key": "testing", "secret_key": secret,
                            "region": "us-east-1", "addressing_style": "path"})
    async with backend:
        assert isinstance(backend, S3Backend) and secret not in repr(backend)
        token = await put_bytes(backend, plain_bucket, "via-profile", b"ok", tmp_path)
        assert (await backend.head(plain_bucket, "via-profile")) == token


def test_checksum_helper_ignores_composites():
    from aisync.backends.s3 import _checksum

    digest = hashlib.sha256(b"x").digest()
    assert _checksum(base64.b64encode(digest).decode()) == digest.hex()
    assert _checksum(base64.b64encode(digest).decode() + "-3") is None
    assert _checksum(None) is None


@pytest.mark.parametrize("max_level", [10_000, 3])
async def test_sharded_listing_matches_the_plain_one(backend, admin, plain_bucket, max_level):
    """Listing sub-prefixes in parallel yields exactly the plain listing, in order (and falls
    back to it when one level holds too many items)."""
    from aisync.sync.diff import sharded_entries, source_entries

    keys = ["a", "a.txt", "a/b", "a/c/d", "a0", "b/x", "b/y/", "b/z", "c", "d/e/f/g", "z\u00e9",
            "\u00e4/1"] + [f"m/{i:03d}" for i in range(25)]
    for key in keys:
        admin.put_object(Bucket=plain_bucket, Key=key, Body=b"k")
    plain = [e.name async for e in source_entries(backend, plain_bucket, "", page=7)]
    sharded = [e.name async for e in sharded_entries(backend, plain_bucket, "", page=7,
                                                     concurrency=2, max_level=max_level)]
    assert sharded == plain == sorted(keys, key=lambda k: k.encode())
    under = [e.name async for e in sharded_entries(backend, plain_bucket, "b/", page=2)]
    assert under == ["b/x", "b/y/", "b/z"]
