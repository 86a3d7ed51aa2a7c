"""Cluster maps, metasync, keepalive and multiple proxies, with real node processes."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

from aisync.client import Client
from tests.harness import FAST_FAILURE_DETECTION, LocalCluster, member_json, wait_for


@pytest.fixture
def fresh():
    with LocalCluster(targets=3, proxies=2, extra=FAST_FAILURE_DETECTION) as c:
        yield c


def test_every_node_holds_the_same_map(fresh):
    primary_map = fresh.cluster_map()
    assert primary_map["primary"] == "proxy-0"
    assert {n["role"] for n in primary_map["nodes"].values()} == {"proxy", "target"}
    for node in fresh.nodes:
        assert fresh.cluster_map(via=node)["version"] == primary_map["version"]


def test_read_after_write_through_a_different_proxy(fresh):
    p0, p1 = fresh.proxies
    with Client(p0.url) as c0, Client(p1.url) as c1:
        bucket = f"raw-{uuid.uuid4().hex[:8]}"
        c1.create_bucket(bucket)  # forwarded by the non-primary proxy to the primary
        for i in range(20):
            payload = os.urandom(100 + i * 5000)
            c0.put_object(bucket, f"k{i}", payload)
            assert c1.get_object(bucket, f"k{i}") == payload
            c1.delete_object(bucket, f"k{i}")
            assert not any(e.name == f"k{i}" for e in c0.iter_objects(bucket))


def test_older_map_is_rejected_and_newest_persists_across_restart(fresh):
    target = fresh.targets[0]
    current = fresh.cluster_map(via=target)
    older = dict(current, version=current["version"] - 1)
    # sent as a member would (signed with the cluster secret): the map itself is refused
    status, body = member_json(fresh, target.url, "PUT", "/v1/metasync",
                               json.dumps({"cluster_map": older}).encode())
    assert (status, body["code"]) == (409, "StaleMapVersion")
    foreign = dict(current, uuid="0" * 32, version=current["version"] + 5)
    status, body = member_json(fresh, target.url, "PUT", "/v1/metasync",
                               json.dumps({"cluster_map": foreign}).encode())
    assert status == 400
    held = current["version"]
    fresh.stop_node(target)
    fresh.start_node(target)
    fresh.wait_ready()
    assert fresh.cluster_map(via=target)["version"] >= held
    assert fresh.cluster_map(via=target)["uuid"] == current["uuid"]


def test_keepalive_removes_a_dead_target_and_readmits_it(fresh):
    with Client(fresh.endpoint) as client:
        bucket = f"ka-{uuid.uuid4().hex[:8]}"
        client.create_bucket(bucket)
        victim = fresh.targets[1]
        payloads = {f"obj-{i}": os.urandom(3000 + i) for i in range(40)}
        for name, data in payloads.items():
            client.put_object(bucket, name, data)
        cluster_map = fresh.cluster_map()
        before = cluster_map["version"]
        fresh.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim.id not in fresh.active_targets(), 10.0,
                 "keepalive to mark the killed target inactive (default budget: 10 s)")
        assert fresh.cluster_map()["version"] > before
        # Objects owned by the surviving targets are still served (HRW: their owner is unchanged).
        survivors_served = 0
        for name, data in payloads.items():
            try:
                assert client.get_object(bucket, name) == data
                survivors_served += 1
            except FileNotFoundError:
                pass  # its owner is the dead target
        assert 0 < survivors_served < len(payloads)
        fresh.start_node(victim)
        wait_for(lambda: victim.id in fresh.active_targets(), 15.0, "re-admission")
        for name, data in payloads.items():
            assert client.get_object(bucket, name) == data


def test_cluster_status_reports_every_node(fresh):
    with Client(fresh.proxies[1].url) as client:
        status = client.cluster_status()
    assert status["primary"] == "proxy-0"
    ids = {n["id"] for n in status["nodes"]}
    assert ids == {n.id for n in fresh.nodes}
    for node in status["nodes"]:
        assert node["map_version"] == status["map_version"]
        if node["role"] == "target":
            assert node["disks"] and node["disks"][0]["total"] > 0
    primary = next(n for n in status["nodes"] if n["id"] == "proxy-0")
    assert primary["workers"][0]["name"] == "keepalive"
