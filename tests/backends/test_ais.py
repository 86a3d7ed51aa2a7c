"""The ais provider (a peer aisync cluster) against a REAL peer: node processes started by
``tests.harness.LocalCluster``. Conformance on a fresh ``ais://`` bucket of the peer per test,
plus what is particular to a peer: endpoint failover, profile validation, tokens that follow the
peer's checksum and mtime, pinned reads checked against the response headers."""

from __future__ import annotations

import os
import uuid

import pytest

from aisync.backends.ais import ERRORS, AisBackend, AisSettings, _translate
from aisync.backends.registry import make_backend
from aisync.client import AsyncClient, Client
from aisync.util.errors import (
    BackendUnavailable,
    BucketNotFound,
    ConfigError,
    InvalidArgument,
    InvalidRange,
    NodeUnavailable,
    ObjectNotFound,
    PreconditionFailed,
)
from tests.backends.conformance import Conformance, put_bytes, read_all
from tests.harness import LocalCluster, free_port


@pytest.fixture(scope="module")
def peer():
    with LocalCluster(targets=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def admin(peer):
    with Client(peer.endpoint) as client:
        yield client


@pytest.fixture
def peer_bucket(admin):
    name = f"conf-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(f"ais://{name}")
    yield name
    admin.destroy_bucket(f"ais://{name}")


@pytest.fixture
async def backend(peer):
    async with AisBackend([peer.endpoint], token=peer.token) as b:
        yield b


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


class TestAisConformance(Conformance):
    @pytest.fixture
    def bucket(self, peer_bucket):
        return peer_bucket


# -- tokens --

async def test_tokens_are_the_peers_checksum_and_mtime(backend, peer, peer_bucket, tmp_path):
    put = await put_bytes(backend, peer_bucket, "t/obj", b"payload" * 10, tmp_path)
    async with AsyncClient(peer.endpoint) as client:
        info = await client.head_object(f"ais://{peer_bucket}", "t/obj")
    assert info.checksum.startswith("xxh3:")
    assert put.etag == info.checksum.removeprefix("xxh3:") == info.etag
    assert put.version_id == str(info.mtime_ns)
    assert put.last_modified == pytest.approx(info.mtime_ns / 1e9)
    assert put.md5 is None and put.crc32c is None and put.sha256 is None
    head = await backend.head(peer_bucket, "t/obj")
    (listed,) = (await backend.list_page(peer_bucket, prefix="t/")).entries
    async with await backend.open(peer_bucket, "t/obj") as stream:
        opened = stream.version  # known before the first chunk
    assert put == head == listed.version == opened


async def test_same_bytes_rewritten_is_a_new_generation(backend, peer_bucket, tmp_path):
    first = await put_bytes(backend, peer_bucket, "g", b"same", tmp_path)
    second = await put_bytes(backend, peer_bucket, "g", b"same", tmp_path)
    assert first.etag == second.etag  # the content checksum
    assert first.version_id != second.version_id  # the write
    with pytest.raises(PreconditionFailed):
        await backend.open(peer_bucket, "g", if_version=first)
    got, version = await read_all(backend, peer_bucket, "g", if_version=second)
    assert got == b"same" and version == second


# -- pinned reads --

async def test_pinned_read_after_overwrite_fails_before_any_byte(backend, peer_bucket, tmp_path):
    old = await put_bytes(backend, peer_bucket, "pin", b"x" * 2048, tmp_path)
    await put_bytes(backend, peer_bucket, "pin", b"y" * 2048, tmp_path)
    # by checksum alone, by generation alone, and by both: open() itself raises
    for pin in [old, old.__class__(size=old.size, etag=old.etag),
                old.__class__(size=old.size, version_id=old.version_id)]:
        with pytest.raises(PreconditionFailed):
            await backend.open(peer_bucket, "pin", if_version=pin)
        with pytest.raises(PreconditionFailed):
            await backend.open(peer_bucket, "pin", byte_range=(0, 9), if_version=pin)
    with pytest.raises(InvalidArgument):
        await backend.open(peer_bucket, "pin", if_version=old.__class__(size=old.size))
    current = await backend.head(peer_bucket, "pin")
    got, _ = await read_all(backend, peer_bucket, "pin", byte_range=(10, 19), if_version=current)
    assert got == b"y" * 10


async def test_range_past_the_end(backend, peer_bucket, tmp_path):
    await put_bytes(backend, peer_bucket, "small", b"0123456789", tmp_path)
    got, version = await read_all(backend, peer_bucket, "small", byte_range=(8, 100))
    assert got == b"89" and version.size == 10
    with pytest.raises(InvalidRange):
        await backend.open(peer_bucket, "small", byte_range=(10, 20))


# -- failover and unavailability --

async def test_failover_to_the_next_endpoint_and_remember_it(peer, peer_bucket, tmp_path):
    dead = dead_endpoint()
    async with make_backend({"provider": "ais", "endpoints": [dead, peer.endpoint],
                             "timeout": 5, "token": peer.token}) as backend:
        assert backend.endpoint == dead
        put = await put_bytes(backend, peer_bucket, "f/obj", b"failover", tmp_path)
        assert backend.endpoint == peer.endpoint  # remembered: later calls start there
        assert await backend.head(peer_bucket, "f/obj") == put
        got, _ = await read_all(backend, peer_bucket, "f/obj")
        assert got == b"failover"
        assert [e.name for e in (await backend.list_page(peer_bucket)).entries] == ["f/obj"]
        await backend.delete(peer_bucket, "f/obj")
        with pytest.raises(ObjectNotFound):  # typed errors of the peer pass through
            await backend.head(peer_bucket, "f/obj")
        assert backend.endpoint == peer.endpoint


async def test_failover_wraps_around_from_the_remembered_endpoint(peer, peer_bucket, tmp_path):
    async with AisBackend([peer.endpoint, dead_endpoint()], timeout=5,
                          token=peer.token) as backend:
        backend._preferred = 1  # as if the real proxy had failed once
        await put_bytes(backend, peer_bucket, "w", b"w", tmp_path)
        assert backend.endpoint == peer.endpoint


async def test_all_endpoints_dead_is_backend_unavailable(peer_bucket, tmp_path):
    dead = [dead_endpoint(), dead_endpoint()]
    async with AisBackend(dead, timeout=5) as backend:
        src = tmp_path / "src"
        src.write_bytes(b"data")
        calls = [backend.head(peer_bucket, "x"), backend.open(peer_bucket, "x"),
                 backend.put(peer_bucket, "x", src), backend.delete(peer_bucket, "x"),
                 backend.list_page(peer_bucket)]
        for call in calls:
            with pytest.raises(BackendUnavailable) as info:
                await call
            assert isinstance(info.value.__cause__, NodeUnavailable)
            assert info.value.transient
            assert all(url in info.value.message for url in dead)


async def test_missing_bucket_is_typed(backend):
    with pytest.raises(BucketNotFound):
        await backend.open("aisync-no-such-bucket-x2", "x")
    with pytest.raises(BucketNotFound):
        await backend.delete("aisync-no-such-bucket-x2", "x")


def test_error_table_chains_causes():
    cause = NodeUnavailable("ais://b/o: connection lost while reading")
    err = _translate(cause, "get ais://b/o")
    assert isinstance(err, BackendUnavailable) and err.__cause__ is cause
    assert err.message.startswith("get ais://b/o: ")
    kept = ObjectNotFound("ais://b/o: no such object")
    assert _translate(kept, "get ais://b/o") is kept
    assert AisBackend.ERRORS is ERRORS


# -- profiles --

def test_profile_accepts_one_or_more_endpoints():
    backend = make_backend({"provider": "ais", "endpoints": "127.0.0.1:51080"})
    assert isinstance(backend, AisBackend)
    assert backend.endpoints == ["http://127.0.0.1:51080"] and backend.timeout == 60
    backend = AisBackend.from_profile({"endpoints": ["http://a:1/", "https://b:2"],
                                       "timeout": 2.5})
    assert backend.endpoints == ["http://a:1", "https://b:2"] and backend.timeout == 2.5
    assert AisSettings(endpoints=["http://a:1"]).timeout == 60


@pytest.mark.parametrize("settings", [
    {},
    {"endpoints": []},
    {"endpoints": ["ftp://peer:1"]},
    {"endpoints": [""]},
    {"endpoints": ["http://a:1", "http://a:1/"]},
    {"endpoints": ["http://a:1"], "timeout": 0},
    {"endpoints": ["http://a:1"], "timeout": "soon"},
    {"endpoints": ["http://a:1"], "region": "x"},
    {"endpoint": "http://a:1"},
])
def test_bad_profile_is_config_error(settings):
    with pytest.raises(ConfigError):
        make_backend({"provider": "ais", **settings})


def test_constructor_checks_too():
    with pytest.raises(ConfigError):
        AisBackend([])
    with pytest.raises(ConfigError):
        AisBackend(["ftp://peer:1"])
    with pytest.raises(ConfigError):
        AisBackend("http://a:1", timeout=-1)


async def test_stream_survives_other_calls(backend, peer_bucket, tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    await put_bytes(backend, peer_bucket, "big", data, tmp_path)
    async with await backend.open(peer_bucket, "big") as stream:
        parts = []
        async for chunk in stream:
            parts.append(chunk)
            if len(parts) == 1:  # interleave another request on the same backend
                assert (await backend.head(peer_bucket, "big")).size == len(data)
    assert b"".join(parts) == data


async def test_a_peer_refuses_a_backend_without_its_token(peer, peer_bucket):
    """The peer's token comes from this node's remote profile; without it, nothing is read
    (the environment's or a cluster dir's token is never used instead)."""
    async with AisBackend([peer.endpoint]) as anonymous:
        with pytest.raises(PermissionError, match="token"):
            await anonymous.list_page(peer_bucket)
    async with AisBackend([peer.endpoint], token="not-the-token") as wrong:
        with pytest.raises(PermissionError, match="Unauthorized"):  # HEAD: the code only
            await wrong.head(peer_bucket, "anything")
