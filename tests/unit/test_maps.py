"""Cluster and bucket maps: immutability, versioning, the newer-only rule, persistence."""

from __future__ import annotations

import asyncio

import pytest

from aisync.catalog import Catalog
from aisync.cluster.maps import BucketMap, BucketProps, ClusterMap, NodeInfo, check_newer
from aisync.cluster.state import ClusterState
from aisync.util.errors import InvalidArgument, StaleMapVersion
from aisync.util.names import BucketRef


def base() -> ClusterMap:
    return ClusterMap.bootstrap("zone-a", NodeInfo(id="p0", role="proxy", url="http://p0"))


def test_maps_are_immutable_and_each_change_is_a_new_version():
    m1 = base()
    m2 = m1.with_node(NodeInfo(id="t0", role="target", url="http://t0"))
    assert (m1.version, m2.version) == (1, 2)
    assert "t0" not in m1.nodes
    with pytest.raises(ValueError):
        m2.version = 9
    m3 = m2.with_state("t0", "inactive")
    assert m3.nodes["t0"].state == "inactive" and m2.nodes["t0"].state == "active"
    assert m3.without_node("t0").version == 4
    assert m3.uuid == m1.uuid


def test_check_newer_rules():
    m1 = base()
    m2 = m1.with_node(NodeInfo(id="t0", role="target", url="http://t0"))
    assert check_newer(None, m1)
    assert check_newer(m1, m2)
    assert not check_newer(m2, m2)
    with pytest.raises(StaleMapVersion):
        check_newer(m2, m1)
    other = ClusterMap.bootstrap("zone-a", NodeInfo(id="p0", role="proxy", url="http://p0"))
    with pytest.raises(InvalidArgument):
        check_newer(m1, other.bumped_to(50))


def test_bucket_map_versions():
    b1 = BucketMap.bootstrap("u")
    b2 = b1.with_bucket(BucketProps(name="train"))
    assert b2.get(BucketRef("train")) is not None and b1.get(BucketRef("train")) is None
    b3 = b2.without_bucket(BucketRef("train"))
    assert (b3.version, b3.get(BucketRef("train"))) == (3, None)


async def test_state_persists_newest_and_rejects_older(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = Catalog(url)
    catalog.upgrade()

    async def run(fn, *args):
        return await asyncio.to_thread(fn, *args)

    state = ClusterState(catalog, run)
    seen = []

    async def listener(cluster_map, bucket_map, old_bucket_map):
        seen.append((cluster_map and cluster_map.version, bucket_map and bucket_map.version))

    state.add_listener(listener)
    m1 = base()
    m2 = m1.with_node(NodeInfo(id="t0", role="target", url="http://t0"))
    b1 = BucketMap.bootstrap(m1.uuid)
    assert await state.apply(m2, b1)
    assert not await state.apply(m2)
    with pytest.raises(StaleMapVersion):
        await state.apply(m1)
    assert seen == [(2, 1)]
    catalog.close()

    reopened = Catalog(url)
    state2 = ClusterState(reopened, run)
    await state2.load()
    assert state2.cluster_map == m2 and state2.bucket_map == b1
    reopened.close()


def test_copies_never_reuse_cached_placement_views():
    m = base().with_node(NodeInfo(id="t0", role="target", url="http://t0"))
    assert [n.id for n in m.active_targets] == ["t0"]  # fills the cache
    m.owner(BucketRef("b"), "x")
    copy = m.model_copy(update={"nodes": {"p0": m.nodes["p0"],
                                          "t9": NodeInfo(id="t9", role="target", url="u")}})
    assert [n.id for n in copy.active_targets] == ["t9"]
    assert copy.owner(BucketRef("b"), "x").id == "t9"
    assert m.bumped_to(10).owner(BucketRef("b"), "x").id == "t0"
