"""Streaming listing diff, delete guard rails and the on-disk delete spool."""

from __future__ import annotations

import os

import pytest

from aisync.backends.base import ListEntry, ListPage
from aisync.backends.base import VersionToken as V
from aisync.sync.diff import (
    Change,
    DeleteDecision,
    DeleteSpool,
    ListingOutOfOrder,
    MaxDelete,
    decide_deletes,
    merge_diff,
    source_entries,
)
from aisync.util.errors import BackendError, InvalidArgument

A, B = "a" * 32, "b" * 32


async def aiter_of(items):
    for item in items:
        yield item


def src(*pairs):
    return aiter_of([ListEntry(name, token) for name, token in pairs])


def cch(*pairs):
    return aiter_of(list(pairs))


async def collect(source, cached, **kw) -> list[Change]:
    return [c async for c in merge_diff(source, cached, **kw)]


def kinds(changes) -> list[tuple[str, str]]:
    return [(c.kind, c.name) for c in changes]


# -- merge_diff --

async def test_classification():
    changes = await collect(
        src(("a", V(1, etag=A)), ("b", V(2, etag=A)), ("c", V(3, etag=A)), ("e", V(5))),
        cch(("b", V(2, etag=B)), ("c", V(3, etag=A)), ("d", V(4, etag=A)), ("e", V(5))))
    assert kinds(changes) == [("new", "a"), ("changed", "b"), ("unchanged", "c"),
                              ("deleted", "d"), ("changed", "e")]
    new, changed, unchanged, deleted, unknown = changes
    assert new.source == V(1, etag=A) and new.cached is None
    assert "etag" in changed.reason and changed.cached == V(2, etag=B)
    assert unchanged.reason == "etag equal"
    assert deleted.source is None and deleted.cached == V(4, etag=A)
    assert "not proof" in unknown.reason  # UNKNOWN is reported as changed: re-fetch


async def test_cached_without_token_is_changed():
    changes = await collect(src(("a", V(1, etag=A))), cch(("a", None)))
    assert kinds(changes) == [("changed", "a")]
    assert changes[0].cached is None


async def test_empty_sides():
    assert await collect(src(), cch()) == []
    assert kinds(await collect(src(("a", V(1)), ("b", V(1))), cch())) == [("new", "a"),
                                                                          ("new", "b")]
    assert kinds(await collect(src(), cch(("a", V(1)), ("b", None)))) == [("deleted", "a"),
                                                                          ("deleted", "b")]


async def test_start_after_skips_both_sides():
    changes = await collect(
        src(("a", V(1)), ("b", V(1, md5=A)), ("c", V(1, md5=A)), ("d", V(1))),
        cch(("a", V(1)), ("b", V(2)), ("c", V(1, md5=A)), ("e", V(1))), start_after="b")
    assert kinds(changes) == [("unchanged", "c"), ("new", "d"), ("deleted", "e")]
    assert await collect(src(("a", V(1))), cch(("b", V(1))), start_after="z") == []


async def test_start_after_uses_byte_order():
    # "\U0001F600" > "\uffff" in UTF-8 (and code point) order, though not in UTF-16 order
    changes = await collect(src(("\uffff", V(1)), ("\U0001F600", V(1))), cch(),
                            start_after="\uffff")
    assert kinds(changes) == [("new", "\U0001F600")]


async def test_unicode_order():
    names = ["a", "a/b", "ab", "z", "\u00e4", "\u20ac", "\U0001F600"]
    assert [n.encode() for n in names] == sorted(n.encode() for n in names)
    changes = await collect(src(*[(n, V(1, md5=A)) for n in names[::2]]),
                            cch(*[(n, V(1, md5=A)) for n in names[1::2]]))
    assert [c.name for c in changes] == names
    assert [c.kind for c in changes] == ["new", "deleted"] * 3 + ["new"]


@pytest.mark.parametrize("side", ["source", "cached"])
@pytest.mark.parametrize("names", [["b", "a"], ["a", "a"], ["\U0001F600", "\uffff"]],
                         ids=["descending", "duplicate", "utf16-order"])
async def test_out_of_order_raises(side, names):
    ok = ["0", "1"]
    pairs = [(n, V(1)) for n in names]
    source = src(*pairs) if side == "source" else src(*[(n, V(1)) for n in ok])
    cached = cch(*pairs) if side == "cached" else cch(*[(n, V(1)) for n in ok])
    with pytest.raises(ListingOutOfOrder) as info:
        await collect(source, cached)
    assert info.value.code == "ListingOutOfOrder"
    assert info.value.details["side"] == side
    assert isinstance(info.value, BackendError)


async def test_out_of_order_before_start_after_still_raises():
    with pytest.raises(ListingOutOfOrder):
        await collect(src(("b", V(1)), ("a", V(1)), ("z", V(1))), cch(), start_after="m")


async def test_input_errors_propagate():
    async def broken():
        yield ListEntry("a", V(1))
        raise BackendError("boom")

    seen = []
    with pytest.raises(BackendError, match="boom"):
        async for change in merge_diff(broken(), cch(("b", V(1)))):
            seen.append(change.name)
    assert seen == ["a"]


# -- source_entries --

class PagedBackend:
    def __init__(self, names, stuck: bool = False):
        self.names, self.stuck, self.calls = names, stuck, []

    async def list_page(self, bucket, prefix="", token=None, limit=1000):
        self.calls.append((bucket, prefix, token, limit))
        if self.stuck:
            return ListPage([], "same")
        start = int(token or 0)
        chunk = [n for n in self.names if n.startswith(prefix)][start:start + limit]
        end = start + len(chunk)
        more = end < len([n for n in self.names if n.startswith(prefix)])
        return ListPage([ListEntry(n, V(1)) for n in chunk], str(end) if more else None)


async def test_source_entries_pages():
    names = [f"k{i:03d}" for i in range(25)]
    backend = PagedBackend(names)
    got = [e.name async for e in source_entries(backend, "bkt", "k00", page=4)]
    assert got == [n for n in names if n.startswith("k00")]
    assert [c[2] for c in backend.calls] == [None, "4", "8"]
    assert all(c[:2] == ("bkt", "k00") and c[3] == 4 for c in backend.calls)


async def test_source_entries_stuck_token():
    with pytest.raises(BackendError, match="did not advance"):
        [e async for e in source_entries(PagedBackend([], stuck=True), "bkt")]


# -- MaxDelete / decide_deletes --

@pytest.mark.parametrize(("text", "cached", "limit"), [
    (None, 10**9, None), ("100", 5, 100), (100, 5, 100), ("0", 5, 0), (" 7 ", 5, 7),
    ("1%", 1000, 10), ("0.5%", 1000, 5), ("0.5%", 999, 4), ("100%", 3, 3), ("1%", 0, 0),
    ("12.5%", 80, 10),
])
def test_max_delete(text, cached, limit):
    assert MaxDelete.parse(text).limit(cached) == limit


@pytest.mark.parametrize("text", ["", "abc", "-1", -1, "1.5", "%", "101%", "1%%", "1e3",
                                  "nan%", True, 1.5])
def test_max_delete_bad_input(text):
    with pytest.raises(InvalidArgument, match="max-delete"):
        MaxDelete.parse(text)


def test_max_delete_str():
    assert [str(MaxDelete.parse(t)) for t in (None, "5", "0.5%")] == ["unlimited", "5", "0.5%"]


def decide(planned, cached=1000, source=1000, complete=True, cap=None, shrink=0.5):
    return decide_deletes(planned, cached, source, listing_complete=complete,
                          max_delete=MaxDelete.parse(cap), shrink_limit=shrink)


def test_decide_incomplete_listing():
    for planned in (0, 5):
        d = decide(planned, complete=False)
        assert not d.allowed and d.reason.startswith("source listing did not complete")


def test_decide_nothing_planned():
    assert decide(0, cached=0, source=0, cap="0") == DeleteDecision(True, "nothing to delete")


def test_decide_max_delete_count_and_percent():
    assert decide(100, cap="100").allowed
    d = decide(101, cap="100")
    assert not d.allowed and "101" in d.reason and "100" in d.reason
    assert decide(10, cap="1%").allowed
    d = decide(11, cap="1%")
    assert not d.allowed and "11" in d.reason and "limit 10" in d.reason


def test_decide_shrink():
    assert decide(500, cached=1000, source=500).allowed  # exactly half: allowed
    d = decide(501, cached=1000, source=499)
    assert not d.allowed and "shrank" in d.reason and "501" in d.reason
    assert decide(1000, cached=1000, source=0, shrink=1.0).allowed  # check disabled
    assert decide(9, cached=9, source=0).allowed  # too few cached objects to judge
    assert not decide(10, cached=10, source=0).allowed
    assert not decide(200, cached=1000, source=800, shrink=0.1).allowed


def test_decide_allowed():
    d = decide(3, cap="10")
    assert d.allowed and "3" in d.reason


# -- DeleteSpool --

def test_spool_round_trip(tmp_path):
    names = [f"dir/{i:05d}-\u00e4\U0001F600" for i in range(10_000)] + ["bad-\udcff"]
    with DeleteSpool(tmp_path) as spool:
        for i, name in enumerate(names):
            cached = V(i, etag=f"{i:032x}", version_id=str(i)) if i % 3 else None
            spool.append(Change("deleted", name, None, cached, "gone from source"))
        assert len(spool) == len(names)
        path = spool.path
        assert os.path.exists(path) and os.path.dirname(path) == str(tmp_path)
        for _ in range(2):  # repeatable
            back = list(spool)
            assert [c.name for c in back] == names
        assert back[1] == Change("deleted", names[1], None, V(1, etag=f"{1:032x}",
                                                              version_id="1"),
                                 "gone from source")
        assert back[0].cached is None and back[0].source is None
    assert not os.path.exists(path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        spool.append(back[0])


async def test_spool_drain_and_append_after_read(tmp_path):
    spool = DeleteSpool(tmp_path)
    try:
        spool.append(Change("deleted", "a", None, V(1), "r"))
        assert [c.name async for c in spool.drain()] == ["a"]
        spool.append(Change("changed", "b", V(2, md5=A), V(1), "size 1 -> 2"))
        got = [c async for c in spool.drain(batch=1)]
        assert [(c.kind, c.name, c.source) for c in got] == [("deleted", "a", None),
                                                              ("changed", "b", V(2, md5=A))]
    finally:
        spool.close()
        spool.close()  # idempotent
    assert list(tmp_path.iterdir()) == []


def test_spool_removed_when_collected(tmp_path):
    spool = DeleteSpool(tmp_path)
    spool.append(Change("deleted", "a", None, None, "r"))
    del spool
    import gc
    gc.collect()
    assert list(tmp_path.iterdir()) == []
