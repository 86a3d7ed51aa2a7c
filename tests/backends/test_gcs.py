"""The gs provider against a real fake-gcs-server (one per session, see ``gcs_server.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid

import google_crc32c
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from aisync.backends.gcs import GcsBackend, GcsSettings
from aisync.backends.registry import make_backend
from aisync.util.errors import (
    BackendUnavailable,
    BucketNotFound,
    ConfigError,
    InvalidRange,
    ObjectNotFound,
    PreconditionFailed,
)
from tests.backends.conformance import Conformance, put_bytes, read_all
from tests.backends.gcs_server import running_fake_gcs
from tests.harness import free_port

SECRET = "s3cr3t-refresh-token-do-not-print"


@pytest.fixture(scope="session")
def gcs_url():
    with running_fake_gcs() as url:
        yield url


@pytest.fixture(scope="session")
def admin(gcs_url):
    """A plain SDK client to arrange state behind the backend's back."""
    client = storage.Client(project="aisync-test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_url})
    yield client
    client.close()


@pytest.fixture
def bucket(admin):
    name = f"aisync-test-{uuid.uuid4().hex[:16]}"
    admin.create_bucket(name)
    yield name
    b = admin.bucket(name)
    for blob in admin.list_blobs(name):
        blob.delete()
    b.delete()


@pytest.fixture
async def backend(gcs_url):
    async with GcsBackend(endpoint=gcs_url, anonymous=True, read_chunk=256 * 1024) as b:
        yield b


class TestGcsConformance(Conformance):
    pass


async def test_generation_is_new_per_write_and_pins_reads(backend, bucket, admin, tmp_path):
    first = await put_bytes(backend, bucket, "g", b"one" * 1000, tmp_path)
    second = await put_bytes(backend, bucket, "g", b"one" * 1000, tmp_path)  # same bytes
    assert first.version_id and second.version_id
    assert int(first.version_id) != int(second.version_id)
    assert second.version_id == str(admin.bucket(bucket).get_blob("g").generation)
    with pytest.raises(PreconditionFailed):
        await backend.open(bucket, "g", if_version=first)
    got, version = await read_all(backend, bucket, "g", if_version=second)
    assert got == b"one" * 1000 and version.version_id == second.version_id


async def test_overwrite_while_streaming_fails_the_stream(backend, bucket, admin, tmp_path):
    data = os.urandom(2 * 1024 * 1024)  # 8 chunks of the fixture's 256 KiB
    token = await put_bytes(backend, bucket, "s", data, tmp_path)
    stream = await backend.open(bucket, "s", if_version=token)
    seen = b""
    with pytest.raises(PreconditionFailed):
        async for chunk in stream:
            if not seen:
                admin.bucket(bucket).blob("s").upload_from_string(b"x" * len(data))
            seen += chunk
    await stream.close()
    assert data.startswith(seen) and len(seen) < len(data)  # old bytes only, never a mix


async def test_checksums_are_reported_and_correct(backend, bucket, tmp_path):
    data = os.urandom(300_001)
    token = await put_bytes(backend, bucket, "c", data, tmp_path)
    crc = f"{google_crc32c.value(data):08x}"
    md5 = hashlib.md5(data).hexdigest()
    head = await backend.head(bucket, "c")
    listed = (await backend.list_page(bucket)).entries[0].version
    for version in (token, head, listed):
        assert (version.md5, version.crc32c, version.size) == (md5, crc, len(data))
    assert head == token == listed
    assert head.last_modified and abs(head.last_modified - token.last_modified) < 1


async def test_copy_is_server_side_and_a_new_object(backend, bucket, tmp_path):
    data = os.urandom(50_000)
    src = await put_bytes(backend, bucket, "a", data, tmp_path)
    dst = await backend.copy(bucket, "a", "b")
    assert dst.md5 == src.md5 and dst.version_id != src.version_id
    with pytest.raises(ObjectNotFound):
        await backend.copy(bucket, "missing", "c")


async def test_conditional_put(backend, bucket, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"v1")
    v1 = await backend.put(bucket, "cp", path)
    path.write_bytes(b"v2")
    v2 = await backend.put(bucket, "cp", path, if_match=v1)
    with pytest.raises(PreconditionFailed):
        await backend.put(bucket, "cp", path, if_match=v1)
    assert (await backend.head(bucket, "cp")) == v2


async def test_ranges_past_the_end_and_empty_objects(backend, bucket, tmp_path):
    await put_bytes(backend, bucket, "e", b"", tmp_path)
    assert (await read_all(backend, bucket, "e"))[0] == b""
    with pytest.raises(InvalidRange):
        await backend.open(bucket, "e", byte_range=(0, 0))
    await put_bytes(backend, bucket, "t", b"0123456789", tmp_path)
    with pytest.raises(InvalidRange):
        await backend.open(bucket, "t", byte_range=(10, 20))
    assert (await read_all(backend, bucket, "t", byte_range=(9, 20)))[0] == b"9"


async def test_missing_bucket_everywhere(backend, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    for call in (backend.open("aisync-no-such-bucket-x2", "x"),
                 backend.delete("aisync-no-such-bucket-x2", "x"),
                 backend.put("aisync-no-such-bucket-x2", "x", path),
                 backend.copy("aisync-no-such-bucket-x2", "x", "y")):
        with pytest.raises(BucketNotFound):
            await call


async def test_unreachable_endpoint_is_backend_unavailable():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with GcsBackend(endpoint=url, anonymous=True, retry_deadline=0.5, timeout=2) as b:
        with pytest.raises(BackendUnavailable) as caught:
            await b.head("bucket", "x")
    assert caught.value.__cause__ is not None
    assert caught.value.transient


async def test_silent_server_times_out_as_backend_unavailable():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with GcsBackend(endpoint=url, anonymous=True, retry_deadline=0.5,
                              timeout=1) as b:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await b.head("bucket", "x")
            assert time.monotonic() - started < 10


async def test_profile_with_emulator_environment(gcs_url, bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_url)
    async with make_backend({"provider": "gs", "read_chunk": 65536}) as b:
        assert isinstance(b, GcsBackend)
        token = await put_bytes(b, bucket, "env", os.urandom(200_000), tmp_path)
        assert (await b.head(bucket, "env")) == token


async def test_profile_with_explicit_endpoint(gcs_url, bucket, tmp_path):
    async with GcsBackend.from_profile({"endpoint": gcs_url, "anonymous": True,
                                        "project": "p1", "timeout": 5}) as b:
        await put_bytes(b, bucket, "x", b"x", tmp_path)
        assert [e.name for e in (await b.list_page(bucket)).entries] == ["x"]


@pytest.mark.parametrize("settings", [
    {"endpoint": "http://x", "bogus": 1},
    {"timeout": "soon"},
    {"read_chunk": 10},
    {"anonymous": True, "credentials_file": "/nonexistent.json"},
    {"credentials_file": "/nonexistent/aisync-sa.json"},
    {"credentials_json": "not json " + SECRET},
    {"credentials_json": json.dumps({"type": "nonsense", "client_secret": SECRET})},
    {"credentials_json": 42},
])
def test_bad_profile_is_config_error_without_secrets(settings):
    with pytest.raises(ConfigError) as caught:
        GcsBackend.from_profile(settings)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None  # nothing chained that could quote the input


async def test_profile_with_a_credentials_file(gcs_url, tmp_path):
    path = tmp_path / "user.json"
    path.write_text(json.dumps({"type": "authorized_user", "client_id": "id.apps.example",
                                "client_secret": SECRET, "refresh_token": SECRET}))
    async with GcsBackend.from_profile({"endpoint": gcs_url, "project": "p",
                                        "credentials_file": str(path)}) as b:
        assert SECRET not in repr(b)


async def test_secrets_stay_out_of_repr(gcs_url):
    info = {"type": "authorized_user", "client_id": "id.apps.example",
            "client_secret": SECRET, "refresh_token": SECRET}
    settings = {"endpoint": gcs_url, "project": "p", "credentials_json": json.dumps(info)}
    assert SECRET not in repr(GcsSettings.model_validate(settings))
    async with GcsBackend.from_profile(settings) as b:
        assert SECRET not in repr(b) and SECRET not in str(b)
        assert gcs_url in repr(b)

