"""The proxy's k-way merge of the targets' sorted listing pages (used by sync jobs)."""

from __future__ import annotations

import random

import pytest

from aisync.proxy.jobs import _merge_pages


async def paged(names: list[str], size: int):
    for i in range(0, len(names), size):
        yield [{"name": n} for n in names[i:i + size]]


def utf8(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_merges_sorted_streams_of_pages_in_utf8_order(seed):
    rng = random.Random(seed)
    alphabet = ["a", "b", "z", "/", "ä", "é", "\U0001F600", "0"]
    names = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
             for _ in range(500)}
    shards: list[list[str]] = [[], [], [], []]
    for name in names:
        shards[rng.randrange(3)].append(name)  # the fourth target holds nothing
    streams = [paged(sorted(s, key=utf8), rng.randint(1, 50)) for s in shards]
    merged = [e["name"] async for e in _merge_pages(streams)]
    assert merged == sorted(names, key=utf8)


async def test_an_error_of_one_stream_reaches_the_consumer():
    async def broken():
        yield [{"name": "a"}]
        raise RuntimeError("target went away")

    seen = []
    with pytest.raises(RuntimeError, match="went away"):
        async for entry in _merge_pages([broken(), paged(["b", "c"], 1)]):
            seen.append(entry["name"])
    assert seen[:1] == ["a"]
