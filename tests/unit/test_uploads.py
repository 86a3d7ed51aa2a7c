"""Multipart uploads on a real object store (files, xattrs, two mountpaths): parts, listing,
complete with the S3 ETag, the S3 error cases, abort, restart, expiry, bucket destroy, races."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import xxhash

from aisync.storage.objects import ObjectStore
from aisync.storage.uploads import MAX_AGE, MIN_PART_SIZE, Uploads, multipart_etag
from aisync.util.errors import (
    BackendUnavailable,
    ChecksumMismatch,
    EntityTooSmall,
    IncompleteBody,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    ObjectCorrupted,
    ObjectNotFound,
    UploadNotFound,
)

B = "ais/bkt"
BIG = MIN_PART_SIZE + 7  # every part but the last must reach the S3 minimum


async def chunks(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def open_store(tmp_path: Path) -> ObjectStore:
    return ObjectStore([tmp_path / "mp0", tmp_path / "mp1"], tmp_path / "index.db")


@pytest.fixture
async def store(tmp_path):
    s = open_store(tmp_path)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def uploads(store):
    return Uploads(store)


async def read_all(store: ObjectStore, bucket: str, name: str) -> bytes:
    obj = store.open(bucket, name)
    try:
        return os.pread(obj.fd, obj.size + 1, 0)
    finally:
        obj.close()


async def put(uploads: Uploads, name: str, upload_id: str, number: int, data: bytes, **kw):
    return await uploads.put_part(B, name, upload_id, number, chunks(data), size=len(data), **kw)


def reference_etag(parts: list[bytes]) -> str:
    """The S3 multipart ETag, computed independently."""
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


def leftovers(tmp_path: Path, sub: str) -> list[Path]:
    return [p for mp in ("mp0", "mp1") for p in (tmp_path / mp / sub).rglob("*") if p.is_file()]


async def test_create_part_list_complete(store, uploads, tmp_path):
    name = "ckpt/step-100.pt"
    up = await uploads.create(B, name, {"type": "application/x-tar", "meta": {"k": "v"}})
    assert len(up.upload_id) == 32 and int(up.upload_id, 16) >= 0
    assert up.upload_id != (await uploads.create(B, name)).upload_id
    home = store.ranked_mountpaths(B, name)[0]  # where the object will live
    record = json.loads((home.uploads / B / up.upload_id / "upload.json").read_text())
    assert (record["bucket"], record["name"], record["attrs"]["type"]) == (
        B, name, "application/x-tar")

    data = [os.urandom(BIG), os.urandom(MIN_PART_SIZE), os.urandom(1000)]
    for number in (3, 1, 2):  # any order
        part = await put(uploads, name, up.upload_id, number, data[number - 1])
        assert (part.number, part.size) == (number, len(data[number - 1]))
        assert part.etag == hashlib.md5(data[number - 1]).hexdigest()
    info, parts = await uploads.get(B, name, up.upload_id)
    assert info.attrs["meta"] == {"k": "v"}
    assert [(p.number, p.etag, p.size) for p in parts] == [
        (i + 1, hashlib.md5(d).hexdigest(), len(d)) for i, d in enumerate(data)]
    assert all(abs(p.last_modified - time.time()) < 60 for p in parts)

    meta = await uploads.complete(B, name, up.upload_id,
                                  [(p.number, f'"{p.etag}"') for p in parts])  # quotes ignored
    whole = b"".join(data)
    assert await read_all(store, B, name) == whole
    assert meta.size == len(whole)
    assert meta.checksum == f"xxh3:{xxhash.xxh3_64_hexdigest(whole)}"
    assert meta.attrs["etag"] == reference_etag(data) == multipart_etag([p.etag for p in parts])
    assert meta.attrs["type"] == "application/x-tar"
    assert store.open(B, name).meta.attrs == meta.attrs  # on the inode too
    assert (await store.list_page(B))[0].attrs["etag"] == meta.attrs["etag"]  # and indexed
    with pytest.raises(UploadNotFound):
        await uploads.get(B, name, up.upload_id)
    assert not (home.uploads / B / up.upload_id).exists()
    assert leftovers(tmp_path, "tmp") == [] and leftovers(tmp_path, "trash") == []


async def test_complete_takes_only_listed_parts_and_a_replaced_part_wins(store, uploads):
    up = await uploads.create(B, "x")
    first, old, new, unused = (os.urandom(BIG), os.urandom(5000), os.urandom(7000),
                               os.urandom(10))
    await put(uploads, "x", up.upload_id, 1, first)
    await put(uploads, "x", up.upload_id, 2, unused)
    await put(uploads, "x", up.upload_id, 3, old)
    await put(uploads, "x", up.upload_id, 3, new)  # replaced atomically
    _, parts = await uploads.get(B, "x", up.upload_id)
    assert [p.etag for p in parts][2] == hashlib.md5(new).hexdigest()
    with pytest.raises(InvalidPart):  # the old ETag no longer names part 3
        await uploads.complete(B, "x", up.upload_id, [(1, parts[0].etag),
                                                      (3, hashlib.md5(old).hexdigest())])
    meta = await uploads.complete(B, "x", up.upload_id, [(1, parts[0].etag),
                                                         (3, parts[2].etag.upper())])
    assert await read_all(store, B, "x") == first + new
    assert meta.attrs["etag"] == reference_etag([first, new])


async def test_single_small_part_and_empty_part(store, uploads):
    for data in (b"tiny", b""):
        up = await uploads.create(B, "one")
        part = await put(uploads, "one", up.upload_id, 7, data)
        meta = await uploads.complete(B, "one", up.upload_id, [(7, part.etag)])
        assert await read_all(store, B, "one") == data
        assert meta.attrs["etag"] == reference_etag([data])


async def test_complete_errors_leave_the_upload_intact(store, uploads):
    up = await uploads.create(B, "e")
    big, small = os.urandom(BIG), os.urandom(100)
    p1 = await put(uploads, "e", up.upload_id, 1, big)
    p2 = await put(uploads, "e", up.upload_id, 2, small)
    p3 = await put(uploads, "e", up.upload_id, 3, small)
    with pytest.raises(InvalidPartOrder):
        await uploads.complete(B, "e", up.upload_id, [(2, p2.etag), (1, p1.etag)])
    with pytest.raises(InvalidPartOrder):  # repeated: not strictly ascending
        await uploads.complete(B, "e", up.upload_id, [(1, p1.etag), (1, p1.etag)])
    with pytest.raises(InvalidPart):
        await uploads.complete(B, "e", up.upload_id, [(1, p1.etag), (4, p2.etag)])
    with pytest.raises(InvalidPart):
        await uploads.complete(B, "e", up.upload_id, [(1, p2.etag), (2, p2.etag)])
    with pytest.raises(EntityTooSmall) as exc:  # part 2 is not last and below 5 MiB
        await uploads.complete(B, "e", up.upload_id, [(1, p1.etag), (2, p2.etag), (3, p3.etag)])
    assert exc.value.details["part"] == 2 and exc.value.status == 400
    with pytest.raises(InvalidArgument):
        await uploads.complete(B, "e", up.upload_id, [])
    with pytest.raises(ObjectNotFound):  # nothing was committed
        store.open(B, "e")
    _, parts = await uploads.get(B, "e", up.upload_id)
    assert [p.number for p in parts] == [1, 2, 3]
    await uploads.complete(B, "e", up.upload_id, [(1, p1.etag), (2, p2.etag)])
    assert await read_all(store, B, "e") == big + small


async def test_part_errors(store, uploads, tmp_path):
    up = await uploads.create(B, "p")
    good = await put(uploads, "p", up.upload_id, 1, b"good")
    with pytest.raises(ChecksumMismatch):
        await put(uploads, "p", up.upload_id, 1, b"evil", md5=hashlib.md5(b"other").hexdigest())
    await put(uploads, "p", up.upload_id, 2, b"ok", md5=hashlib.md5(b"ok").hexdigest())
    with pytest.raises(IncompleteBody):
        await uploads.put_part(B, "p", up.upload_id, 1, chunks(b"short"), size=10)
    for number in (0, 10001):
        with pytest.raises(InvalidArgument):
            await put(uploads, "p", up.upload_id, number, b"x")
    _, parts = await uploads.get(B, "p", up.upload_id)
    assert [(p.number, p.etag) for p in parts] == [(1, good.etag),
                                                   (2, hashlib.md5(b"ok").hexdigest())]
    for bad in ("0" * 32, "../../objects", up.upload_id.upper(), ""):
        with pytest.raises(UploadNotFound):
            await put(uploads, "p", bad, 1, b"x")
    with pytest.raises(UploadNotFound):  # an upload id names one object only
        await uploads.get(B, "other-name", up.upload_id)
    with pytest.raises(UploadNotFound):
        await uploads.get("ais/other-bucket", "p", up.upload_id)
    assert leftovers(tmp_path, "tmp") == []


async def test_abort(store, uploads, tmp_path):
    up = await uploads.create(B, "a")
    await put(uploads, "a", up.upload_id, 1, os.urandom(1000))
    await uploads.abort(B, "a", up.upload_id)
    for call in (uploads.abort(B, "a", up.upload_id), uploads.get(B, "a", up.upload_id),
                 put(uploads, "a", up.upload_id, 2, b"late"),
                 uploads.complete(B, "a", up.upload_id, [(1, "0" * 32)])):
        with pytest.raises(UploadNotFound):
            await call
    assert leftovers(tmp_path, "uploads") == [] and leftovers(tmp_path, "tmp") == []


async def test_uploads_survive_a_restart(tmp_path):
    store = open_store(tmp_path)
    await store.start()
    uploads = Uploads(store)
    up = await uploads.create(B, "r", {"type": "text/plain"})
    data = [os.urandom(BIG), os.urandom(3)]
    for i, d in enumerate(data, 1):
        await put(uploads, "r", up.upload_id, i, d)
    await store.stop()

    store = open_store(tmp_path)  # the same disks, a new process's view
    await store.start()
    try:
        uploads = Uploads(store)
        assert [u.upload_id for u in await uploads.list_bucket(B)] == [up.upload_id]
        info, parts = await uploads.get(B, "r", up.upload_id)
        assert (info.initiated, info.attrs) == (up.initiated, {"type": "text/plain"})
        meta = await uploads.complete(B, "r", up.upload_id, [(p.number, p.etag) for p in parts])
        assert await read_all(store, B, "r") == b"".join(data)
        assert meta.attrs == {"type": "text/plain", "etag": reference_etag(data)}
    finally:
        await store.stop()


async def test_list_bucket_sorted_and_filtered(uploads):
    made = [await uploads.create(B, n) for n in ("b/2", "a", "b/1", "a", "é", "z")]
    await uploads.create("ais/elsewhere", "b/3")
    listed = await uploads.list_bucket(B)
    expected = sorted(made, key=lambda u: (u.name.encode(), u.initiated))
    assert [(u.name, u.upload_id) for u in listed] == [(u.name, u.upload_id) for u in expected]
    assert [u.name for u in await uploads.list_bucket(B, "b/")] == ["b/1", "b/2"]
    assert listed[0].summary() == {"name": "a", "upload_id": expected[0].upload_id,
                                   "initiated": expected[0].initiated}
    assert await uploads.list_bucket("ais/none") == []


async def test_gc_sweep_removes_only_expired_uploads(uploads, store):
    old = await uploads.create(B, "old")
    await put(uploads, "old", old.upload_id, 1, b"x")
    nsb = await uploads.create("ais/@peer/bkt", "n")  # a namespaced bucket's layout too
    fresh = await uploads.create(B, "fresh")
    for up in (old, nsb):  # initiated 8 days ago, as far as the disk says
        path = store.ranked_mountpaths(up.bucket, up.name)[0].uploads / up.bucket / up.upload_id
        record = json.loads((path / "upload.json").read_text())
        record["initiated"] -= 8 * 24 * 3600
        (path / "upload.json").write_text(json.dumps(record))
    assert await uploads.sweep(now=time.time() - 2 * 24 * 3600) == []
    removed = await uploads.sweep(now=time.time())
    assert {u.upload_id for u in removed} == {old.upload_id, nsb.upload_id}
    assert [u.upload_id for u in await uploads.list_bucket(B)] == [fresh.upload_id]
    with pytest.raises(UploadNotFound):
        await uploads.get(B, "old", old.upload_id)
    assert await uploads.sweep(now=fresh.initiated + MAX_AGE - 1) == []
    removed = await uploads.sweep(now=fresh.initiated + MAX_AGE + 1)
    assert [u.upload_id for u in removed] == [fresh.upload_id]
    assert await uploads.list_bucket(B) == []


async def test_destroying_the_bucket_drops_its_uploads(store, uploads):
    up = await uploads.create(B, "d")
    await put(uploads, "d", up.upload_id, 1, b"x")
    kept = await uploads.create("ais/kept", "d")
    await store.destroy_bucket(B)
    with pytest.raises(UploadNotFound):
        await uploads.get(B, "d", up.upload_id)
    assert await uploads.list_bucket(B) == []
    assert (await uploads.get("ais/kept", "d", kept.upload_id))[0].name == "d"


async def test_write_through_failure_commits_nothing_and_keeps_the_upload(store, uploads):
    up = await uploads.create(B, "w", {"type": "text/csv"})
    part = await put(uploads, "w", up.upload_id, 1, b"a,b\n")
    seen = []

    async def failing(temp: Path, attrs: dict) -> dict:
        raise BackendUnavailable("the source is down")

    async def working(temp: Path, attrs: dict) -> dict:
        seen.append((temp.read_bytes(), attrs))
        return {"etag": "from-source"}

    with pytest.raises(BackendUnavailable):
        await uploads.complete(B, "w", up.upload_id, [(1, part.etag)], write_through=failing)
    with pytest.raises(ObjectNotFound):
        store.open(B, "w")
    meta = await uploads.complete(B, "w", up.upload_id, [(1, part.etag)], write_through=working)
    assert seen == [(b"a,b\n", {"type": "text/csv", "etag": reference_etag([b"a,b\n"])})]
    assert meta.source == {"etag": "from-source"}
    assert await read_all(store, B, "w") == b"a,b\n"


async def test_a_rotten_part_is_never_committed(store, uploads):
    up = await uploads.create(B, "rot")
    data = os.urandom(BIG)
    part = await put(uploads, "rot", up.upload_id, 1, data)
    home = store.ranked_mountpaths(B, "rot")[0]
    with open(home.uploads / B / up.upload_id / "part-00001", "r+b") as f:
        f.seek(12345)
        f.write(bytes([data[12345] ^ 1]))
    with pytest.raises(ObjectCorrupted):
        await uploads.complete(B, "rot", up.upload_id, [(1, part.etag)])
    with pytest.raises(ObjectNotFound):
        store.open(B, "rot")
    await put(uploads, "rot", up.upload_id, 1, data)  # sent again: completes
    await uploads.complete(B, "rot", up.upload_id, [(1, part.etag)])
    assert await read_all(store, B, "rot") == data


async def test_racing_completes_and_abort_have_one_winner(store, uploads):
    for rivals in ("complete", "abort"):
        up = await uploads.create(B, "race")
        data = os.urandom(BIG)
        part = await put(uploads, "race", up.upload_id, 1, data)
        first = uploads.complete(B, "race", up.upload_id, [(1, part.etag)])
        second = (uploads.complete(B, "race", up.upload_id, [(1, part.etag)])
                  if rivals == "complete" else uploads.abort(B, "race", up.upload_id))
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(results[1], UploadNotFound), results  # the first holds the lock
        assert results[0].size == len(data)
        assert await read_all(store, B, "race") == data
        # the other order: the abort wins, the complete finds nothing
        up = await uploads.create(B, "race2")
        part = await put(uploads, "race2", up.upload_id, 1, b"z")
        results = await asyncio.gather(uploads.abort(B, "race2", up.upload_id),
                                       uploads.complete(B, "race2", up.upload_id,
                                                        [(1, part.etag)]),
                                       return_exceptions=True)
        assert results[0] is None and isinstance(results[1], UploadNotFound)
        with pytest.raises(ObjectNotFound):
            store.open(B, "race2")
