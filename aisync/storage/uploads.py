"""Multipart uploads (S3 semantics) on one target: parts kept on disk until complete or abort.

:class:`Uploads` owns this layout, on the mountpath where the final object will live
(``store.ranked_mountpaths(bucket, name)[0]``; lookups try every mountpath)::

    uploads/PROVIDER/[@NS/]BUCKET/<upload id: 32 hex>/
        upload.json    {"v", "bucket", "name", "upload_id", "attrs", "initiated"}
        part-00001 ... a part's bytes; xattr user.aisync.part = {"e": MD5 hex, "s": size, "c": xxh3}

Durability: an upload directory is built in ``tmp/`` and renamed into place (it exists whole or
not at all). A part streams into ``tmp/`` (MD5 and xxh3 computed in the I/O pool, at most two
1 MiB buffers held), gets its xattr, is fsynced and renamed over ``part-NNNNN``: sending a part
again replaces it atomically. Removal (complete, abort, GC) renames the directory into
``trash/`` first; destroying a bucket trashes its ``uploads/`` subtree with its objects
(:meth:`Mountpath.move_bucket_to_trash`). ``uploads/`` survives restarts; only locks live in
memory. One asyncio lock per upload id covers installing a part (the rename, not the transfer),
complete (all of it) and removal: two completes cannot both succeed, and a complete racing an
abort or a part sees the upload whole or not at all.

Complete streams the listed parts file by file, 1 MiB reads in the I/O pool, through an
:class:`ObjectWriter` (the object's xxh3 computed as for any PUT, no part ever held in memory),
re-checks each part's stored xxh3 on the way (bit rot: ``ObjectCorrupted``, nothing committed),
runs the optional write-through hook on the finished temp file, commits, and only then removes
the upload; any failure before commit leaves it for a retry. The object's ``etag`` attribute is
the S3 multipart ETag (:func:`multipart_etag`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aisync.storage.metadata import ObjectMetadata, format_checksum, new_hasher
from aisync.storage.mountpath import Mountpath
from aisync.storage.objects import (
    ObjectStore,
    ObjectWriter,
    _fsync_dir,
    _write_all,
)
from aisync.util.errors import (
    BucketNotFound,
    ChecksumMismatch,
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    ObjectCorrupted,
    PayloadTooLarge,
    UploadNotFound,
)

log = logging.getLogger("aisync.uploads")

#: S3's minimum size of every part but the last. Deliberately not configurable.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10000
#: Uploads initiated longer ago than this are removed by :meth:`Uploads.sweep`.
MAX_AGE = 7 * 24 * 3600.0
CHUNK = 1 << 20
UPLOAD_JSON = "upload.json"
PART_XATTR = "user.aisync.part"
_ID_RE = re.compile(r"[0-9a-f]{32}")
_PART_RE = re.compile(r"part-(\d{5})")

#: Called with the finished temp file and the object's attrs before commit; returns the
#: source's version token (a cached bucket's write-through) or None.
WriteThrough = Callable[[Path, dict], Awaitable[dict | None]]


@dataclass(frozen=True, slots=True)
class Upload:
    bucket: str  # BucketRef.uname
    name: str
    upload_id: str
    attrs: dict
    initiated: float  # seconds since the epoch

    def summary(self) -> dict:
        return {"name": self.name, "upload_id": self.upload_id, "initiated": self.initiated}


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    etag: str  # MD5 hex of the part's bytes
    size: int
    checksum: str  # xxh3, re-checked at complete
    last_modified: float

    def as_dict(self) -> dict:
        return {"part": self.number, "etag": self.etag, "size": self.size,
                "last_modified": self.last_modified}


def multipart_etag(md5_hexes: list[str]) -> str:
    """The S3 ETag of a multipart object: MD5 of the parts' binary MD5s, ``-``, part count."""
    digest = hashlib.md5(b"".join(bytes.fromhex(h) for h in md5_hexes)).hexdigest()
    return f"{digest}-{len(md5_hexes)}"


def check_part_number(number: int) -> None:
    if not 1 <= number <= MAX_PARTS:
        raise InvalidArgument(f"part numbers go from 1 to {MAX_PARTS}, not {number}")


class Uploads:
    """The multipart uploads of one target's store (see the module docstring)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._locks: dict[str, list] = {}  # upload id -> [lock, users]

    @contextlib.asynccontextmanager
    async def _locked(self, upload_id: str):
        entry = self._locks.get(upload_id)
        if entry is None:
            entry = self._locks[upload_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[upload_id]

    # -- lookup --
    def _find(self, bucket: str, name: str, upload_id: str) -> tuple[Mountpath, Path, Upload]:
        """Where an upload lives (any mountpath, the object's own first). Blocking."""
        if _ID_RE.fullmatch(upload_id):
            for mp in self.store.ranked_mountpaths(bucket, name):
                path = mp.uploads / bucket / upload_id
                upload = _read_upload(path)
                if upload is not None and upload.bucket == bucket and upload.name == name:
                    return mp, path, upload
        raise UploadNotFound(f"{bucket}/{name}: no upload {upload_id!r} in progress")

    async def find(self, bucket: str, name: str, upload_id: str) -> Upload | None:
        """The upload if this store holds it, else None."""
        try:
            return (await self.store.run_io(self._find, bucket, name, upload_id))[2]
        except UploadNotFound:
            return None

    async def get(self, bucket: str, name: str, upload_id: str) -> tuple[Upload, list[Part]]:
        """An upload and its parts, by part number. Raises :class:`UploadNotFound`."""
        def read() -> tuple[Upload, list[Part]]:
            _, path, upload = self._find(bucket, name, upload_id)
            return upload, _read_parts(path)
        return await self.store.run_io(read)

    async def list_bucket(self, bucket: str, prefix: str = "") -> list[Upload]:
        """A bucket's uploads in progress, by (name as UTF-8 bytes, initiated)."""
        def scan() -> list[Upload]:
            found = []
            for mp in self.store.mountpaths:
                for path in _upload_dirs(mp.uploads / bucket):
                    upload = _read_upload(path)
                    if upload is not None and upload.name.startswith(prefix):
                        found.append(upload)
            found.sort(key=lambda u: (u.name.encode("utf-8", "surrogatepass"), u.initiated))
            return found
        return await self.store.run_io(scan)

    # -- create, parts --
    async def create(self, bucket: str, name: str, attrs: dict | None = None) -> Upload:
        upload = Upload(bucket, name, secrets.token_hex(16), dict(attrs or {}), time.time())
        mp = self.store.ranked_mountpaths(bucket, name)[0]
        await self.store.run_io(self._build, mp, upload)
        return upload

    def _build(self, mp: Mountpath, upload: Upload) -> None:
        staging = mp.tmp / f"upload-{upload.upload_id}"
        staging.mkdir()
        record = {"v": 1, "bucket": upload.bucket, "name": upload.name,
                  "upload_id": upload.upload_id, "attrs": upload.attrs,
                  "initiated": upload.initiated}
        fd = os.open(staging / UPLOAD_JSON, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o644)
        try:
            _write_all(fd, json.dumps(record, separators=(",", ":")).encode())
            if self.store.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        parent = mp.uploads / upload.bucket
        if not parent.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
            for d in parent.parents if self.store.fsync else ():
                _fsync_dir(d)  # the new directories' entries, up to uploads/ itself
                if d == mp.uploads:
                    break
        if self.store.fsync:
            _fsync_dir(staging)
        try:
            os.rename(staging, parent / upload.upload_id)
        except FileNotFoundError:  # the bucket was destroyed meanwhile
            raise BucketNotFound(f"bucket {upload.bucket} was destroyed") from None
        if self.store.fsync:
            _fsync_dir(parent)

    async def put_part(self, bucket: str, name: str, upload_id: str, number: int,
                       chunks: AsyncIterable[bytes], *, size: int, md5: str | None = None,
                       checksum: str | None = None, max_size: int = MAX_PART_SIZE) -> Part:
        """Store (or replace) part ``number`` from a stream of exactly ``size`` bytes; once it
        returns, the part is durable. ``md5`` (hex) and ``checksum`` (xxh3), when given, must
        match the bytes (``ChecksumMismatch``, nothing stored)."""
        check_part_number(number)
        limit = min(max_size, MAX_PART_SIZE)
        if size > limit:
            raise PayloadTooLarge(f"a part of {size} bytes exceeds {limit}")
        store = self.store
        mp, path, _ = await store.run_io(self._find, bucket, name, upload_id)
        # the object store's writer (buffered, hashed and written in the I/O pool), on the
        # upload's mountpath; the finished file is sealed as a part instead of committed
        writer = ObjectWriter(store, bucket, name, limit, md5=True, mountpath=mp)
        installed = False
        try:
            async for chunk in chunks:
                if writer.size + len(chunk) > size:
                    raise InvalidArgument(f"the part is longer than its {size} bytes")
                await writer.write(chunk)
            await writer.finish(size, checksum)
            assert writer.md5 is not None and writer.checksum is not None
            if md5 and md5.lower() != writer.md5:
                raise ChecksumMismatch("the Content-MD5 you specified did not match what we "
                                       "received")
            record = json.dumps({"e": writer.md5, "s": size, "c": writer.checksum}).encode()
            fd = writer.detach()
            try:
                await store.run_io(_seal, fd, record, store.fsync)
            finally:
                os.close(fd)
            async with self._locked(upload_id):
                mtime = await store.run_io(self._install, writer.temp, path, number)
                installed = True
            return Part(number, writer.md5, size, writer.checksum, mtime)
        finally:
            if not installed:
                await writer.abort()

    def _install(self, temp: Path, path: Path, number: int) -> float:
        if not (path / UPLOAD_JSON).is_file():
            raise UploadNotFound(f"upload {path.name} ended while part {number} was sent")
        final = path / f"part-{number:05d}"
        try:
            os.rename(temp, final)
        except FileNotFoundError:  # the bucket was destroyed meanwhile
            raise UploadNotFound(f"upload {path.name} ended while part {number} was sent") \
                from None
        if self.store.fsync:
            _fsync_dir(path)
        return final.stat().st_mtime

    # -- complete, abort, expiry --
    async def complete(self, bucket: str, name: str, upload_id: str,
                       parts: list[tuple[int, str]], *, max_size: int | None = None,
                       write_through: WriteThrough | None = None) -> ObjectMetadata:
        """Make the listed ``(part number, etag)`` parts, in that order, the object's new
        version; returns its metadata (``attrs["etag"]`` is the multipart ETag). The upload is
        removed only once the object is committed: on any failure it stays, for a retry."""
        if not parts:
            raise InvalidArgument("a complete request must list at least one part")
        for i, (number, _) in enumerate(parts):
            check_part_number(number)
            if i and number <= parts[i - 1][0]:
                raise InvalidPartOrder("parts must be listed in strictly ascending order",
                                       part=number)
        store = self.store
        async with self._locked(upload_id):
            mp, path, upload = await store.run_io(self._find, bucket, name, upload_id)
            stored = {p.number: p for p in await store.run_io(_read_parts, path)}
            chosen = []
            for number, etag in parts:
                part = stored.get(number)
                if part is None or part.etag != etag.strip().strip('"').lower():
                    raise InvalidPart(f"part {number} was not uploaded or its ETag is not "
                                      f"{etag!r}", part=number)
                chosen.append(part)
            for part in chosen[:-1]:
                if part.size < MIN_PART_SIZE:
                    raise EntityTooSmall(f"part {part.number} has {part.size} bytes; every part "
                                         f"but the last needs at least {MIN_PART_SIZE}",
                                         part=part.number, size=part.size,
                                         min_size=MIN_PART_SIZE)
            total = sum(p.size for p in chosen)
            if max_size is not None and total > max_size:
                raise PayloadTooLarge(f"object of {total} bytes exceeds {max_size}")
            attrs = {**upload.attrs, "etag": multipart_etag([p.etag for p in chosen])}
            writer = store.writer(bucket, name, max_size=max_size)
            try:
                for part in chosen:
                    await self._append(path, part, writer)
                await writer.finish(total)
                source = await write_through(writer.temp, attrs) if write_through else None
                meta = await writer.commit(source=source, attrs=attrs)
            finally:
                await writer.abort()
            try:
                await store.run_io(self._remove, mp, path)
            except OSError as exc:  # the object is committed; the GC sweep retries later
                log.warning("completed upload %s not removed: %s", upload_id, exc)
        return meta

    async def _append(self, path: Path, part: Part, writer: ObjectWriter) -> None:
        """Stream one part into the writer, checking its bytes against its stored xxh3."""
        store = self.store
        fd = await store.run_io(os.open, path / f"part-{part.number:05d}",
                                os.O_RDONLY | os.O_CLOEXEC)
        try:
            hasher, offset = new_hasher(), 0
            while offset < part.size:
                data = await store.run_io(_read_hashed, fd, min(CHUNK, part.size - offset),
                                          offset, hasher)
                if not data:
                    break
                await writer.write(data)
                offset += len(data)
        finally:
            os.close(fd)
        if offset != part.size or format_checksum(hasher) != part.checksum:
            raise ObjectCorrupted(f"part {part.number} of upload {path.name} no longer matches "
                                  "its checksum; upload it again")

    async def abort(self, bucket: str, name: str, upload_id: str) -> None:
        """Remove an upload and its parts. Raises :class:`UploadNotFound`."""
        async with self._locked(upload_id):
            mp, path, _ = await self.store.run_io(self._find, bucket, name, upload_id)
            await self.store.run_io(self._remove, mp, path)

    def _remove(self, mp: Mountpath, path: Path) -> None:
        doomed = mp.trash / uuid.uuid4().hex
        os.rename(path, doomed)
        if self.store.fsync:
            _fsync_dir(path.parent)
        shutil.rmtree(doomed, ignore_errors=True)

    async def sweep(self, now: float | None = None, max_age: float = MAX_AGE) -> list[Upload]:
        """Remove every upload initiated more than ``max_age`` seconds before ``now``; returns
        them. (A directory without a readable ``upload.json`` ages by its mtime.)"""
        now = time.time() if now is None else now

        def scan() -> list[tuple[Mountpath, Path, Upload]]:
            old = []
            for mp in self.store.mountpaths:
                for bucket, bucket_dir in _bucket_dirs(mp.uploads):
                    for path in _upload_dirs(bucket_dir):
                        upload = _read_upload(path)
                        if upload is None:
                            with contextlib.suppress(OSError):
                                upload = Upload(bucket, "", path.name, {}, path.stat().st_mtime)
                        if upload is not None and now - upload.initiated > max_age:
                            old.append((mp, path, upload))
            return old

        removed = []
        for mp, path, upload in await self.store.run_io(scan):
            async with self._locked(upload.upload_id):
                try:
                    await self.store.run_io(self._remove, mp, path)
                except FileNotFoundError:  # completed or aborted meanwhile
                    continue
            log.info("expired upload %s of %s/%s removed", upload.upload_id, upload.bucket,
                     upload.name)
            removed.append(upload)
        return removed


# -- blocking helpers (run in the I/O pool) --
def _read_upload(path: Path) -> Upload | None:
    try:
        with open(path / UPLOAD_JSON, "rb") as f:
            d = json.load(f)
        return Upload(d["bucket"], d["name"], d["upload_id"], d.get("attrs") or {},
                      float(d["initiated"]))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable %s", path / UPLOAD_JSON)
        return None


def _read_parts(path: Path) -> list[Part]:
    parts = []
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        raise UploadNotFound(f"upload {path.name} ended") from None
    for entry in entries:
        match = _PART_RE.fullmatch(entry.name)
        if match is None:
            continue
        try:
            record = json.loads(os.getxattr(entry.path, PART_XATTR))
            part = Part(int(match.group(1)), record["e"], record["s"], record["c"],
                        entry.stat().st_mtime)
        except FileNotFoundError:
            continue  # replaced or removed meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("part without a valid record: %s", entry.path)
            continue
        parts.append(part)
    parts.sort(key=lambda p: p.number)
    return parts


def _subdirs(path: Path, pattern: re.Pattern | None = None) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False)
                and (pattern is None or pattern.fullmatch(e.name))]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _upload_dirs(bucket_dir: Path) -> list[Path]:
    return _subdirs(bucket_dir, _ID_RE)


def _bucket_dirs(top: Path) -> Iterator[tuple[str, Path]]:
    """Every bucket directory under ``uploads/`` (``PROVIDER/[@NS/]BUCKET``) with its uname."""
    for provider in _subdirs(top):
        for child in _subdirs(provider):
            for bucket in _subdirs(child) if child.name.startswith("@") else [child]:
                yield str(bucket.relative_to(top)), bucket


def _read_hashed(fd: int, count: int, offset: int, hasher) -> bytes:
    data = os.pread(fd, count, offset)
    hasher.update(data)
    return data


def _seal(fd: int, record: bytes, fsync: bool) -> None:
    os.setxattr(fd, PART_XATTR, record)
    if fsync:
        os.fsync(fd)
