"""Read-through on a real object store and a real fs backend: coalescing, streaming, failures."""

from __future__ import annotations

import asyncio
import os

import pytest

from aisync.backends.base import Backend, ObjectStream
from aisync.backends.fs import FsBackend
from aisync.storage.objects import ObjectStore
from aisync.sync.readthrough import ReadThrough
from aisync.util.errors import BackendError, ChecksumMismatch, ObjectNotFound


@pytest.fixture
async def env(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    store = ObjectStore([tmp_path / "mp0"], tmp_path / "index.db")
    await store.start()
    backend = FsBackend({"src": share})
    yield store, backend, share
    await backend.close()
    await store.stop()


async def read_via(fetch) -> bytes:
    """Follow a fetch like the HTTP layer does: read the temp file as it grows."""
    out, offset = bytearray(), 0
    async with fetch.reader() as fd:
        while True:
            available = await fetch.wait_for(offset)
            if available > offset:
                data = fetch.from_window(offset, available)
                if data is None:  # on disk already
                    data = os.pread(fd, min(available, fetch.durable) - offset, offset)
                out += data
                offset += len(data)
            elif fetch.done:
                return bytes(out)


async def test_twenty_readers_one_backend_get(env):
    store, backend, share = env
    data = os.urandom(6 * 1024 * 1024 + 3)
    (share / "big.bin").write_bytes(data)
    rt = ReadThrough(store)
    fetches = [rt.fetch(backend, "src", "fs/src", "big.bin") for _ in range(20)]
    results = await asyncio.gather(*(read_via(f) for f in fetches))
    assert all(r == data for r in results)
    assert rt.stats.backend_gets == 1
    assert (rt.stats.cold_gets, rt.stats.coalesced) == (20, 19)
    obj = store.open("fs/src", "big.bin")
    try:
        assert obj.size == len(data)
        assert obj.meta.source["size"] == len(data) and obj.meta.source["etag"]
    finally:
        obj.close()
    listed = await store.list_page("fs/src")
    assert listed[0].source == obj.meta.source


class GatedStream(ObjectStream):
    """A real backend stream held after its first 2 MiB until the test opens the gate."""

    def __init__(self, inner: ObjectStream, gate: asyncio.Event) -> None:
        self.inner, self.gate, self.version = inner, gate, inner.version

    async def __aiter__(self):
        sent = 0
        async for chunk in self.inner:
            if sent >= 2 * 1024 * 1024:
                await self.gate.wait()
            sent += len(chunk)
            yield chunk

    async def close(self) -> None:
        await self.inner.close()


async def test_first_bytes_arrive_before_the_fetch_ends(env):
    store, _, share = env
    data = os.urandom(8 * 1024 * 1024)
    (share / "f").write_bytes(data)
    gate = asyncio.Event()

    class GatedBackend(FsBackend):
        async def open(self, bucket, name, **kwargs) -> ObjectStream:
            return GatedStream(await super().open(bucket, name, **kwargs), gate)

    backend = GatedBackend({"src": share})
    fetch = ReadThrough(store).fetch(backend, "src", "fs/src", "f")
    async with fetch.reader() as fd:
        first = await fetch.wait_for(0)
        assert 0 < first < len(data) and not fetch.done  # the source is still held
        head = fetch.from_window(0, first)
        if head is None:
            head = os.pread(fd, min(first, fetch.durable), 0)
        assert head == data[:len(head)] and head
        gate.set()
        while not fetch.done:
            await fetch.wait_for(fetch.received)
        assert os.pread(fd, len(data) + 1, 0) == data
    await backend.close()


async def test_missing_source_object_is_typed_and_nothing_is_cached(env):
    store, backend, _ = env
    fetch = ReadThrough(store).fetch(backend, "src", "fs/src", "nope")
    with pytest.raises(ObjectNotFound):
        async with fetch.reader():
            pass
    assert await store.list_page("fs/src") == []


class CutStream(ObjectStream):
    """A real backend stream that the 'network' cuts after ``limit`` bytes."""

    def __init__(self, inner: ObjectStream, limit: int) -> None:
        self.inner, self.limit, self.version = inner, limit, inner.version

    async def __aiter__(self):
        sent = 0
        async for chunk in self.inner:
            if sent + len(chunk) >= self.limit:
                yield chunk[: self.limit - sent]
                return
            sent += len(chunk)
            yield chunk

    async def close(self) -> None:
        await self.inner.close()


class CuttingBackend(FsBackend):
    async def open(self, bucket, name, **kwargs) -> ObjectStream:
        return CutStream(await super().open(bucket, name, **kwargs), 3 * 1024 * 1024)


async def test_a_short_read_fails_every_reader_and_caches_nothing(env, tmp_path):
    store, _, share = env
    (share / "cut").write_bytes(os.urandom(5 * 1024 * 1024))
    backend: Backend = CuttingBackend({"src": share})
    rt = ReadThrough(store)
    fetches = [rt.fetch(backend, "src", "fs/src", "cut") for _ in range(3)]
    for fetch in fetches:
        with pytest.raises(BackendError, match="short read"):
            await read_via(fetch)
    assert await store.list_page("fs/src") == []
    assert not any((tmp_path / "mp0" / "tmp").iterdir())
    await backend.close()


class LyingStream(ObjectStream):
    """A real fs stream whose token claims an MD5 the bytes do not have (corruption in
    transit, or a source bug)."""

    def __init__(self, inner: ObjectStream) -> None:
        from dataclasses import replace

        self.inner = inner
        self.version = replace(inner.version, md5="0" * 32)

    def __aiter__(self):
        return self.inner.__aiter__()

    async def close(self) -> None:
        await self.inner.close()


async def test_no_reader_gets_the_whole_object_before_it_is_verified(env, tmp_path):
    from aisync.util.errors import ChecksumMismatch

    store, _, share = env
    data = os.urandom(3 * 1024 * 1024)
    (share / "bad").write_bytes(data)

    class LyingBackend(FsBackend):
        async def open(self, bucket, name, **kwargs) -> ObjectStream:
            return LyingStream(await super().open(bucket, name, **kwargs))

    backend = LyingBackend({"src": share})
    fetch = ReadThrough(store).fetch(backend, "src", "fs/src", "bad")
    sent = 0
    with pytest.raises(ChecksumMismatch):
        async with fetch.reader():
            while True:  # what the HTTP layer may send: never the last byte before verification
                sendable = await fetch.wait_sendable(sent)
                if sendable <= sent:
                    break
                sent = sendable
    assert sent < len(data)
    assert await store.list_page("fs/src") == []
    await backend.close()


async def test_the_in_memory_window_stays_bounded(env):
    store, backend, share = env
    data = os.urandom(12 * 1024 * 1024)
    (share / "w").write_bytes(data)
    limit = 2 * 1024 * 1024
    rt = ReadThrough(store, window_bytes=limit)
    fetch = rt.fetch(backend, "src", "fs/src", "w")
    peak, out, offset = 0, bytearray(), 0
    async with fetch.reader() as fd:
        while offset < len(data):
            available = await fetch.wait_for(offset)
            peak = max(peak, fetch._window_bytes)
            chunk = fetch.from_window(offset, available)
            if chunk is None:
                chunk = os.pread(fd, min(available, fetch.durable) - offset, offset)
            out += chunk
            offset += len(chunk)
    await fetch.task
    assert bytes(out) == data
    assert peak <= limit + 1024 * 1024  # the limit plus the one chunk that crossed it


class SelfCheckingStream(ObjectStream):
    """A stream that checks a source checksum itself, as botocore does with S3's CRC32, and
    (here) finds a mismatch at its end: it raises instead of ending."""

    self_verifying = True

    def __init__(self, inner: ObjectStream) -> None:
        from dataclasses import replace

        self.inner = inner
        self.version = replace(inner.version, md5="0" * 32)  # would fail if MD5 were checked

    async def __aiter__(self):
        async for chunk in self.inner:
            yield chunk
        if self.fail:
            raise ChecksumMismatch("crc32 of the body differs from the source's")

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.parametrize("fail", [False, True])
async def test_a_self_verifying_stream_is_trusted_and_its_failure_caches_nothing(
        env, tmp_path, fail):
    store, _, share = env
    data = os.urandom(2 * 1024 * 1024 + 7)
    (share / "obj").write_bytes(data)

    class CheckingBackend(FsBackend):
        async def open(self, bucket, name, **kwargs) -> ObjectStream:
            stream = SelfCheckingStream(await super().open(bucket, name, **kwargs))
            stream.fail = fail
            return stream

    backend = CheckingBackend({"src": share})
    fetch = ReadThrough(store).fetch(backend, "src", "fs/src", "obj")
    if fail:
        sent = 0
        with pytest.raises(ChecksumMismatch):
            async with fetch.reader():
                while (sendable := await fetch.wait_sendable(sent)) > sent:
                    sent = sendable
        assert sent < len(data)
        assert await store.list_page("fs/src") == []
    else:  # no MD5 of our own: the bogus MD5 in the token is never compared
        assert await read_via(fetch) == data
        await fetch.task
        assert [e.name for e in await store.list_page("fs/src")] == ["obj"]
    await backend.close()
