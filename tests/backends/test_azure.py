"""The az provider against a real Azurite blob server (one per session, see
``azurite_server.py``)."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from aisync.backends.azure import AzureBackend, AzureSettings
from aisync.backends.registry import make_backend
from aisync.util.errors import (
    AccessDenied,
    BackendUnavailable,
    BucketNotFound,
    ConfigError,
    InvalidRange,
    ObjectNotFound,
    PreconditionFailed,
)
from tests.backends.azurite_server import ACCOUNT, ACCOUNT_KEY, connection_string, running_azurite
from tests.backends.conformance import Conformance, put_bytes, read_all
from tests.harness import free_port

SECRET = "c2VjcmV0LWtleS1kby1ub3QtcHJpbnQ="


@pytest.fixture(scope="session")
def azurite_url():
    with running_azurite() as url:
        yield url


@pytest.fixture(scope="session")
def admin(azurite_url):
    """A plain SDK client to arrange state behind the backend's back."""
    client = BlobServiceClient.from_connection_string(connection_string(azurite_url))
    yield client
    client.close()


@pytest.fixture
def bucket(admin):
    name = f"aisync-test-{uuid.uuid4().hex[:16]}"
    admin.create_container(name)
    yield name
    admin.delete_container(name)


@pytest.fixture
async def backend(azurite_url):
    async with AzureBackend(connection_string=connection_string(azurite_url),
                            read_chunk=256 * 1024) as b:
        yield b


class TestAzureConformance(Conformance):
    pass


async def test_etag_changes_on_same_size_and_same_content_overwrite(backend, bucket, tmp_path):
    first = await put_bytes(backend, bucket, "e", b"same" * 1024, tmp_path)
    second = await put_bytes(backend, bucket, "e", b"same" * 1024, tmp_path)
    assert first.etag and second.etag and first.etag != second.etag
    assert not first.etag.startswith('"') and first.version_id is None  # Azurite: no versioning
    with pytest.raises(PreconditionFailed):
        await backend.open(bucket, "e", if_version=first)
    got, version = await read_all(backend, bucket, "e", if_version=second)
    assert got == b"same" * 1024 and version == second


async def test_overwrite_while_streaming_fails_the_stream(backend, bucket, admin, tmp_path):
    data = os.urandom(2 * 1024 * 1024)  # 8 chunks of the fixture's 256 KiB
    await put_bytes(backend, bucket, "s", data, tmp_path)
    stream = await backend.open(bucket, "s")
    seen = b""
    with pytest.raises(PreconditionFailed):
        async for chunk in stream:
            if not seen:
                admin.get_blob_client(bucket, "s").upload_blob(b"x" * len(data), overwrite=True)
            seen += chunk
    await stream.close()
    assert data.startswith(seen) and len(seen) < len(data)  # old bytes only, never a mix


@pytest.mark.parametrize("size", [1000, 3 * 1024 * 1024 + 5])
async def test_md5_is_reported_and_correct(azurite_url, bucket, tmp_path, size):
    # a 1 MiB single-put limit sends the larger file as blocks: the MD5 is then ours
    async with AzureBackend(connection_string=connection_string(azurite_url),
                            max_single_put_size=1024 * 1024, block_size=1024 * 1024) as b:
        data = os.urandom(size)
        token = await put_bytes(b, bucket, "m", data, tmp_path)
        head = await b.head(bucket, "m")
        listed = (await b.list_page(bucket)).entries[0].version
        _, streamed = await read_all(b, bucket, "m", byte_range=(10, 20))
        for version in (token, head, listed, streamed):
            assert (version.md5, version.size) == (hashlib.md5(data).hexdigest(), size)
            assert version.etag == token.etag
        assert head.last_modified and abs(head.last_modified - token.last_modified) < 2


async def test_copy_is_server_side(backend, bucket, tmp_path):
    data = os.urandom(80_000)
    src = await put_bytes(backend, bucket, "a", data, tmp_path)
    dst = await backend.copy(bucket, "a", "b")
    assert dst.size == src.size and dst.md5 == src.md5 and dst.etag != src.etag
    with pytest.raises(ObjectNotFound):
        await backend.copy(bucket, "missing", "c")


async def test_conditional_put(backend, bucket, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"v1")
    v1 = await backend.put(bucket, "cp", path, content_type="text/plain")
    path.write_bytes(b"v2")
    v2 = await backend.put(bucket, "cp", path, if_match=v1)
    with pytest.raises(PreconditionFailed):
        await backend.put(bucket, "cp", path, if_match=v1)
    assert (await backend.head(bucket, "cp")).etag == v2.etag


async def test_ranges_past_the_end_and_empty_blobs(backend, bucket, tmp_path):
    await put_bytes(backend, bucket, "e", b"", tmp_path)
    assert (await read_all(backend, bucket, "e"))[0] == b""
    with pytest.raises(InvalidRange):
        await backend.open(bucket, "e", byte_range=(0, 0))
    await put_bytes(backend, bucket, "t", b"0123456789", tmp_path)
    with pytest.raises(InvalidRange):
        await backend.open(bucket, "t", byte_range=(10, 20))
    got, version = await read_all(backend, bucket, "t", byte_range=(9, 20))
    assert got == b"9" and version.size == 10


async def test_listing_resumes_from_a_token_another_backend_issued(azurite_url, backend, bucket,
                                                                    tmp_path):
    names = [f"k/{i:02d}" for i in range(12)]
    for name in names:
        await put_bytes(backend, bucket, name, b"x", tmp_path)
    page = await backend.list_page(bucket, prefix="k/", limit=5)
    assert page.next_token == "k/04"
    # a fresh backend has no remembered marker for that token: it must still resume right
    async with AzureBackend(connection_string=connection_string(azurite_url)) as other:
        seen, token = [], page.next_token
        while token:
            nxt = await other.list_page(bucket, prefix="k/", token=token, limit=3)
            seen += [e.name for e in nxt.entries]
            token = nxt.next_token
    assert seen == names[5:]
    # and one that ends exactly at a page boundary
    last = await backend.list_page(bucket, prefix="k/", token="k/06", limit=5)
    assert [e.name for e in last.entries] == names[7:] and last.next_token is None


async def test_missing_container_everywhere(backend, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    for call in (backend.open("aisync-no-such-bucket-x2", "x"),
                 backend.delete("aisync-no-such-bucket-x2", "x"),
                 backend.put("aisync-no-such-bucket-x2", "x", path),
                 backend.copy("aisync-no-such-bucket-x2", "x", "y")):
        with pytest.raises(BucketNotFound):
            await call


async def test_wrong_key_is_access_denied(azurite_url, bucket):
    wrong = {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY[:-8] + "AAAAAAA="}
    async with AzureBackend(account_url=azurite_url, credential=wrong) as b:
        with pytest.raises(AccessDenied):
            await b.head(bucket, "x")


async def test_unreachable_endpoint_is_backend_unavailable():
    url = f"http://127.0.0.1:{free_port()}/{ACCOUNT}"  # nothing listens there
    async with AzureBackend(account_url=url, retries=0, connect_timeout=2) as b:
        with pytest.raises(BackendUnavailable) as caught:
            await b.head("container", "x")
    assert caught.value.__cause__ is not None
    assert caught.value.transient


async def test_silent_server_times_out_as_backend_unavailable():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/{ACCOUNT}"
        async with AzureBackend(account_url=url, retries=0, timeout=1) as b:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await b.head("container", "x")
            assert time.monotonic() - started < 10


async def test_profile_with_connection_string_environment(azurite_url, bucket, monkeypatch,
                                                          tmp_path):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(azurite_url))
    async with make_backend({"provider": "az"}) as b:
        assert isinstance(b, AzureBackend)
        token = await put_bytes(b, bucket, "env", os.urandom(10_000), tmp_path)
        assert (await b.head(bucket, "env")) == token


async def test_profile_with_account_url_and_key(azurite_url, bucket, tmp_path):
    settings = {"account_url": azurite_url, "account_name": ACCOUNT,
                "account_key": ACCOUNT_KEY, "retries": 1}
    async with AzureBackend.from_profile(settings) as b:
        await put_bytes(b, bucket, "x", b"x", tmp_path)
        assert [e.name for e in (await b.list_page(bucket)).entries] == ["x"]
        assert ACCOUNT_KEY not in repr(b) and azurite_url in repr(b)


@pytest.mark.parametrize("settings", [
    {"account_url": "http://x", "bogus": 1},
    {"retries": "many"},
    {"connection_string": SECRET, "account_url": "http://x"},
    {"account_key": SECRET},
    {"account_name": "acct", "account_key": SECRET, "sas_token": SECRET},
    {"sas_token": SECRET},
    {"connection_string": SECRET},           # not a connection string at all
    {"account_key": 42, "account_name": "a"},
])
def test_bad_profile_is_config_error_without_secrets(settings, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigError) as caught:
        AzureBackend.from_profile(settings)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None  # nothing chained that could quote the input


def test_no_account_anywhere_is_config_error(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        AzureBackend.from_profile({})


async def test_secrets_stay_out_of_repr(azurite_url):
    settings = {"connection_string": connection_string(azurite_url)}
    assert ACCOUNT_KEY not in repr(AzureSettings.model_validate(settings))
    async with AzureBackend.from_profile(settings) as b:
        assert ACCOUNT_KEY not in repr(b) and ACCOUNT_KEY not in str(b)
    sas = {"account_url": azurite_url, "sas_token": "sv=2024&sig=" + SECRET}
    assert SECRET not in repr(AzureSettings.model_validate(sas))
    async with AzureBackend.from_profile(sas) as b:
        assert SECRET not in repr(b)
