"""The per-bucket change feed on a real cluster: numbered puts and deletes merged across
targets, paging, and the gap answer after a target lost its index to a crash."""

from __future__ import annotations

import uuid

import pytest

from aisync.client import Client
from tests.harness import LocalCluster, http_json, wait_for


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(targets=3) as c:
        yield c


def feed(cluster, bucket: str, since: int | None = None, limit: int = 1000):
    query = f"limit={limit}" + (f"&since={since}" if since is not None else "")
    return http_json(f"{cluster.endpoint}/v1/buckets/{bucket}/changes?{query}")


def test_puts_and_deletes_in_order_and_paged(cluster):
    name = f"feed-{uuid.uuid4().hex[:6]}"
    with Client(cluster.endpoint) as c:
        c.create_bucket(f"ais://{name}")
        status, head = feed(cluster, name)
        assert status == 200 and head["changes"] == []
        for i in range(30):
            c.put_object(f"ais://{name}", f"k{i:02d}", b"x" * i)
        c.delete_object(f"ais://{name}", "k05")
        c.put_object(f"ais://{name}", "k05", b"again")
    seen, cursor = [], head["next"]
    while True:
        status, page = feed(cluster, name, cursor, limit=7)
        assert status == 200, page
        seen += page["changes"]
        assert page["next"] >= cursor
        cursor = page["next"]
        if not page["more"]:
            break
    assert [c["seq"] for c in seen] == sorted(c["seq"] for c in seen)
    ops = [(c["op"], c["name"]) for c in seen]
    assert len(ops) == 32
    assert ops[-2:] == [("delete", "k05"), ("put", "k05")]
    assert {n for _, n in ops} == {f"k{i:02d}" for i in range(30)}
    assert feed(cluster, name, cursor)[1]["changes"] == []  # caught up
    for bad in ("-1", "x"):
        assert http_json(f"{cluster.endpoint}/v1/buckets/{name}/changes?since={bad}")[0] == 400


def test_a_target_that_lost_its_index_makes_old_cursors_a_gap(cluster):
    name = f"gap-{uuid.uuid4().hex[:6]}"
    with Client(cluster.endpoint) as c:
        c.create_bucket(f"ais://{name}")
        cursor = feed(cluster, name)[1]["next"]
        c.put_object(f"ais://{name}", "a", b"1")
    victim = cluster.targets[0]
    cluster.kill(victim)  # unclean stop: its index is rebuilt from the files at restart
    cluster.start_node(victim)
    wait_for(lambda: cluster._health(victim) and victim.id in cluster.active_targets(), 60,
             "the target back")
    status, err = feed(cluster, name, cursor)
    assert status == 410 and err["code"] == "ChangeFeedGap", err
    status, head = feed(cluster, name)
    assert status == 200 and feed(cluster, name, head["next"])[0] == 200
