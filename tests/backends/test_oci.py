"""The oci provider against a local OCI Object Storage REST server (``oci_server.py``).

No usable OCI Object Storage emulator exists, so the server speaks the REST calls the provider
uses with OCI's semantics (it accepts any request signature but requires one). The SDK signs every
request with a throwaway RSA key generated here; no key is ever written to the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
import uuid

import oci
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aisync.backends.oci import OciBackend, OciSettings
from aisync.backends.registry import make_backend
from aisync.util.errors import (
    AccessDenied,
    BackendUnavailable,
    BucketNotFound,
    ConfigError,
    InvalidRange,
    ObjectNotFound,
    PreconditionFailed,
    Throttled,
)
from tests.backends.conformance import Conformance, put_bytes, read_all
from tests.backends.oci_server import OciTestServer

MiB = 1 << 20


@pytest.fixture(scope="session")
def oci_server():
    with OciTestServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_leftover_faults(oci_server):
    yield
    oci_server.clear_faults()


@pytest.fixture(scope="session")
def oci_config():
    """An SDK config with a throwaway key (generated per test session, never stored)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.MD5())
    digest.update(der)
    fingerprint = ":".join(f"{b:02x}" for b in digest.finalize())
    return {"user": "ocid1.user.oc1..aaaaaaaatestuser", "fingerprint": fingerprint,
            "tenancy": "ocid1.tenancy.oc1..aaaaaaaatesttenancy", "region": "us-ashburn-1",
            "key_content": pem}


@pytest.fixture
async def backend(oci_server, oci_config):
    async with OciBackend(oci_config, service_endpoint=oci_server.endpoint) as b:
        yield b


def make_bucket(server: OciTestServer, config: dict, versioning: bool = True) -> str:
    """A fresh bucket, created through the REST API (CreateBucket) with the SDK."""
    client = oci.object_storage.ObjectStorageClient(config, service_endpoint=server.endpoint)
    name = f"aisync-{uuid.uuid4().hex[:12]}"
    details = oci.object_storage.models.CreateBucketDetails(
        name=name, compartment_id=config["tenancy"],
        versioning="Enabled" if versioning else "Disabled")
    client.create_bucket(server.namespace, details)
    client.base_client.session.close()
    return name


@pytest.fixture
def bucket(oci_server, oci_config):
    return make_bucket(oci_server, oci_config)


class TestOciConformance(Conformance):
    pass


# -- tokens and checksums --

async def test_etag_changes_even_when_the_bytes_do_not(backend, bucket, tmp_path):
    data = os.urandom(10_000)
    first = await put_bytes(backend, bucket, "same", data, tmp_path)
    second = await put_bytes(backend, bucket, "same", data, tmp_path)
    assert first.size == second.size and first.md5 == second.md5
    assert first.etag != second.etag and first.version_id != second.version_id
    assert (await backend.head(bucket, "same")).etag == second.etag


async def test_md5_is_reported_and_correct_everywhere(backend, bucket, tmp_path):
    data = os.urandom(300_000)
    expected = hashlib.md5(data).hexdigest()
    token = await put_bytes(backend, bucket, "m/d5", data, tmp_path)
    assert token.md5 == expected
    assert (await backend.head(bucket, "m/d5")).md5 == expected
    _, version = await read_all(backend, bucket, "m/d5", byte_range=(5, 10))
    assert version.md5 == expected and version.size == len(data)
    [entry] = (await backend.list_page(bucket, prefix="m/")).entries
    assert entry.version.md5 == expected and entry.version.etag == token.etag


async def test_list_and_head_tokens_agree(backend, bucket, tmp_path):
    await put_bytes(backend, bucket, "t", b"x" * 10, tmp_path)
    head = await backend.head(bucket, "t")
    [entry] = (await backend.list_page(bucket)).entries
    assert entry.version.size == head.size and entry.version.etag == head.etag
    assert entry.version.last_modified == head.last_modified
    assert head.version_id and entry.version.version_id is None  # ListObjects has none


async def test_unversioned_bucket_has_no_version_ids(backend, oci_server, oci_config, tmp_path):
    bucket = make_bucket(oci_server, oci_config, versioning=False)
    token = await put_bytes(backend, bucket, "u", b"1", tmp_path)
    assert token.version_id is None and token.etag


# -- reads --

async def test_pinned_read_fails_at_open_after_an_overwrite(backend, bucket, tmp_path):
    old = await put_bytes(backend, bucket, "p", b"a" * 1000, tmp_path)
    got, version = await read_all(backend, bucket, "p", byte_range=(0, 9), if_version=old)
    assert got == b"a" * 10 and version.etag == old.etag
    await put_bytes(backend, bucket, "p", b"b" * 1000, tmp_path)
    with pytest.raises(PreconditionFailed):
        await backend.open(bucket, "p", if_version=old)  # before any byte is read
    with pytest.raises(PreconditionFailed):
        await backend.open(bucket, "p", byte_range=(0, 9), if_version=old)


async def test_stream_is_the_version_it_started_with(backend, bucket, tmp_path):
    data = os.urandom(3 * MiB)
    await put_bytes(backend, bucket, "s", data, tmp_path)
    async with await backend.open(bucket, "s") as stream:
        parts = []
        async for chunk in stream:
            if not parts:
                await put_bytes(backend, bucket, "s", os.urandom(3 * MiB), tmp_path)
            parts.append(chunk)
    assert b"".join(parts) == data


async def test_range_past_the_end_is_invalid(backend, bucket, tmp_path):
    await put_bytes(backend, bucket, "r", b"0123456789", tmp_path)
    with pytest.raises(InvalidRange):
        await backend.open(bucket, "r", byte_range=(10, 20))
    got, version = await read_all(backend, bucket, "r", byte_range=(8, 100))
    assert got == b"89" and version.size == 10


# -- writes --

@pytest.fixture
async def multipart_backend(oci_server, oci_config):
    async with OciBackend(oci_config, service_endpoint=oci_server.endpoint,
                          multipart_threshold=MiB, part_size=MiB) as b:
        yield b


async def test_multipart_upload_round_trip(multipart_backend, oci_server, bucket, tmp_path):
    data = os.urandom(3 * MiB + 12345)
    token = await put_bytes(multipart_backend, bucket, "big/obj", data, tmp_path)
    assert token.size == len(data) and token.etag
    assert token.md5 is None  # a multipart MD5 is not the content's MD5
    head = await multipart_backend.head(bucket, "big/obj")
    assert head.etag == token.etag and head.md5 is None
    [entry] = (await multipart_backend.list_page(bucket, prefix="big/")).entries
    assert entry.version.md5 is None and entry.version.size == len(data)
    got, _ = await read_all(multipart_backend, bucket, "big/obj", if_version=token)
    assert got == data
    assert oci_server.uploads(bucket) == []


async def test_failed_multipart_upload_is_aborted(multipart_backend, oci_server, bucket,
                                                  tmp_path):
    oci_server.inject(503, "ServiceUnavailable", method="PUT", path="/u/")
    with pytest.raises(BackendUnavailable):
        await put_bytes(multipart_backend, bucket, "big", os.urandom(2 * MiB + 1), tmp_path)
    assert oci_server.uploads(bucket) == []
    with pytest.raises(ObjectNotFound):
        await multipart_backend.head(bucket, "big")


async def test_content_type_is_stored(backend, bucket, tmp_path):
    src = tmp_path / "img"
    src.write_bytes(b"\xff\xd8")
    await backend.put(bucket, "typed", src, content_type="image/jpeg")
    await backend.put(bucket, "untyped", src)
    ns = backend.namespace()
    typed = backend.client.head_object(ns, bucket, "typed").headers["content-type"]
    untyped = backend.client.head_object(ns, bucket, "untyped").headers["content-type"]
    assert (typed, untyped) == ("image/jpeg", "application/octet-stream")


async def test_put_into_a_missing_bucket(backend, tmp_path):
    with pytest.raises(BucketNotFound):
        await put_bytes(backend, "aisync-no-such-bucket-x2", "x", b"x", tmp_path)


async def test_delete_in_a_missing_bucket(backend):
    with pytest.raises(BucketNotFound):
        await backend.delete("aisync-no-such-bucket-x3", "x")


# -- listing --

async def test_listing_resumes_after_a_deleted_token(backend, bucket, tmp_path):
    for name in ["a", "b", "c", "d"]:
        await put_bytes(backend, bucket, name, b"1", tmp_path)
    page = await backend.list_page(bucket, limit=2)
    assert [e.name for e in page.entries] == ["a", "b"] and page.next_token == "b"
    await backend.delete(bucket, "b")
    rest = await backend.list_page(bucket, token=page.next_token, limit=2)
    assert [e.name for e in rest.entries] == ["c", "d"] and rest.next_token is None


async def test_full_pages(backend, oci_server, bucket):
    names = [f"k{i:04d}" for i in range(1005)]
    oci_server.seed(bucket, dict.fromkeys(names, b""))
    page = await backend.list_page(bucket, limit=5000)
    assert len(page.entries) == 1000 and page.next_token == "k0999"
    page = await backend.list_page(bucket, token=page.next_token, limit=1000)
    assert [e.name for e in page.entries] == names[1000:] and page.next_token is None


# -- errors --

async def test_no_sdk_retries_and_transient_errors(backend, oci_server, bucket, tmp_path):
    await put_bytes(backend, bucket, "e", b"1", tmp_path)  # the namespace is known now
    before = oci_server.request_count
    oci_server.inject(503, "ServiceUnavailable")
    with pytest.raises(BackendUnavailable):
        await backend.head(bucket, "e")
    assert oci_server.request_count - before == 1  # the SDK did not retry on its own
    oci_server.inject(429, "TooManyRequests")
    with pytest.raises(Throttled):
        await backend.list_page(bucket)
    oci_server.inject(401, "NotAuthenticated")
    with pytest.raises(AccessDenied):
        await backend.open(bucket, "e")
    oci_server.inject(500, "InternalServerError", method="PUT")
    with pytest.raises(BackendUnavailable) as info:
        await put_bytes(backend, bucket, "e", b"2", tmp_path)
    assert isinstance(info.value.__cause__, oci.exceptions.ServiceError)
    assert (await read_all(backend, bucket, "e"))[0] == b"1"


async def test_not_authorized_or_not_found_is_resolved(backend, oci_server, bucket, tmp_path):
    await put_bytes(backend, bucket, "n", b"1", tmp_path)
    oci_server.inject(404, "NotAuthorizedOrNotFound", method="GET", path="/o/")
    with pytest.raises(ObjectNotFound):
        await backend.open(bucket, "n")
    oci_server.inject(404, "NotAuthorizedOrNotFound", method="DELETE")
    with pytest.raises(BucketNotFound):
        await backend.delete("aisync-no-such-bucket-x4", "n")
    oci_server.inject(404, "NotAuthorizedOrNotFound", method="PUT")
    with pytest.raises(AccessDenied):  # the bucket is there: writing it is not allowed
        await put_bytes(backend, bucket, "n", b"2", tmp_path)


async def test_unreachable_endpoint_is_unavailable(oci_config):
    async with OciBackend(oci_config, service_endpoint="http://127.0.0.1:9",
                          connect_timeout=2, read_timeout=2) as b:
        with pytest.raises(BackendUnavailable):
            await b.head("bucket", "x")  # the namespace lookup fails first
    async with OciBackend(oci_config, service_endpoint="http://127.0.0.1:9", namespace="ns",
                          connect_timeout=2, read_timeout=2) as b:
        with pytest.raises(BackendUnavailable):
            await b.list_page("bucket")


def test_server_requires_a_signature(oci_server):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{oci_server.endpoint}/n", timeout=5)
    assert info.value.code == 401
    assert json.loads(info.value.read())["code"] == "NotAuthenticated"


# -- profiles --

def profile(oci_server, oci_config, **extra) -> dict:
    return {"provider": "oci", "endpoint": oci_server.endpoint, **oci_config, **extra}


async def test_profile_with_inline_keys(oci_server, oci_config, bucket, tmp_path):
    b = make_backend(profile(oci_server, oci_config))
    async with b:
        assert isinstance(b, OciBackend)
        await put_bytes(b, bucket, "via-profile", b"hi", tmp_path)
        assert (await b.head(bucket, "via-profile")).size == 2
        assert b.namespace() == oci_server.namespace


async def test_profile_from_a_config_file(oci_server, oci_config, bucket, tmp_path):
    key_file = tmp_path / "key.pem"
    key_file.write_text(oci_config["key_content"])
    key_file.chmod(0o600)
    config_file = tmp_path / "config"
    config_file.write_text("[OTHER]\nuser=ocid1.user.oc1..aaaaaaaabad\n\n[TEST]\n" + "".join(
        f"{k}={oci_config[k]}\n" for k in ("user", "fingerprint", "tenancy", "region"))
        + f"key_file={key_file}\n")
    b = OciBackend.from_profile({"config_file": str(config_file), "profile": "TEST",
                                 "service_endpoint": oci_server.endpoint,
                                 "namespace": oci_server.namespace})
    async with b:
        await put_bytes(b, bucket, "via-file", b"abc", tmp_path)
        assert (await read_all(b, bucket, "via-file"))[0] == b"abc"


@pytest.mark.parametrize("change", [
    {"unknown_key": 1},
    {"fingerprint": "not-a-fingerprint"},
    {"key_content": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"},
    {"endpoint": "ftp://example.com"},
    {"part_size": 1024},
    {"config_file": "/nonexistent/oci/config", "profile": "NOPE"},
])
def test_bad_profiles_are_config_errors(oci_server, oci_config, change):
    with pytest.raises(ConfigError):
        make_backend(profile(oci_server, oci_config, **change))


def test_missing_profile_in_config_file(tmp_path):
    config_file = tmp_path / "config"
    config_file.write_text("[DEFAULT]\nregion=us-ashburn-1\n")
    with pytest.raises(ConfigError, match="NOPE"):
        OciBackend.from_profile({"config_file": str(config_file), "profile": "NOPE"})


async def test_key_material_is_never_shown(oci_server, oci_config):
    secret_line = oci_config["key_content"].splitlines()[1]
    settings = OciSettings.model_validate({**oci_config, "pass_phrase": "hunter2-pass"})
    assert secret_line not in repr(settings) and "hunter2-pass" not in repr(settings)
    b = make_backend(profile(oci_server, oci_config))
    async with b:
        assert secret_line not in repr(b) and "key_content" not in repr(b)
    # a validation error never echoes the input, even a key under the wrong type or name
    for bad in ({"key_content": 12345, "user": oci_config["key_content"]},
                {"private_key": oci_config["key_content"]}):
        with pytest.raises(ConfigError) as info:
            make_backend(profile(oci_server, oci_config, **bad))
        assert secret_line not in str(info.value) and "12345" not in str(info.value)

