"""Rendezvous placement: uniform spread, minimal movement, agreement between callers."""

from __future__ import annotations

from collections import Counter

import pytest

from aisync.cluster.maps import ClusterMap, NodeInfo
from aisync.util import hrw
from aisync.util.names import BucketRef

FROZEN = ["target-2", "target-0", "target-2", "target-1"]
NAMES = [f"train/shard-{i:06d}.tar" for i in range(100_000)]


def cluster_with(n: int) -> ClusterMap:
    cluster_map = ClusterMap.bootstrap("z", NodeInfo(id="p", role="proxy", url="http://p"))
    for i in range(n):
        cluster_map = cluster_map.with_node(NodeInfo(id=f"t{i}", role="target", url=f"http://t{i}"))
    return cluster_map


@pytest.mark.parametrize("targets", [3, 4, 7, 10, 16])
def test_spread_is_within_10_percent_of_uniform(targets):
    cluster_map = cluster_with(targets)
    bucket = BucketRef("b")
    counts = Counter(cluster_map.owner(bucket, name).id for name in NAMES)
    expected = len(NAMES) / targets
    assert len(counts) == targets
    for node, count in counts.items():
        assert abs(count - expected) / expected < 0.10, (node, count, expected)


@pytest.mark.parametrize("targets", [3, 8, 15])
def test_adding_a_target_moves_about_one_nth_and_only_to_it(targets):
    bucket = BucketRef("b")
    before = cluster_with(targets)
    after = before.with_node(NodeInfo(id=f"t{targets}", role="target", url="http://new"))
    moved = 0
    for name in NAMES:
        old, new = before.owner(bucket, name).id, after.owner(bucket, name).id
        if old != new:
            moved += 1
            assert new == f"t{targets}", "a name moved between two old targets"
    share = moved / len(NAMES)
    expected = 1 / (targets + 1)
    assert abs(share - expected) / expected < 0.10


def test_inactive_target_owns_nothing_and_others_keep_their_names():
    bucket = BucketRef("b")
    cluster_map = cluster_with(4)
    down = cluster_map.with_state("t2", "inactive")
    for name in NAMES[:20_000]:
        old, new = cluster_map.owner(bucket, name).id, down.owner(bucket, name).id
        assert new != "t2"
        if old != "t2":
            assert new == old


def test_buckets_place_the_same_name_independently():
    cluster_map = cluster_with(8)
    owners = {cluster_map.owner(BucketRef(f"bucket{i}"), "same-name").id for i in range(200)}
    assert len(owners) == 8


def test_rank_is_a_permutation_led_by_the_owner():
    seeded = [(hrw.node_seed(f"n{i}"), f"n{i}") for i in range(5)]
    for key in ("a", "b/c", "ünï"):
        ranked = hrw.rank(key, seeded)
        assert sorted(ranked) == sorted(i for _, i in seeded)
        assert ranked[0] == hrw.pick(key, seeded)


def test_placement_is_frozen_across_releases():
    # Fixed values: if these change, every cluster would re-shuffle its data on upgrade.
    assert hrw.node_seed("target-0") == 0x3DF357F32579C2D8
    seeded = [(hrw.node_seed(f"target-{i}"), f"target-{i}") for i in range(3)]
    assert [hrw.pick(f"ais/b/{k}", seeded) for k in ("a", "b", "c", "d")] == FROZEN


def test_no_targets_is_a_typed_error():
    from aisync.util.errors import NoTargets

    cluster_map = ClusterMap.bootstrap("z", NodeInfo(id="p", role="proxy", url="http://p"))
    with pytest.raises(NoTargets):
        cluster_map.owner(BucketRef("b"), "x")
