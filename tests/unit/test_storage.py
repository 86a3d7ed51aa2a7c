"""The target's object store on real files: atomicity, metadata, corruption, index, hot cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from aisync.storage.metadata import XATTR_NAME, ObjectMetadata
from aisync.storage.objects import ObjectStore
from aisync.util.errors import (
    ChecksumMismatch,
    IncompleteBody,
    ObjectCorrupted,
    ObjectNotFound,
    PayloadTooLarge,
)


async def chunks(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def failing_stream(data: bytes):
    yield data
    raise ConnectionResetError("client went away")


@pytest.fixture
async def store(tmp_path):
    s = ObjectStore([tmp_path / "mp0", tmp_path / "mp1"], tmp_path / "index.db")
    await s.start()
    yield s
    await s.stop()


def object_files(tmp_path: Path) -> list[Path]:
    return [p for mp in ("mp0", "mp1") for p in (tmp_path / mp / "objects").rglob("*")
            if p.is_file()]


def tmp_files(tmp_path: Path) -> list[Path]:
    return [p for mp in ("mp0", "mp1") for p in (tmp_path / mp / "tmp").iterdir()]


async def read_all(store: ObjectStore, bucket: str, name: str) -> bytes:
    obj = store.open(bucket, name)
    try:
        return os.pread(obj.fd, obj.size + 1, 0)
    finally:
        obj.close()


async def test_round_trip_and_metadata_on_the_inode(store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 5)
    meta = await store.put("ais/b", "x/y.bin", chunks(data))
    assert meta.size == len(data)
    assert meta.checksum == f"xxh3:{xxhash.xxh3_64_hexdigest(data)}"
    assert await read_all(store, "ais/b", "x/y.bin") == data
    [path] = object_files(tmp_path)
    on_disk = ObjectMetadata.decode(os.getxattr(path, XATTR_NAME))
    assert on_disk == meta
    assert tmp_files(tmp_path) == []


async def test_objects_spread_over_mountpaths(store, tmp_path):
    for i in range(64):
        await store.put("ais/b", f"k{i}", chunks(b"z"))
    per_mp = {mp: len(list((tmp_path / mp / "objects").rglob("*/*/*/*"))) for mp in ("mp0", "mp1")}
    assert all(count > 10 for count in per_mp.values()), per_mp


@pytest.mark.parametrize("stream,kwargs,error", [
    (lambda: chunks(b"short"), {"expected_size": 10}, IncompleteBody),
    (lambda: chunks(b"abc"), {"expected_checksum": "xxh3:0000000000000000"}, ChecksumMismatch),
    (lambda: chunks(b"x" * 100), {"max_size": 50}, PayloadTooLarge),
    (lambda: failing_stream(b"a" * (3 << 20)), {}, ConnectionResetError),
])
async def test_failed_writes_leave_nothing(store, tmp_path, stream, kwargs, error):
    await store.put("ais/b", "keep", chunks(b"old"))
    with pytest.raises(error):
        await store.put("ais/b", "keep", stream(), **kwargs)
    assert await read_all(store, "ais/b", "keep") == b"old"
    assert tmp_files(tmp_path) == []
    assert [e.name for e in await store.list_page("ais/b")] == ["keep"]


async def test_small_object_corruption_is_detected_and_quarantined(store, tmp_path):
    await store.put("ais/b", "c", chunks(b"precious bytes"))
    [path] = object_files(tmp_path)
    with open(path, "r+b") as f:
        f.write(b"X")
    obj = store.open("ais/b", "c")
    with pytest.raises(ObjectCorrupted):
        await store.read_verified(obj)
    obj.close()
    with pytest.raises(ObjectNotFound):
        store.open("ais/b", "c")
    assert await store.list_page("ais/b") == []
    assert len(list((path.parents[4] / "quarantine").iterdir())) == 1


async def test_large_object_verify_detects_bit_rot(store, tmp_path):
    data = os.urandom(2 << 20)
    await store.put("ais/b", "big", chunks(data))
    [path] = object_files(tmp_path)
    with open(path, "r+b") as f:
        f.seek(1 << 20)
        f.write(bytes([data[1 << 20] ^ 0xFF]))  # a byte that surely differs
    obj = store.open("ais/b", "big")
    with pytest.raises(ObjectCorrupted):
        await store.verify(obj)
    obj.close()


async def test_hot_cache_serves_verified_bytes_and_drops_on_write(store):
    await store.put("ais/b", "h", chunks(b"v1"))
    epoch = store.write_epoch("ais/b", "h")
    obj = store.open("ais/b", "h")
    assert await store.read_verified(obj, epoch) == b"v1"
    obj.close()
    assert store.cached("ais/b", "h")[1] == b"v1"
    await store.put("ais/b", "h", chunks(b"v2"))
    assert store.cached("ais/b", "h") is None
    await store.delete("ais/b", "h")
    assert store.cached("ais/b", "h") is None


async def test_read_racing_a_write_never_caches_the_old_version(store):
    await store.put("ais/b", "r", chunks(b"old"))
    epoch = store.write_epoch("ais/b", "r")
    obj = store.open("ais/b", "r")          # a reader opened the old version...
    await store.put("ais/b", "r", chunks(b"new"))  # ...then a write landed
    assert await store.read_verified(obj, epoch) == b"old"  # it still reads its own inode
    obj.close()
    assert store.cached("ais/b", "r") is None  # but must not publish it


async def test_delete_and_not_found(store):
    await store.put("ais/b", "d", chunks(b"1"))
    await store.delete("ais/b", "d")
    with pytest.raises(ObjectNotFound):
        await store.delete("ais/b", "d")
    with pytest.raises(FileNotFoundError):
        store.open("ais/b", "d")


async def test_destroy_bucket_removes_only_that_bucket(store, tmp_path):
    for i in range(10):
        await store.put("ais/gone", f"g{i}", chunks(b"g"))
        await store.put("ais/kept", f"k{i}", chunks(b"k"))
    await store.destroy_bucket("ais/gone")
    assert await store.list_page("ais/gone") == []
    assert len(await store.list_page("ais/kept")) == 10
    with pytest.raises(ObjectNotFound):
        store.open("ais/gone", "g0")
    await store.put("ais/gone", "g0", chunks(b"again"))  # a re-created bucket works at once
    assert await read_all(store, "ais/gone", "g0") == b"again"


async def test_index_is_rebuilt_after_an_unclean_stop(tmp_path):
    mps = [tmp_path / "mp0", tmp_path / "mp1"]
    s = ObjectStore(mps, tmp_path / "index.db")
    await s.start()
    for i in range(25):
        await s.put("ais/b", f"n{i:02d}", chunks(b"x" * i))
    # Simulate a crash between rename and index update: drop rows behind the store's back.
    s.index._writer.execute("DELETE FROM objects WHERE name >= ?", (b"n20",))
    assert len(await s.list_page("ais/b")) == 20
    s._io.shutdown()
    s._index_writer.shutdown()  # no clean close: the dirty marker stays
    s2 = ObjectStore(mps, tmp_path / "index.db")
    await s2.start()
    assert s2.rebuilt_objects == 25
    assert [e.name for e in await s2.list_page("ais/b")] == [f"n{i:02d}" for i in range(25)]
    assert await s2.summary("ais/b") == (25, sum(range(25)))
    await s2.stop()
    s3 = ObjectStore(mps, tmp_path / "index.db")
    await s3.start()
    assert s3.rebuilt_objects is None  # a clean stop needs no rebuild
    await s3.stop()


async def test_start_clears_leftover_temp_files(tmp_path):
    (tmp_path / "mp0" / "tmp").mkdir(parents=True)
    leftover = tmp_path / "mp0" / "tmp" / "dead-put"
    leftover.write_bytes(b"partial")
    s = ObjectStore([tmp_path / "mp0"], tmp_path / "index.db")
    await s.start()
    assert not leftover.exists()
    await s.stop()


async def test_listing_pages_with_prefix_and_token(store):
    names = ["a", "a/1", "a/2", "ab", "b", "ü", "ü/x"]
    for n in names:
        await store.put("ais/b", n, chunks(b"."))
    assert [e.name for e in await store.list_page("ais/b", "a/")] == ["a/1", "a/2"]
    assert [e.name for e in await store.list_page("ais/b", "", "ab", 2)] == ["b", "ü"]
    assert [e.name for e in await store.list_page("ais/b", "ü")] == ["ü", "ü/x"]
    assert [e.name for e in await store.list_page("ais/b", "a", "a/2")] == ["ab"]
