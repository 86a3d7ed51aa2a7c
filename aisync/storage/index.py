"""The per-target object index (SQLite): fast, paged listing in key order.

The files are the truth; the index is a cache of their metadata and can be rebuilt from them
(:meth:`ObjectIndex.rebuild`). It is rebuilt automatically when it is new or when the previous
process did not close it cleanly (a ``.dirty`` marker exists), so an index row lost to a crash
between the object's rename and the index write never hides an acknowledged object for long.

Names are stored as UTF-8 BLOBs: SQLite then orders them bytewise, which is UTF-8 order, which is
code-point order, which is S3's listing order; a prefix scan is the range
``[prefix, prefix + b"\\xff")`` because UTF-8 never contains the byte 0xFF.

The same database holds each bucket's **change feed**: every put and delete, numbered with a
sequence that only grows (``max(last + 1, time_ns)``, assigned by the single writer thread), kept
for ``FEED_RETENTION_NS``. A peer cluster follows it with ``changes since N`` instead of listing.
Entries are written with the index row, so an index lost to a crash loses them too: a rebuild
raises the feed's *floor* to the rebuild time, and a reader asking for changes older than the
floor is told so (it then falls back to a listing diff).

Threading: one writer connection used from one dedicated thread, one reader connection per
reader thread (WAL mode lets readers run beside the writer). All methods are blocking: callers
run them in executors.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aisync.storage.metadata import ObjectMetadata, read_metadata

#: Bump when the table changes: an index of another version is dropped and rebuilt from files.
SCHEMA_VERSION = 5
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    bucket   TEXT    NOT NULL,
    name     BLOB    NOT NULL,
    size     INTEGER NOT NULL,
    checksum TEXT    NOT NULL,
    mtime_ns INTEGER NOT NULL,
    source   TEXT,
    origin   TEXT,
    attrs    TEXT,
    PRIMARY KEY (bucket, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    bucket   TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    name     BLOB    NOT NULL,
    op       TEXT    NOT NULL,
    size     INTEGER,
    checksum TEXT,
    PRIMARY KEY (bucket, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feed_floor (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    floor INTEGER NOT NULL
);
"""

#: How long feed entries are kept (nanoseconds of the sequence's clock): 7 days.
FEED_RETENTION_NS = 7 * 86400 * 10**9


_INSERT_ALL = "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    size: int
    checksum: str
    mtime_ns: int
    source: dict | None = None  # the backend version token of the cached copy
    origin: dict | None = None  # what a copy job copied it from
    attrs: dict | None = None  # S3 attributes (ETag, Content-Type, user metadata)


class ObjectIndex:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._dirty_marker = self.path.with_suffix(".dirty")
        self._local = threading.local()
        self._writer: sqlite3.Connection | None = None
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._last_seq = 0
        self._since_prune = 0
        self._seq_lock = threading.Lock()  # guards _last_seq and _pending (writer vs readers)
        self._pending: set[int] = set()    # assigned, not committed yet

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        with self._lock:
            self._connections.append(conn)
        return conn

    def open(self) -> bool:
        """Open (creating if needed). Returns True when a rebuild from the files is needed."""
        existed = self.path.exists()
        needs_rebuild = not existed or self._dirty_marker.exists()
        self._writer = self._connect()
        if self._writer.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            self._writer.execute("DROP TABLE IF EXISTS objects")
            self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            needs_rebuild = True
        self._writer.executescript(_SCHEMA)
        row = self._writer.execute("SELECT MAX(seq) FROM changes").fetchone()
        self._last_seq = max(int(row[0] or 0), self._floor())
        if needs_rebuild:  # history before now is unknown: readers behind it must re-list
            self._last_seq = self._next_seq()
            self._writer.execute("INSERT OR REPLACE INTO feed_floor(id, floor) VALUES (1, ?)",
                                 (self._last_seq,))
        self._dirty_marker.touch()
        return needs_rebuild

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._writer = None
        self._dirty_marker.unlink(missing_ok=True)

    @property
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    # -- writes (call from the single index-writer thread) --
    def _floor(self) -> int:
        assert self._writer is not None
        row = self._writer.execute("SELECT floor FROM feed_floor WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def _next_seq(self, pending: bool = False) -> int:
        with self._seq_lock:
            self._last_seq = max(self._last_seq + 1, time.time_ns())
            if pending:
                self._pending.add(self._last_seq)
            return self._last_seq

    def _record(self, bucket: str, name: str, op: str, size: int | None,
                checksum: str | None) -> None:
        assert self._writer is not None
        seq = self._next_seq(pending=True)  # released by _committed() after COMMIT
        self._writer.execute("INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?)",
                             (bucket, seq, name.encode("utf-8", "surrogatepass"),
                              op, size, checksum))
        self._since_prune += 1
        if self._since_prune >= 1000:
            self._since_prune = 0
            cutoff = self._last_seq - FEED_RETENTION_NS
            if self._writer.execute("DELETE FROM changes WHERE seq < ?", (cutoff,)).rowcount:
                self._writer.execute("UPDATE feed_floor SET floor = MAX(floor, ?) WHERE id = 1",
                                     (cutoff - 1,))

    @contextlib.contextmanager
    def _transaction(self):
        assert self._writer is not None
        self._writer.execute("BEGIN")
        try:
            yield self._writer
            self._writer.execute("COMMIT")
        except BaseException:
            self._writer.execute("ROLLBACK")
            raise
        finally:
            with self._seq_lock:
                self._pending.clear()

    def upsert(self, meta: ObjectMetadata) -> None:
        with self._transaction() as w:
            w.execute("INSERT OR REPLACE INTO objects(bucket, name, size, checksum, mtime_ns, "
                      "source, origin, attrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row(meta))
            self._record(meta.bucket, meta.name, "put", meta.size, meta.checksum)

    def remove(self, bucket: str, name: str, *, record: bool = True) -> None:
        """Drop an entry; ``record=False`` for removals that are not deletions (quarantine)."""
        with self._transaction() as w:
            cursor = w.execute("DELETE FROM objects WHERE bucket = ? AND name = ?",
                               (bucket, name.encode("utf-8", "surrogatepass")))
            if record and cursor.rowcount:
                self._record(bucket, name, "delete", None, None)

    def remove_bucket(self, bucket: str) -> None:
        assert self._writer is not None
        self._writer.execute("DELETE FROM objects WHERE bucket = ?", (bucket,))
        self._writer.execute("DELETE FROM changes WHERE bucket = ?", (bucket,))

    def rebuild(self, object_dirs: Iterable[Path], batch: int = 2000) -> int:
        """Replace the index with what the object files say. Streams; returns objects found."""
        assert self._writer is not None
        w = self._writer
        w.execute("BEGIN")
        w.execute("DELETE FROM objects")
        count, pending = 0, []
        for meta in _scan(object_dirs):
            pending.append(_row(meta))
            if len(pending) >= batch:
                w.executemany(_INSERT_ALL, pending)
                count += len(pending)
                pending.clear()
        if pending:
            w.executemany(_INSERT_ALL, pending)
            count += len(pending)
        w.execute("COMMIT")
        return count

    # -- reads (any thread) --
    def list_page(self, bucket: str, prefix: str = "", after: str | None = None,
                  limit: int = 1000) -> list[IndexEntry]:
        """Up to ``limit`` entries with ``name`` starting with ``prefix``, after ``after``."""
        lo = prefix.encode("utf-8", "surrogatepass")
        hi = lo + b"\xff"
        if after is not None:
            after_b = after.encode("utf-8", "surrogatepass")
            if after_b >= lo:
                rows = self._reader.execute(
                    "SELECT name, size, checksum, mtime_ns, source, origin, attrs FROM objects "
                    "WHERE bucket = ? AND name > ? AND name < ? ORDER BY name LIMIT ?",
                    (bucket, after_b, hi, limit))
                return [_entry(r) for r in rows]
        rows = self._reader.execute(
            "SELECT name, size, checksum, mtime_ns, source, origin, attrs FROM objects "
            "WHERE bucket = ? AND name >= ? AND name < ? ORDER BY name LIMIT ?", (bucket, lo, hi, limit))
        return [_entry(r) for r in rows]

    def changes_page(self, bucket: str, since: int, limit: int = 1000) -> list[dict]:
        """Up to ``limit`` changes of ``bucket`` with ``seq > since``, in sequence order."""
        rows = self._reader.execute(
            "SELECT seq, name, op, size, checksum FROM changes WHERE bucket = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (bucket, since, limit))
        return [{"seq": r[0], "name": r[1].decode("utf-8", "surrogatepass"), "op": r[2],
                 "size": r[3], "checksum": r[4]} for r in rows]

    def feed_bounds(self, bucket: str) -> tuple[int, int]:
        """(floor, high watermark): every change after the floor is retained (a reader whose
        ``since`` is below it may have missed some: rebuilt index, or retention); every future
        change gets a sequence above the high watermark."""
        row = self._reader.execute("SELECT floor FROM feed_floor WHERE id = 1").fetchone()
        floor = int(row[0]) if row else 0
        with self._seq_lock:
            if self._pending:  # a change is being written: nothing at or after it is safe yet
                return floor, min(self._pending) - 1
            # Claim "now": later changes are numbered above it even if the clock steps back.
            self._last_seq = max(self._last_seq, time.time_ns())
            return floor, self._last_seq

    def summary(self, bucket: str | None = None) -> tuple[int, int]:
        """(object count, total bytes), for one bucket or all."""
        if bucket is None:
            row = self._reader.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects")
        else:
            row = self._reader.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects WHERE bucket = ?", (bucket,))
        count, total = row.fetchone()
        return int(count), int(total)


def _row(meta: ObjectMetadata) -> tuple:
    source = json.dumps(meta.source, separators=(",", ":")) if meta.source is not None else None
    origin = json.dumps(meta.origin, separators=(",", ":")) if meta.origin is not None else None
    attrs = json.dumps(meta.attrs, separators=(",", ":")) if meta.attrs else None
    return (meta.bucket, meta.name.encode("utf-8", "surrogatepass"), meta.size, meta.checksum,
            meta.mtime_ns, source, origin, attrs)


def _entry(row: tuple) -> IndexEntry:
    return IndexEntry(row[0].decode("utf-8", "surrogatepass"), row[1], row[2], row[3],
                      json.loads(row[4]) if row[4] else None,
                      json.loads(row[5]) if row[5] else None,
                      json.loads(row[6]) if row[6] else None)


def _scan(object_dirs: Iterable[Path]) -> Iterator[ObjectMetadata]:
    for root in object_dirs:
        if not root.exists():
            continue
        stack = [str(root)]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as it:
                    entries = list(it)
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    meta = read_metadata(entry.path)
                    if meta is not None:
                        yield meta

