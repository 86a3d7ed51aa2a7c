"""Rendezvous (highest random weight) hashing with xxhash.

``owner(key, nodes) = argmax over n of h(n, key)``: every caller holding the same node list picks
the same owner with no lookup table, and when a node joins only the keys that now rank it highest
move (about 1/N of them); keys never move between two nodes that were both present before.

The score is ``xxh3_64(key, seed=node_seed)``, with each node's seed derived once from its id,
so one hash per (node, key) pair and no string concatenation on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import xxhash


def node_seed(node_id: str) -> int:
    """A 64-bit seed derived from a node (or mountpath) id; stable across processes and hosts."""
    return xxhash.xxh3_64_intdigest(node_id.encode("utf-8"))


def score(seed: int, key: bytes) -> int:
    return xxhash.xxh3_64_intdigest(key, seed=seed)


def pick(key: str, seeded: Sequence[tuple[int, str]]) -> str:
    """Return the id with the highest score for ``key`` among ``(seed, id)`` pairs.

    Ties (astronomically unlikely) break on the id so every caller agrees.
    """
    if not seeded:
        raise LookupError("no nodes to place on")
    kb = key.encode("utf-8", "surrogatepass")
    best_score, best_id = -1, ""
    for seed, ident in seeded:
        s = xxhash.xxh3_64_intdigest(kb, seed=seed)
        if s > best_score or (s == best_score and ident > best_id):
            best_score, best_id = s, ident
    return best_id


def rank(key: str, seeded: Iterable[tuple[int, str]]) -> list[str]:
    """All ids ordered by descending score for ``key`` (owner first, then fallbacks)."""
    kb = key.encode("utf-8", "surrogatepass")
    scored = [(xxhash.xxh3_64_intdigest(kb, seed=seed), ident) for seed, ident in seeded]
    scored.sort(reverse=True)
    return [ident for _, ident in scored]
