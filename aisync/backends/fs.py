"""``fs://``: a POSIX directory (an NFS or Lustre mount, a local disk) as a source of truth.

Buckets are configured by name to a directory; object ``a/b.jpg`` is the file ``ROOT/a/b.jpg``.

* **Version token**: size, and an ETag built from ``(inode, mtime_ns, size)``: a rewrite in place
  moves mtime, an atomic replace changes the inode, so a same-size overwrite is still a new
  version — except a same-size rewrite *in place* within one tick of the file system's
  timestamp clock (a few milliseconds on Linux), which keeps inode, size and mtime: that is
  indistinguishable without reading the file (rclone's local backend has the same limit). ``last_modified`` is the mtime. No content checksum is computed on ``head`` (that
  would read the file); :meth:`FsBackend.checksum` computes an MD5 on demand.
* **Safety**: names are validated (no ``..``, no absolute paths) and the resolved path must stay
  under the root, symlinks included; anything else is ``InvalidObjectName``. Listings follow no
  symlink (they are not listed). Where ``/proc`` shows what a descriptor holds (Linux), the file
  read and the directory written or deleted in are checked again once open, so a component
  swapped for a symlink between the check and the open cannot lead out either; writes, renames
  and unlinks happen relative to that checked directory (the ``mkdir`` of missing parents is the
  one step that follows the path as it is then).
* **Writes** are atomic: a temp file in the destination directory, fsync, rename.
* **Listing** walks the tree in UTF-8 key order (a directory ``a`` sorts as ``a/``), skipping
  whole subtrees that sort before the continuation token; memory is bounded by the largest
  single directory, not by the tree. It fails closed: a directory or file that cannot be read
  (permissions, I/O error) fails the whole listing with ``AccessDenied`` or ``BackendError``
  naming it (``fs://bucket/dir/``), never an entry silently left out, which a sync with
  ``--delete`` would take for a deletion. Only a subdirectory or file that vanishes between
  being seen and being read is left out (it is gone).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aisync.backends.base import (
    CHUNK,
    Capabilities,
    ListEntry,
    ListPage,
    ObjectStream,
    ThreadedBackend,
    VersionToken,
)
from aisync.util.errors import (
    AccessDenied,
    AisyncError,
    BackendError,
    BucketNotFound,
    ConfigError,
    InvalidObjectName,
    ObjectNotFound,
    PreconditionFailed,
)
from aisync.util.names import validate_object_name

TMP_PREFIX = ".aisync-tmp-"
#: The longest file name (one path component) POSIX file systems take, in bytes.
NAME_MAX = 255


class FsBackend(ThreadedBackend):
    provider = "fs"
    capabilities = Capabilities(versioned=False, conditional_get=False, conditional_put=False,
                                server_side_copy=True, checksums=frozenset(),
                                max_page=10000)  # no checksum in tokens: MD5 is on demand
    ERRORS = [
        (lambda e: isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG,
         lambda e: InvalidObjectName("the name is too long for the file system")),
        (lambda e: isinstance(e, FileNotFoundError), lambda e: ObjectNotFound(str(e))),
        (lambda e: isinstance(e, PermissionError), lambda e: AccessDenied(str(e))),
        (lambda e: isinstance(e, (IsADirectoryError, NotADirectoryError)),
         lambda e: ObjectNotFound(str(e))),
    ]

    def __init__(self, roots: Mapping[str, str | os.PathLike], *, fsync: bool = True,
                 max_threads: int = 16) -> None:
        super().__init__(max_threads)
        self.roots = {name: Path(path).resolve() for name, path in roots.items()}
        self.fsync = fsync

    @classmethod
    def from_profile(cls, settings: Mapping[str, Any]) -> FsBackend:
        """``{"buckets": {"nfs-home": "/mnt/nfs/home"}, "fsync": true}``."""
        roots = settings.get("buckets")
        if not isinstance(roots, Mapping) or not roots:
            raise ConfigError("an fs profile needs 'buckets': {name: directory}")
        return cls(roots, fsync=bool(settings.get("fsync", True)))

    # -- paths --
    def root(self, bucket: str) -> Path:
        root = self.roots.get(bucket)
        if root is None or not root.is_dir():
            raise BucketNotFound(f"fs://{bucket}: not configured or not a directory")
        return root

    def path(self, bucket: str, name: str) -> Path:
        """The file of object ``name``: ``InvalidObjectName`` for a name no file can have (a
        ``..``, a trailing ``/``, a component over :data:`NAME_MAX` bytes) or one that resolves
        outside the bucket's directory."""
        validate_object_name(name)
        if name.endswith("/"):
            raise InvalidObjectName(f"fs://{bucket}/{name}: a file name cannot end with '/'")
        if any(len(part.encode()) > NAME_MAX for part in name.split("/")):
            raise InvalidObjectName(f"fs://{bucket}: a path component of the name is longer "
                                    f"than {NAME_MAX} bytes, the limit of file names")
        root = self.root(bucket)
        path = root / name
        real = Path(os.path.realpath(path))
        if real != root and root not in real.parents:
            raise InvalidObjectName(f"fs://{bucket}/{name} resolves outside the bucket's directory")
        return path

    def check_held(self, bucket: str, name: str, fd: int) -> None:
        """``InvalidObjectName`` unless the open descriptor ``fd`` is under the bucket's
        directory (as ``/proc`` names it; nothing to check where it does not)."""
        try:
            held = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return
        root = self.root(bucket)
        if held != root and root not in held.parents:
            raise InvalidObjectName(f"fs://{bucket}/{name} resolves outside the bucket's directory")

    def open_parent(self, bucket: str, name: str, path: Path) -> int:
        """A descriptor of the directory of ``path`` (object ``name``'s, from :meth:`path`),
        checked to be under the bucket's directory once open (the caller closes it)."""
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.check_held(bucket, name, fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def token(st: os.stat_result) -> VersionToken:
        return VersionToken(size=st.st_size,
                            etag=f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}",
                            last_modified=st.st_mtime_ns / 1e9)

    def _stat_file(self, bucket: str, name: str) -> os.stat_result:
        st = os.stat(self.path(bucket, name))
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"fs://{bucket}/{name}: not a regular file")
        return st

    # -- contract --
    async def head(self, bucket: str, name: str) -> VersionToken:
        return self.token(await self.call(self._stat_file, bucket, name,
                                          what=f"head fs://{bucket}/{name}"))

    async def open(self, bucket: str, name: str, *, byte_range: tuple[int, int] | None = None,
                   if_version: VersionToken | None = None) -> ObjectStream:
        what = f"get fs://{bucket}/{name}"

        def _open():
            path = self.path(bucket, name)
            f = open(path, "rb")  # noqa: SIM115 (closed by the stream)
            try:
                self.check_held(bucket, name, f.fileno())
            except BaseException:
                f.close()
                raise
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                f.close()
                raise ObjectNotFound(f"fs://{bucket}/{name}: not a regular file")
            version = self.token(st)
            if if_version is not None and if_version.etag != version.etag:
                f.close()
                raise PreconditionFailed(f"fs://{bucket}/{name} changed since it was compared")
            return f, version

        f, version = await self.call(_open, what=what)
        start, count = 0, version.size
        if byte_range is not None:
            start = byte_range[0]
            count = max(0, min(byte_range[1], version.size - 1) - start + 1)

        def chunks() -> Iterator[bytes]:
            offset, left = start, count
            while left > 0:
                data = os.pread(f.fileno(), min(CHUNK, left), offset)
                if not data:
                    raise PreconditionFailed(f"fs://{bucket}/{name} shrank while being read")
                offset += len(data)
                left -= len(data)
                yield data
            # A rewrite in place while we read would have mixed two versions: refuse it.
            if self.token(os.fstat(f.fileno())).etag != version.etag:
                raise PreconditionFailed(f"fs://{bucket}/{name} changed while being read")

        return self.stream_blocking(version, chunks(), f.close, what)

    async def put(self, bucket: str, name: str, path: Path, *,
                  content_type: str | None = None) -> VersionToken:
        def _put() -> os.stat_result:
            dest = self.path(bucket, name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{TMP_PREFIX}{uuid.uuid4().hex}"
            parent = self.open_parent(bucket, name, dest)
            try:
                try:
                    out_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                     0o666, dir_fd=parent)
                    with open(out_fd, "wb") as out, open(path, "rb") as src:
                        while data := src.read(CHUNK):
                            out.write(data)
                        out.flush()
                        if self.fsync:
                            os.fsync(out.fileno())
                    os.replace(tmp, dest.name, src_dir_fd=parent, dst_dir_fd=parent)
                except BaseException:
                    try:
                        os.unlink(tmp, dir_fd=parent)
                    except FileNotFoundError:
                        pass
                    raise
                if self.fsync:
                    os.fsync(parent)
                return os.stat(dest.name, dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)

        return self.token(await self.call(_put, what=f"put fs://{bucket}/{name}"))

    async def delete(self, bucket: str, name: str) -> None:
        def _delete() -> None:
            dest = self.path(bucket, name)
            parent = self.open_parent(bucket, name, dest)
            try:
                if not stat.S_ISREG(os.stat(dest.name, dir_fd=parent).st_mode):
                    raise ObjectNotFound(f"fs://{bucket}/{name}: not a regular file")
                os.unlink(dest.name, dir_fd=parent)
            finally:
                os.close(parent)

        await self.call(_delete, what=f"delete fs://{bucket}/{name}")

    async def copy(self, bucket: str, src: str, dst: str) -> VersionToken:
        return await self.put(bucket, dst, await self.call(self.path, bucket, src))

    async def checksum(self, bucket: str, name: str) -> str:
        """MD5 of the file's content, computed on demand (hex)."""
        def _md5() -> str:
            digest = hashlib.md5(usedforsecurity=False)
            with open(self.path(bucket, name), "rb") as f:
                self.check_held(bucket, name, f.fileno())
                while data := f.read(CHUNK):
                    digest.update(data)
            return digest.hexdigest()

        return await self.call(_md5, what=f"checksum fs://{bucket}/{name}")

    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000) -> ListPage:
        limit = max(1, min(limit, self.capabilities.max_page))

        def _list() -> ListPage:
            root = self.root(bucket)
            entries: list[ListEntry] = []
            try:
                for name, st in _walk_sorted(root, "", prefix, token):
                    entries.append(ListEntry(name, self.token(st)))
                    if len(entries) > limit:
                        break
            except _Unreadable as exc:
                raise _listing_error(bucket, exc) from exc.error
            more = len(entries) > limit
            entries = entries[:limit]
            return ListPage(entries, entries[-1].name if more else None)

        return await self.call(_list, what=f"list fs://{bucket}")


class _Unreadable(Exception):
    """Raised by :func:`_walk_sorted`: ``key`` (relative to the root; ``""`` is the root, a
    directory ends with ``/``) could not be read; the ``OSError`` is the cause."""

    def __init__(self, key: str, error: OSError) -> None:
        super().__init__(key)
        self.key, self.error = key, error


def _listing_error(bucket: str, exc: _Unreadable) -> AisyncError:
    """The typed error of a listing that met an unreadable path: ``AccessDenied`` for a
    permission error, ``BackendError`` for any other (named by key, not by host path)."""
    reason = exc.error.strerror or type(exc.error).__name__
    message = f"list fs://{bucket}: cannot read fs://{bucket}/{exc.key}: {reason}"
    if isinstance(exc.error, PermissionError):
        return AccessDenied(message, path=exc.key)
    return BackendError(message, path=exc.key)


def _scan(directory: Path, rel: str) -> list[tuple[bytes, str, bool, os.DirEntry]]:
    """The entries of one directory, sorted by key; ``_Unreadable`` when it cannot be read."""
    items = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith(TMP_PREFIX):
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                key = rel + entry.name + ("/" if is_dir else "")
                items.append((key.encode("utf-8", "surrogateescape"), key, is_dir, entry))
    except OSError as exc:
        raise _Unreadable(rel, exc) from exc
    items.sort()
    return items


def _walk_sorted(directory: Path, rel: str, prefix: str,
                 after: str | None) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under ``directory`` in UTF-8 key order, with names > ``after``.

    Raises :class:`_Unreadable` for a directory or file that cannot be read; a subdirectory
    or file removed while the walk runs is skipped (it no longer exists).
    """
    for _, key, is_dir, entry in _scan(directory, rel):
        if is_dir:
            # prune subtrees that cannot hold a name with the prefix, or that sort before `after`
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            if after is not None and not after.startswith(key) and key < after:
                continue
            try:
                yield from _walk_sorted(Path(entry.path), key, prefix, after)
            except _Unreadable as exc:
                if exc.key == key and isinstance(exc.error, FileNotFoundError):
                    continue  # removed since its parent was read
                raise
        else:
            if not key.startswith(prefix) or (after is not None and key <= after):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since its directory was read
            except OSError as exc:
                raise _Unreadable(key, exc) from exc
            if stat.S_ISREG(st.st_mode):
                yield key, st
