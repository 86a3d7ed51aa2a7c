"""A read-only view of a target's mountpaths, for read workers in other processes.

A read worker serves GETs from the same files the target's main process writes, so it cannot
rely on the writer's in-process cache invalidation. Its cache of small objects is validated by
``stat`` on every hit instead: an entry is used only while the path still names the same inode
with the same ctime and size. Every write creates a new inode (temp file + rename), every delete
removes the name, and any in-place change (including bit rot fixed by hand) moves ctime, so a
hit can never return bytes the writer has replaced.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from aisync.storage.metadata import ObjectMetadata
from aisync.storage.objects import MountpathReader, OpenObject

_Stamp = tuple[int, int, int]  # (inode, ctime_ns, size)


class ObjectReader(MountpathReader):
    def __init__(self, mountpaths: list[Path], *, cache_bytes: int = 64 << 20,
                 io_threads: int = 4) -> None:
        super().__init__(mountpaths, io_threads)
        self.capacity = cache_bytes
        self.size = 0
        self._cache: OrderedDict[tuple[str, str], tuple[str, _Stamp, ObjectMetadata, bytes]] = \
            OrderedDict()

    def start(self) -> None:
        for mp in self.mountpaths:
            mp.attach()
        self._index_mountpaths()

    def stop(self) -> None:
        self._io.shutdown(wait=True)

    def cached(self, bucket: str, name: str) -> tuple[ObjectMetadata, bytes] | None:
        entry = self._cache.get((bucket, name))
        if entry is None:
            return None
        path, stamp, meta, data = entry
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._drop((bucket, name))
            return None
        if (st.st_ino, st.st_ctime_ns, st.st_size) != stamp:
            self._drop((bucket, name))
            return None
        self._cache.move_to_end((bucket, name))
        return meta, data

    async def read_small(self, obj: OpenObject) -> bytes | None:
        """Verified bytes of a small object (cached by stamp), or None if they fail the check."""
        st = os.fstat(obj.fd)
        data = await self.read_checked(obj)
        if data is None:
            return None
        if len(data) <= self.capacity:
            key = (obj.meta.bucket, obj.meta.name)
            self._drop(key)
            self._cache[key] = (obj.path, (st.st_ino, st.st_ctime_ns, st.st_size), obj.meta, data)
            self.size += len(data)
            while self.size > self.capacity:
                _, (_, _, _, old) = self._cache.popitem(last=False)
                self.size -= len(old)
        return data

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self.size -= len(entry[3])
