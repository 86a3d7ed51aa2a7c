"""A mountpath: one directory per disk, holding objects, temp files and quarantined copies.

Layout under the root::

    .aisync-mountpath         marker holding the mountpath id (created once)
    objects/PROVIDER/[@NS/]BUCKET/XY/<32 hex>   object files (xxh3-128 of the object name)
    tmp/                      in-flight writes; emptied at start (a crash leaves only garbage here)
    uploads/PROVIDER/[@NS/]BUCKET/<upload id>/   multipart uploads in progress (see
                              ``aisync.storage.uploads``); kept across restarts
    quarantine/               copies that failed their checksum
    trash/                    destroyed buckets, removed in the background
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import xxhash

from aisync.util.errors import ConfigError

MARKER = ".aisync-mountpath"


@dataclass(frozen=True, slots=True)
class DiskUsage:
    mountpath: str
    total: int
    used: int
    free: int


class Mountpath:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.objects = self.root / "objects"
        self._objects_str = str(self.objects)
        self.tmp = self.root / "tmp"
        self.quarantine = self.root / "quarantine"
        self.trash = self.root / "trash"
        self.uploads = self.root / "uploads"
        self.id = ""

    def open(self) -> None:
        """Create the layout, check xattr support, clear leftovers of a crash. Blocking."""
        for d in (self.root, self.objects, self.tmp, self.quarantine, self.trash, self.uploads):
            d.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if marker.exists():
            self.id = marker.read_text().strip()
        else:
            self.id = f"mp-{uuid.uuid4().hex[:12]}"
            tmp = self.tmp / f"marker.{os.getpid()}"
            tmp.write_text(self.id + "\n")
            os.replace(tmp, marker)
        probe = self.tmp / f"xattr-probe.{os.getpid()}"
        probe.touch()
        try:
            os.setxattr(probe, "user.aisync.probe", b"1")
        except OSError as exc:
            raise ConfigError(
                f"mountpath {self.root}: the filesystem does not support user xattrs "
                f"({exc.strerror}); aisync keeps object metadata in xattrs") from exc
        finally:
            probe.unlink(missing_ok=True)
        for leftover in self.tmp.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        self.empty_trash()

    def attach(self) -> None:
        """Read-only use by another process (a read worker): learn the id, touch nothing."""
        try:
            self.id = (self.root / MARKER).read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"{self.root} is not an aisync mountpath (no {MARKER})") from None

    def bucket_dir(self, bucket_uname: str) -> Path:
        return self.objects / bucket_uname

    def object_path(self, bucket_uname: str, object_name: str) -> str:
        """Where the object lives (a plain string: this is on every request's hot path)."""
        digest = xxhash.xxh3_128_hexdigest(object_name.encode("utf-8", "surrogatepass"))
        return f"{self._objects_str}/{bucket_uname}/{digest[:2]}/{digest}"

    def temp_path(self) -> Path:
        return self.tmp / uuid.uuid4().hex

    def usage(self) -> DiskUsage:
        st = shutil.disk_usage(self.root)
        return DiskUsage(str(self.root), st.total, st.used, st.free)

    def move_bucket_to_trash(self, bucket_uname: str) -> None:
        """A destroyed bucket's objects and its uploads in progress go to the trash."""
        for src in (self.bucket_dir(bucket_uname), self.uploads / bucket_uname):
            if src.exists():
                os.replace(src, self.trash / uuid.uuid4().hex)

    def empty_trash(self) -> None:
        for item in self.trash.iterdir():
            shutil.rmtree(item, ignore_errors=True)
