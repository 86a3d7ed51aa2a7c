"""Per-object metadata, stored as one xattr (``user.aisync.meta``) on the object's inode.

The record is compact JSON with short keys; ``v`` is the format version. Later fields (a backend
version token, validation times) are added as optional keys, so old records stay readable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import xxhash

XATTR_NAME = "user.aisync.meta"
CHECKSUM_ALGO = "xxh3"


def new_hasher() -> xxhash.xxh3_64:
    return xxhash.xxh3_64()


def format_checksum(hasher_or_hex: xxhash.xxh3_64 | str) -> str:
    hexdigest = hasher_or_hex if isinstance(hasher_or_hex, str) else hasher_or_hex.hexdigest()
    return f"{CHECKSUM_ALGO}:{hexdigest}"


def checksum_of(data: bytes) -> str:
    return format_checksum(xxhash.xxh3_64_hexdigest(data))


@dataclass(frozen=True, slots=True)
class ObjectMetadata:
    bucket: str  # BucketRef.uname
    name: str
    size: int
    checksum: str  # "xxh3:<16 hex>"
    mtime_ns: int  # when this version was written (or fetched from its source)
    source: dict | None = None  # the backend's version token of this copy (cached buckets)
    origin: dict | None = None  # what a copy job copied this from: {"bucket", "version"}
    # What an S3 client gave or expects back: {"etag": MD5 or multipart ETag, "type":
    # Content-Type, "meta": {x-amz-meta-* name: value}, "headers": {Cache-Control, ...}}.
    attrs: dict | None = None

    def encode(self) -> bytes:
        record = {"v": 1, "b": self.bucket, "n": self.name, "s": self.size,
                  "c": self.checksum, "m": self.mtime_ns}
        if self.source is not None:
            record["src"] = self.source
        if self.origin is not None:
            record["org"] = self.origin
        if self.attrs:
            record["a"] = self.attrs
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> ObjectMetadata:
        d = json.loads(raw)
        return cls(bucket=d["b"], name=d["n"], size=d["s"], checksum=d["c"], mtime_ns=d["m"],
                   source=d.get("src"), origin=d.get("org"), attrs=d.get("a"))

    @property
    def etag(self) -> str:
        return self.checksum.partition(":")[2]


def write_metadata(fd: int, meta: ObjectMetadata) -> None:
    os.setxattr(fd, XATTR_NAME, meta.encode())


def read_metadata(fd_or_path: int | str) -> ObjectMetadata | None:
    """The object's metadata, or None when the file carries none (not an aisync object)."""
    try:
        return ObjectMetadata.decode(os.getxattr(fd_or_path, XATTR_NAME))
    except OSError:
        return None
    except (ValueError, KeyError):
        return None
