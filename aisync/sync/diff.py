"""Streaming listing diff: source listing vs cached index, in memory independent of bucket size.

:func:`merge_diff` merge-joins two sorted streams, the source's listing (``ListEntry``) and the
cached index (``(name, token)``), and yields one :class:`Change` per name seen on either side.
It holds one entry of each side at a time, so a billion-object bucket diffs in the same memory
as a ten-object one. Planned deletes are the exception a caller must not keep in memory either:
they may only be applied once the source listing is known complete, so they wait on disk in a
:class:`DeleteSpool`; :func:`decide_deletes` then decides, all-or-nothing, whether to apply them.

Ordering: both inputs are in UTF-8 byte order of the names (S3's listing order, the index's
order; ``name.encode("utf-8", "surrogatepass")``). The merge verifies it: a name that is not
strictly greater than its predecessor on the same side raises :class:`ListingOutOfOrder` (a
duplicate or a backend that is not sorted would otherwise turn into bogus news and deletes).

Deletes fail closed (:func:`decide_deletes`): nothing is deleted unless the listing completed,
the count is within ``--max-delete``, and the source did not suddenly shrink (an empty or
truncated listing from a misconfigured prefix or a flaky backend looks like "delete everything").
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import struct
import tempfile
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aisync.backends.base import Backend, ListEntry, VersionToken
from aisync.sync.versions import Verdict, compare_versions
from aisync.util.errors import BackendError, InvalidArgument

ChangeKind = Literal["new", "changed", "deleted", "unchanged"]
_KINDS: frozenset[str] = frozenset(("new", "changed", "deleted", "unchanged"))


class ListingOutOfOrder(BackendError):
    """A listing was not strictly increasing in UTF-8 byte order; the diff stopped (fail closed).

    ``details`` name the side (``source`` or ``cached``), the previous name and the offending one.
    """

    code, status = "ListingOutOfOrder", 502


@dataclass(frozen=True, slots=True)
class Change:
    """One name's outcome. ``source`` is None for ``deleted``; ``cached`` is None for ``new``."""

    kind: ChangeKind
    name: str
    source: VersionToken | None
    cached: VersionToken | None
    reason: str


def _key(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


async def _ordered(items: AsyncIterable, side: str, source_side: bool,
                   after: bytes | None) -> AsyncIterator[tuple[bytes, str, VersionToken | None]]:
    """(key, name, token) of one side, checked strictly increasing, names <= ``after`` dropped."""
    prev: bytes | None = None
    prev_name = ""
    async for item in items:
        if source_side:
            name, token = item.name, item.version
        else:
            name, token = item
        key = _key(name)
        if prev is not None and key <= prev:
            raise ListingOutOfOrder(
                f"{side} listing out of order: {name!r} after {prev_name!r}",
                side=side, previous=prev_name, name=name)
        prev, prev_name = key, name
        if after is not None and key <= after:
            continue
        yield key, name, token


async def merge_diff(source: AsyncIterable[ListEntry],
                     cached: AsyncIterable[tuple[str, VersionToken | None]], *,
                     start_after: str | None = None) -> AsyncIterator[Change]:
    """Yield a :class:`Change` per name in either input, in UTF-8 byte order of the names.

    * only in ``source``: ``new`` (``reason`` "new at source");
    * only in ``cached``: ``deleted`` (``reason`` "gone from source");
    * in both: :func:`~aisync.sync.versions.compare_versions` decides: ``SAME`` is
      ``unchanged``, ``CHANGED`` and ``UNKNOWN`` are ``changed`` (UNKNOWN means re-fetch), with
      the comparison's reason. A cached entry whose token is None (no source version recorded)
      is ``changed``.

    Names ``<= start_after`` (byte order) are skipped on both sides, for resuming a diff; they
    are still order-checked. Raises :class:`ListingOutOfOrder` when either input is not strictly
    increasing, and whatever the inputs raise. Memory: one pending entry per side.
    """
    after = _key(start_after) if start_after is not None else None
    src = _ordered(source, "source", True, after)
    cch = _ordered(cached, "cached", False, after)
    try:
        s = await anext(src, None)
        c = await anext(cch, None)
        while s is not None or c is not None:
            if c is None or (s is not None and s[0] < c[0]):
                assert s is not None
                yield Change("new", s[1], s[2], None, "new at source")
                s = await anext(src, None)
            elif s is None or c[0] < s[0]:
                yield Change("deleted", c[1], None, c[2], "gone from source")
                c = await anext(cch, None)
            else:
                source_token, cached_token = s[2], c[2]
                if cached_token is None:
                    yield Change("changed", s[1], source_token, None,
                                 "cached copy records no source version")
                else:
                    cmp = compare_versions(cached_token, source_token)
                    kind: ChangeKind = "unchanged" if cmp.verdict is Verdict.SAME else "changed"
                    yield Change(kind, s[1], source_token, cached_token, cmp.reason)
                s = await anext(src, None)
                c = await anext(cch, None)
    finally:
        await src.aclose()
        await cch.aclose()


async def source_entries(backend: Backend, bucket: str, prefix: str = "",
                         page: int = 1000) -> AsyncIterator[ListEntry]:
    """Every entry of ``bucket`` under ``prefix``, paging ``backend.list_page`` by its token.

    Raises whatever ``list_page`` raises (the listing is then incomplete: callers must not
    apply deletes), and :class:`~aisync.util.errors.BackendError` when the backend hands back
    the token it was just given (it would loop forever).
    """
    token: str | None = None
    while True:
        result = await backend.list_page(bucket, prefix, token, page)
        for entry in result.entries:
            yield entry
        if not result.next_token:
            return
        if result.next_token == token:
            raise BackendError(f"listing {bucket}/{prefix}: continuation token did not advance",
                               bucket=bucket, prefix=prefix)
        token = result.next_token


_COUNT = re.compile(r"[0-9]+")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)%")


async def sharded_entries(backend: Backend, bucket: str, prefix: str = "", *,
                          concurrency: int = 8, max_level: int = 10_000,
                          page: int = 1000) -> AsyncIterator[ListEntry]:
    """Like :func:`source_entries`, but lists the sub-prefixes of ``prefix`` in parallel when the
    backend lists by level (S3: listing throughput scales per prefix; some servers pay a cost
    per request proportional to what the prefix holds). Yields the same entries in the same
    key order. Memory: one level (at most ``max_level`` items, else plain listing) plus a
    bounded read-ahead of ``concurrency`` prefixes."""
    if not backend.capabilities.level_listing:
        async for entry in source_entries(backend, bucket, prefix, page):
            yield entry
        return
    items: list[ListEntry | str] = []
    token = None
    while True:
        level = await backend.list_level(bucket, prefix, token, page)
        items += level.entries
        items += level.prefixes
        if len(items) > max_level:  # a flat bucket: nothing to gain, and no memory to spend
            async for entry in source_entries(backend, bucket, prefix, page):
                yield entry
            return
        token = level.next_token
        if not token:
            break
    items.sort(key=lambda item: _key(item if isinstance(item, str) else item.name))

    async def fill(sub: str, queue: asyncio.Queue) -> None:
        try:
            async for entry in source_entries(backend, bucket, sub, page):
                await queue.put(entry)
            await queue.put(None)
        except Exception as exc:  # handed to the consumer, in order
            await queue.put(exc)

    ahead: list[tuple[asyncio.Queue, asyncio.Task]] = []
    subs = iter([i for i in items if isinstance(i, str)])

    def launch() -> None:
        while len(ahead) < concurrency:
            sub = next(subs, None)
            if sub is None:
                return
            queue: asyncio.Queue = asyncio.Queue(maxsize=2 * page)
            ahead.append((queue, asyncio.create_task(fill(sub, queue))))

    try:
        launch()
        for item in items:
            if not isinstance(item, str):
                yield item
                continue
            queue, _ = ahead.pop(0)
            launch()
            while (entry := await queue.get()) is not None:
                if isinstance(entry, BaseException):
                    raise entry
                yield entry
    finally:
        for _, task in ahead:
            task.cancel()
        for _, task in ahead:
            try:
                await task
            except BaseException:
                pass


@dataclass(frozen=True, slots=True)
class MaxDelete:
    """The ``--max-delete`` cap: an absolute count, a percentage of cached objects, or none.

    Parse with :meth:`parse`: ``None`` (no cap), ``"100"`` / ``100`` (at most 100 deletes),
    ``"1%"`` / ``"0.5%"`` (at most that share of the cached objects, rounded down: a cap is
    never exceeded by rounding). Percentages go up to ``100%``.
    """

    count: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str | int | None) -> MaxDelete:
        if text is None:
            return cls()
        if isinstance(text, bool) or not isinstance(text, int | str):
            raise InvalidArgument(f"max-delete must be a count or a percentage, not {text!r}")
        if isinstance(text, int):
            if text < 0:
                raise InvalidArgument(f"max-delete must not be negative: {text}")
            return cls(count=text)
        value = text.strip()
        if _COUNT.fullmatch(value):
            return cls(count=int(value))
        match = _PERCENT.fullmatch(value)
        if match:
            percent = float(match.group(1))
            if percent > 100:
                raise InvalidArgument(f"max-delete percentage above 100%: {text!r}")
            return cls(fraction=percent / 100)
        raise InvalidArgument(f"max-delete must be a count (e.g. 100) or a percentage of cached "
                              f"objects (e.g. 1% or 0.5%), not {text!r}")

    def limit(self, cached_count: int) -> int | None:
        """The most deletes allowed when ``cached_count`` objects are cached; None: no cap."""
        if self.count is not None:
            return self.count
        if self.fraction is not None:
            return math.floor(self.fraction * max(cached_count, 0) + 1e-9)
        return None

    def __str__(self) -> str:
        if self.count is not None:
            return str(self.count)
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return "unlimited"


@dataclass(frozen=True, slots=True)
class DeleteDecision:
    allowed: bool
    reason: str


def decide_deletes(planned: int, cached_count: int, source_count: int, *,
                   listing_complete: bool, max_delete: MaxDelete,
                   shrink_limit: float = 0.5) -> DeleteDecision:
    """Whether to apply all ``planned`` deletes; all-or-nothing and fail closed.

    Checked in order: an incomplete source listing refuses (even zero deletes: the diff is not
    trustworthy); no planned deletes are allowed; more than ``max_delete.limit(cached_count)``
    refuses; deleting more than ``shrink_limit`` of the cached objects refuses when at least 10
    are cached (the source "shrank", the signature of a wrong prefix, an expired credential
    answering empty, or a truncated listing) unless ``shrink_limit >= 1`` disables the check.
    """
    if not listing_complete:
        return DeleteDecision(False, f"source listing did not complete: refusing {planned} "
                                     f"delete(s)")
    if planned <= 0:
        return DeleteDecision(True, "nothing to delete")
    limit = max_delete.limit(cached_count)
    if limit is not None and planned > limit:
        return DeleteDecision(False, f"{planned} deletes exceed max-delete {max_delete} "
                                     f"(limit {limit} of {cached_count} cached objects)")
    if shrink_limit < 1 and cached_count >= 10 and planned / cached_count > shrink_limit:
        return DeleteDecision(False, f"source listing shrank: {planned} of {cached_count} cached "
                                     f"objects would be deleted ({planned / cached_count:.0%} > "
                                     f"{shrink_limit:.0%}; source lists {source_count})")
    return DeleteDecision(True, f"{planned} delete(s) within limits")


_LEN = struct.Struct(">I")


def _encode(change: Change) -> bytes:
    record = {"k": change.kind, "n": change.name, "r": change.reason,
              "s": change.source.to_dict() if change.source is not None else None,
              "c": change.cached.to_dict() if change.cached is not None else None}
    # ensure_ascii keeps lone surrogates (names from surrogateescape'd paths) round-trippable
    return json.dumps(record, separators=(",", ":")).encode("ascii")


def _decode(data: bytes) -> Change:
    record = json.loads(data)
    if record["k"] not in _KINDS:
        raise ValueError(f"bad change kind {record['k']!r}")
    return Change(record["k"], record["n"],
                  VersionToken.from_dict(record["s"]) if record["s"] is not None else None,
                  VersionToken.from_dict(record["c"]) if record["c"] is not None else None,
                  record["r"])


def _remove(fh, path: str) -> None:
    fh.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class DeleteSpool:
    """Planned deletes held in a private temp file under ``directory``, not in memory.

    ``append`` writes length-prefixed JSON records through a buffered file; ``len()`` counts
    them; iterating (``for change in spool`` or ``async for change in spool.drain()``) reads them
    back in append order and may be repeated. ``close()`` (or leaving the ``with`` block, or
    garbage collection as a last resort) deletes the file. Not thread-safe.
    """

    def __init__(self, directory: Path, *, buffer: int = 1 << 20) -> None:
        fd, self.path = tempfile.mkstemp(prefix="deletes-", suffix=".spool", dir=directory)
        self._fh = os.fdopen(fd, "wb", buffering=buffer)
        self._count = 0
        self._closed = False
        self._finalizer = weakref.finalize(self, _remove, self._fh, self.path)

    def append(self, change: Change) -> None:
        if self._closed:
            raise ValueError("delete spool is closed")
        data = _encode(change)
        self._fh.write(_LEN.pack(len(data)))
        self._fh.write(data)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Change]:
        if self._closed:
            raise ValueError("delete spool is closed")
        self._fh.flush()
        remaining = self._count  # records appended while iterating are not read this time
        with open(self.path, "rb", buffering=1 << 20) as reader:
            while remaining:
                head = reader.read(_LEN.size)
                size = _LEN.unpack(head)[0] if len(head) == _LEN.size else -1
                data = reader.read(size) if size >= 0 else b""
                if size < 0 or len(data) != size:
                    raise OSError(f"delete spool {self.path} is truncated")
                remaining -= 1
                yield _decode(data)

    async def drain(self, batch: int = 1000) -> AsyncIterator[Change]:
        """Async iteration over the spooled changes; yields to the loop every ``batch``."""
        for i, change in enumerate(self):
            if i and i % batch == 0:
                await asyncio.sleep(0)
            yield change

    def close(self) -> None:
        self._closed = True
        self._finalizer()

    def __enter__(self) -> DeleteSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
