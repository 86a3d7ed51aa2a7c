"""The object store of one target: atomic streaming writes, zero-copy friendly reads, deletes.

Write path (``put``): chunks are hashed (xxh3) as they arrive and written to a temp file on the
chosen mountpath by a thread (double-buffered, so receiving and writing overlap and at most two
1 MiB buffers are held); ``commit`` then, in one thread hop, fsyncs the file, sets the metadata
xattr, renames it into place and fsyncs the directory. Only then is the index updated and the
PUT acknowledged. A crash at any point leaves either the old object or the new one, plus garbage
in ``tmp/`` that the next start removes.

Read path (``open``): open + fstat + getxattr on the event loop (metadata calls served from the
kernel's caches); small objects are read with ``preadv(RWF_NOWAIT)`` (page-cache hit, never
blocks; falls back to the I/O pool on a miss) and verified against their checksum on every read;
large objects are handed to the HTTP layer as an open file for ``sendfile``.

Concurrent writers of one object are serialized by striped locks around rename + index update,
so the index always describes the file that won.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import xxhash

from aisync.storage.index import IndexEntry, ObjectIndex
from aisync.storage.metadata import (
    ObjectMetadata,
    checksum_of,
    format_checksum,
    new_hasher,
    read_metadata,
    write_metadata,
)
from aisync.storage.mountpath import DiskUsage, Mountpath
from aisync.util import hrw
from aisync.util.errors import (
    ChecksumMismatch,
    IncompleteBody,
    InvalidArgument,
    ObjectCorrupted,
    ObjectNotFound,
    PayloadTooLarge,
)

WRITE_BUFFER = 1 << 20
_LOCK_STRIPES = 256


@dataclass(slots=True)
class OpenObject:
    """An object opened for reading. The caller owns ``fd`` and must close it."""

    fd: int
    meta: ObjectMetadata
    path: str
    mountpath: Mountpath

    @property
    def size(self) -> int:
        return self.meta.size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class HotCache:
    """A bounded LRU of small objects' verified bytes, keyed by (bucket, name).

    Entries are immutable ``(metadata, bytes)`` pairs. Every write or delete of an object bumps its
    lock stripe's counter and drops the entry under the object's lock; a reader that loaded bytes
    from disk inserts them only if its stripe's counter did not move meanwhile, so a read racing
    a write can never leave an old version in the cache.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.size = 0
        self._entries: OrderedDict[tuple[str, str], tuple[ObjectMetadata, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> tuple[ObjectMetadata, bytes] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: tuple[str, str], meta: ObjectMetadata, data: bytes) -> None:
        if len(data) > self.capacity:
            return
        self.drop(key)
        self._entries[key] = (meta, data)
        self.size += len(data)
        while self.size > self.capacity:
            _, (_, old) = self._entries.popitem(last=False)
            self.size -= len(old)

    def drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= len(entry[1])

    def drop_bucket(self, bucket: str) -> None:
        for key in [k for k in self._entries if k[0] == bucket]:
            self.drop(key)


class MountpathReader:
    """Placement on mountpaths, ``open`` and verified whole-object reads: what readers share.

    The writer (:class:`ObjectStore`) and a read worker's view (``aisync.storage.reader``) both
    build on this, so they always agree on where an object lives.
    """

    def __init__(self, mountpaths: list[Path], io_threads: int = 8) -> None:
        if not mountpaths:
            raise InvalidArgument("a target needs at least one mountpath")
        self.mountpaths = [Mountpath(p) for p in mountpaths]
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="aisync-io")
        self._seeded: tuple[tuple[int, str], ...] = ()
        self._by_id: dict[str, Mountpath] = {}

    def _index_mountpaths(self) -> None:
        self._by_id = {mp.id: mp for mp in self.mountpaths}
        self._seeded = tuple((hrw.node_seed(mp.id), mp.id) for mp in self.mountpaths)

    async def run_io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def ranked_mountpaths(self, bucket: str, name: str) -> list[Mountpath]:
        if len(self.mountpaths) == 1:
            return self.mountpaths
        return [self._by_id[i] for i in hrw.rank(f"{bucket}/{name}", self._seeded)]

    def open(self, bucket: str, name: str) -> OpenObject:
        """Open the current version of an object. Raises :class:`ObjectNotFound`."""
        for mp in self.ranked_mountpaths(bucket, name):
            path = mp.object_path(bucket, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            meta = read_metadata(fd)
            if meta is None or meta.name != name or meta.bucket != bucket:
                os.close(fd)
                continue
            return OpenObject(fd=fd, meta=meta, path=path, mountpath=mp)
        raise ObjectNotFound(f"{bucket}/{name}: no such object")

    async def read_checked(self, obj: OpenObject) -> bytes | None:
        """The whole object if its bytes match its checksum, else None (corrupted)."""
        size = obj.size
        data = _read_nowait(obj.fd, size)
        if data is None:
            data = await self.run_io(os.pread, obj.fd, size, 0)
        if len(data) != size or checksum_of(data) != obj.meta.checksum:
            return None
        return data


class ObjectWriter:
    """One in-flight write: chunks are hashed and written to a temp file (double-buffered in the
    I/O pool, at most two 1 MiB buffers held); ``finish`` checks size and checksum; ``commit``
    makes it the object's current version (fsync, xattr, rename, fsync dir, index), and
    ``abort`` (always safe to call, a no-op after commit) removes the temp file.

    ``written`` counts the bytes already in the temp file, so readers may follow it while it
    grows (a cold GET streams to its clients this way).
    """

    def __init__(self, store: ObjectStore, bucket: str, name: str, max_size: int | None,
                 md5: bool = False, mountpath: Mountpath | None = None) -> None:
        self.store, self.bucket, self.name, self.max_size = store, bucket, name, max_size
        self.mountpath = mountpath or store.ranked_mountpaths(bucket, name)[0]
        self.temp = self.mountpath.temp_path()
        # Created in the I/O pool on first use (:meth:`open`): creating a file can wait on the
        # filesystem journal behind other writers' fsyncs, which must not stall the event loop.
        self._fd = -1
        self._opening: asyncio.Future | None = None  # the creation, once started
        self._hasher = new_hasher()  # updated in the I/O thread, with the write
        self._md5 = hashlib.md5() if md5 else None  # what S3 clients expect as the ETag
        self.md5: str | None = None
        self._buffer = bytearray()
        self._pending: asyncio.Future | None = None
        self.size = 0
        self.written = 0
        self.checksum: str | None = None
        self.done = False

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.max_size is not None and self.size > self.max_size:
            raise PayloadTooLarge(f"object exceeds {self.max_size} bytes")
        if not self._buffer and len(chunk) >= WRITE_BUFFER:
            await self._flush_buffer(chunk)  # big chunk: no copy through the buffer
            return
        self._buffer += chunk
        if len(self._buffer) >= WRITE_BUFFER:
            await self._flush_buffer()

    async def _settle(self) -> None:
        """Wait for the in-flight write (and its hashing) to end."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def open(self) -> None:
        """Create the temp file (in the I/O pool); idempotent, implied by the first write."""
        if self._opening is None:
            self._opening = asyncio.get_running_loop().run_in_executor(
                self.store._io, _create_temp, self.temp)
            self._fd = await asyncio.shield(self._opening)

    async def _flush_buffer(self, chunk: bytes | None = None) -> None:
        await self._settle()
        data = chunk
        if data is None and self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
        if data and self._opening is None:
            # the first bytes: create the file and write them in one trip to the I/O pool (a
            # small object's whole body, so a small PUT costs two trips: this and the commit)
            self._opening = asyncio.get_running_loop().run_in_executor(
                self.store._io, _create_and_write, self.temp, data, self._hasher, self._md5)
            self._fd = await asyncio.shield(self._opening)
            self.written += len(data)
            return
        await self.open()
        if data:
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(self.store._io, _hash_and_write, self._fd,
                                                 data, self._hasher, self._md5)
            self._pending.add_done_callback(functools.partial(self._count, n=len(data)))

    def _count(self, future: asyncio.Future, n: int) -> None:
        if not future.cancelled() and future.exception() is None:
            self.written += n

    async def finish(self, expected_size: int | None = None,
                     expected_checksum: str | None = None) -> None:
        """All bytes are in the temp file; check them against what the sender declared."""
        await self._flush_buffer()
        await self._settle()
        if expected_size is not None and self.size != expected_size:
            raise IncompleteBody(f"received {self.size} of {expected_size} bytes")
        self.checksum = format_checksum(self._hasher)
        if self._md5 is not None:
            self.md5 = self._md5.hexdigest()
        if expected_checksum is not None and expected_checksum != self.checksum:
            raise ChecksumMismatch(
                f"checksum {self.checksum} does not match the declared {expected_checksum}")

    async def commit(self, source: dict | None = None, origin: dict | None = None,
                     attrs: dict | None = None) -> ObjectMetadata:
        """Make the finished temp file the object's current version; returns its metadata."""
        assert self.checksum is not None, "finish() first"
        store, bucket, name = self.store, self.bucket, self.name
        loop = asyncio.get_running_loop()
        meta = ObjectMetadata(bucket=bucket, name=name, size=self.size, checksum=self.checksum,
                              mtime_ns=time.time_ns(), source=source, origin=origin,
                              attrs=attrs or None)
        final = self.mountpath.object_path(bucket, name)
        async with store._lock(bucket, name):
            # A copy on another mountpath (left from before mountpaths changed) goes too.
            stale = [m.object_path(bucket, name)
                     for m in store.ranked_mountpaths(bucket, name)[1:]]
            fd, self._fd = self._fd, -1
            await loop.run_in_executor(store._io, store._commit, fd, b"", meta, self.temp,
                                       final, stale)
            self.done = True
            store._changed(bucket, name)
            await loop.run_in_executor(store._index_writer, store.index.upsert, meta)
        return meta

    def detach(self) -> int:
        """After :meth:`finish`, for a file that becomes something other than an object (a
        multipart part): the caller takes the open temp file's descriptor, and must close it
        and rename (or remove) ``temp`` itself; :meth:`abort` then only removes a leftover."""
        assert self.checksum is not None, "finish() first"
        fd, self._fd = self._fd, -1
        return fd

    async def abort(self) -> None:
        try:
            await self._settle()
        except OSError:
            pass
        if self._fd < 0 and self._opening is not None and not self.done:
            try:  # an open interrupted by cancellation still creates the file: close it
                self._fd = await self._opening
            except OSError:
                pass
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self.done:
            self.done = True
            await asyncio.get_running_loop().run_in_executor(self.store._io, _unlink_quiet,
                                                             self.temp)


class ObjectStore(MountpathReader):
    def __init__(self, mountpaths: list[Path], index_path: Path, *, fsync: bool = True,
                 io_threads: int = 8, hot_cache_bytes: int = 256 << 20) -> None:
        super().__init__(mountpaths, io_threads)
        self.index = ObjectIndex(index_path)
        self.fsync = fsync
        self._index_writer = ThreadPoolExecutor(1, thread_name_prefix="aisync-index")
        self._locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]
        self._stripe_writes = [0] * _LOCK_STRIPES
        self.hot = HotCache(hot_cache_bytes)
        self._known_dirs: set[str] = set()
        self.rebuilt_objects: int | None = None

    # -- lifecycle --
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for mp in self.mountpaths:
            await loop.run_in_executor(self._io, mp.open)
        self._index_mountpaths()
        needs_rebuild = await loop.run_in_executor(self._index_writer, self.index.open)
        if needs_rebuild:
            self.rebuilt_objects = await loop.run_in_executor(
                self._index_writer, self.index.rebuild, [mp.objects for mp in self.mountpaths])

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._index_writer, self.index.close)
        self._io.shutdown(wait=True)
        self._index_writer.shutdown(wait=True)

    @staticmethod
    def _stripe(bucket: str, name: str) -> int:
        key = f"{bucket}/{name}".encode("utf-8", "surrogatepass")
        return xxhash.xxh3_64_intdigest(key) % _LOCK_STRIPES

    def _lock(self, bucket: str, name: str) -> asyncio.Lock:
        return self._locks[self._stripe(bucket, name)]

    def _changed(self, bucket: str, name: str) -> None:
        """Call under the object's lock whenever its bytes change or vanish."""
        self._stripe_writes[self._stripe(bucket, name)] += 1
        self.hot.drop((bucket, name))

    # -- writes --
    def writer(self, bucket: str, name: str, *, max_size: int | None = None,
               md5: bool = False) -> ObjectWriter:
        """Start writing a new version of an object (see :class:`ObjectWriter`); ``md5`` also
        computes the MD5 of the content (``writer.md5`` after ``finish``)."""
        return ObjectWriter(self, bucket, name, max_size, md5)

    async def put(self, bucket: str, name: str, chunks: AsyncIterable[bytes], *,
                  expected_size: int | None = None, expected_checksum: str | None = None,
                  max_size: int | None = None, source: dict | None = None) -> ObjectMetadata:
        """Store an object from a stream of chunks; returns its metadata once durable."""
        if max_size is not None and expected_size is not None and expected_size > max_size:
            raise PayloadTooLarge(f"object of {expected_size} bytes exceeds {max_size}")
        w = self.writer(bucket, name, max_size=max_size)
        try:
            async for chunk in chunks:
                await w.write(chunk)
            await w.finish(expected_size, expected_checksum)
            return await w.commit(source)
        finally:
            await w.abort()

    def _commit(self, fd: int, tail: bytes, meta: ObjectMetadata, temp: Path,
                final_path: str, stale: list[str]) -> None:
        try:
            if tail:
                _write_all(fd, tail)
            write_metadata(fd, meta)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        final = Path(final_path)
        parent = str(final.parent)
        if parent not in self._known_dirs:
            os.makedirs(parent, exist_ok=True)
            if self.fsync:
                _fsync_dir(final.parent.parent)
                _fsync_dir(final.parent.parent.parent)
            self._known_dirs.add(parent)
        os.rename(temp, final)
        if self.fsync:
            _fsync_dir(final.parent)
        for path in stale:
            _unlink_quiet(path)

    async def delete(self, bucket: str, name: str) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock(bucket, name):
            self._changed(bucket, name)
            found = False
            for mp in self.ranked_mountpaths(bucket, name):
                found |= await loop.run_in_executor(
                    self._io, self._unlink_durable, mp.object_path(bucket, name), name)
            await loop.run_in_executor(self._index_writer, self.index.remove, bucket, name)
        if not found:
            raise ObjectNotFound(f"{bucket}/{name}: no such object")

    def _unlink_durable(self, path: str, name: str) -> bool:
        meta = read_metadata(path)
        if meta is None or meta.name != name:
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        if self.fsync:
            _fsync_dir(os.path.dirname(path))
        return True

    # -- reads --
    def cached(self, bucket: str, name: str) -> tuple[ObjectMetadata, bytes] | None:
        """A small object's metadata and verified bytes from memory, if they are there."""
        return self.hot.get((bucket, name))

    def write_epoch(self, bucket: str, name: str) -> int:
        """Take before ``open``; pass to :meth:`read_verified` so it may fill the cache."""
        return self._stripe_writes[self._stripe(bucket, name)]

    async def read_verified(self, obj: OpenObject, epoch: int | None = None) -> bytes:
        """Read a small object whole and verify its checksum (quarantine on mismatch).

        With the ``epoch`` taken before the object was opened, the verified bytes enter the hot
        cache unless a write to the object happened since.
        """
        data = await self.read_checked(obj)
        if data is None:
            await self.quarantine(obj)
            raise ObjectCorrupted(f"{obj.meta.bucket}/{obj.meta.name}: stored bytes fail their "
                                  "checksum; the copy was quarantined")
        bucket, name = obj.meta.bucket, obj.meta.name
        if epoch is not None and epoch == self.write_epoch(bucket, name):
            self.hot.put((bucket, name), obj.meta, data)
        return data

    async def verify(self, obj: OpenObject) -> None:
        """Re-hash a whole object from disk; quarantine and raise on mismatch."""
        def _hash() -> tuple[str, int]:
            hasher, total, offset = new_hasher(), 0, 0
            while True:
                chunk = os.pread(obj.fd, WRITE_BUFFER, offset)
                if not chunk:
                    return format_checksum(hasher), total
                hasher.update(chunk)
                total += len(chunk)
                offset += len(chunk)
        checksum, total = await self.run_io(_hash)
        if checksum != obj.meta.checksum or total != obj.size:
            await self.quarantine(obj)
            raise ObjectCorrupted(f"{obj.meta.bucket}/{obj.meta.name}: stored bytes fail their "
                                  "checksum; the copy was quarantined")

    async def quarantine(self, obj: OpenObject) -> None:
        loop = asyncio.get_running_loop()
        bucket, name = obj.meta.bucket, obj.meta.name
        async with self._lock(bucket, name):
            self._changed(bucket, name)
            dest = obj.mountpath.quarantine / f"{os.path.basename(obj.path)}.{time.time_ns()}"
            try:
                await loop.run_in_executor(self._io, os.rename, obj.path, dest)
            except FileNotFoundError:
                return
            # not a deletion: peers following the change feed must not propagate it
            await loop.run_in_executor(self._index_writer,
                                       functools.partial(self.index.remove, bucket, name,
                                                         record=False))

    # -- listing and buckets --
    async def list_page(self, bucket: str, prefix: str = "", after: str | None = None,
                        limit: int = 1000) -> list[IndexEntry]:
        return await self.run_io(self.index.list_page, bucket, prefix, after, limit)

    async def changes_page(self, bucket: str, since: int, limit: int) -> tuple[list[dict], int,
                                                                               int]:
        """(changes after ``since`` that are safe to hand out, floor, safe bound): see
        :meth:`ObjectIndex.feed_bounds`. The bound comes first so that every change at or below
        it is committed before the page is read."""
        def read() -> tuple[list[dict], int, int]:
            floor, high = self.index.feed_bounds(bucket)
            page = [c for c in self.index.changes_page(bucket, since, limit) if c["seq"] <= high]
            safe = page[-1]["seq"] if len(page) == limit else high
            return page, floor, safe
        return await self.run_io(read)

    async def summary(self, bucket: str | None = None) -> tuple[int, int]:
        return await self.run_io(self.index.summary, bucket)

    async def destroy_bucket(self, bucket: str) -> None:
        """Remove a bucket's objects: directories move to trash at once, then are deleted."""
        loop = asyncio.get_running_loop()
        for mp in self.mountpaths:
            await loop.run_in_executor(self._io, mp.move_bucket_to_trash, bucket)
        self._known_dirs = {d for d in self._known_dirs if f"/{bucket}/" not in d + "/"}
        self._stripe_writes = [n + 1 for n in self._stripe_writes]
        self.hot.drop_bucket(bucket)
        await loop.run_in_executor(self._index_writer, self.index.remove_bucket, bucket)
        for mp in self.mountpaths:
            await loop.run_in_executor(self._io, mp.empty_trash)

    def disk_usage(self) -> list[DiskUsage]:
        return [mp.usage() for mp in self.mountpaths]


def _create_temp(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)


def _create_and_write(path: Path, data: bytes, hasher, md5=None) -> int:
    fd = _create_temp(path)
    try:
        _hash_and_write(fd, data, hasher, md5)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _hash_and_write(fd: int, data: bytes, hasher, md5=None) -> None:
    hasher.update(data)  # xxhash releases the GIL for large buffers, as does the write
    if md5 is not None:
        md5.update(data)  # so does hashlib
    _write_all(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_nowait(fd: int, size: int) -> bytes | None:
    """Read from the page cache without ever blocking; None if any byte is not cached."""
    if size == 0:
        return b""
    buf = bytearray(size)
    try:
        got = os.preadv(fd, [buf], 0, os.RWF_NOWAIT)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    if got != size:
        return None
    return bytes(buf)


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quiet(path: Path | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
