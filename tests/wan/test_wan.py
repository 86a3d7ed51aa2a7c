"""Two zones and a source over emulated WAN links (see ``conftest.py`` for the topology).

The emulation is checked first (round trips measured with TCP connects from inside zone b);
then a cold GET of a 16 MiB object in zone b is served by zone a's copy over the zone link, not
by the far source; and a sync job of a few hundred objects over the lossy source link completes
with zone b's cached bucket equal to the source byte for byte, losses included.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from urllib.parse import urlparse

from aisync.client import Client
from tests.backends.moto_server import admin_client
from tests.harness import FINAL_JOB_STATES, api, peer_stats, wait_for
from tests.wan.conftest import SOURCE_DELAY_MS, ZONE_DELAY_MS, ZONE_RATE_MBIT

MIB = 1 << 20


def new_source_bucket(source: str) -> tuple[object, str]:
    s3 = admin_client(source)
    name = f"wan-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return s3, name


def test_links_are_emulated(wan, source, zone_a):
    """Lower bounds only: a connect is one round trip, so at least twice the one-way delay."""
    to_source = wan.connect_times("zb", "src", urlparse(source).port)
    to_zone_a = wan.connect_times("zb", "za", zone_a.primary.port)
    assert min(to_source) >= 0.95 * 2 * SOURCE_DELAY_MS / 1000, (wan.mode, to_source)
    assert min(to_zone_a) >= 0.95 * 2 * ZONE_DELAY_MS / 1000, (wan.mode, to_zone_a)


def test_cold_get_in_zone_b_is_served_by_zone_a_over_the_zone_link(source, zone_a, zone_b):
    s3, bucket = new_source_bucket(source)
    data = os.urandom(16 * MIB)
    s3.put_object(Bucket=bucket, Key="shard-0000.tar", Body=data)
    uri = f"s3://{bucket}"
    with Client(zone_a.endpoint) as a, Client(zone_b.endpoint) as b:
        a.create_bucket(uri, profile="lab")
        b.create_bucket(uri, profile="lab")
        b.set_bucket_props(uri, peers=["zone-a"])
        assert a.get_object(uri, "shard-0000.tar") == data          # over the lossy link
        wait_for(lambda: [o.name for o in a.iter_objects(uri, cached=True)]
                 == ["shard-0000.tar"], 60, "zone a's copy committed")

        before = peer_stats(zone_b)
        started = time.perf_counter()
        assert b.get_object(uri, "shard-0000.tar") == data          # cold in zone b
        elapsed = time.perf_counter() - started
        after = peer_stats(zone_b)
    assert after["peer_hits"] == before["peer_hits"] + 1, (before, after)
    assert after["bytes_from_peers"] - before["bytes_from_peers"] >= len(data), (before, after)
    assert after["bytes_from_sources"] == before["bytes_from_sources"], (before, after)
    # the zone link's rate applied: 16 MiB cannot cross it faster (a lower bound only)
    assert elapsed >= 0.9 * len(data) * 8 / (ZONE_RATE_MBIT * 1e6), elapsed


def test_sync_over_the_lossy_link_leaves_the_buckets_equal(wan, source, zone_b):
    s3, bucket = new_source_bucket(source)
    rng = random.Random(5)
    objects = {f"part-{i // 100}/obj-{i:04d}.bin": os.urandom(rng.randint(1, 96 * 1024))
               for i in range(300)}
    objects["empty.bin"] = b""
    for name, body in objects.items():
        s3.put_object(Bucket=bucket, Key=name, Body=body)
    uri = f"s3://{bucket}"
    drops_before = wan.drops("zb", "src")
    with Client(zone_b.endpoint) as b:
        b.create_bucket(uri, profile="lab")
        status, job = api(zone_b, "POST", "/v1/jobs", {"kind": "sync", "bucket": uri})
        assert status == 201, job

        def finished() -> dict | None:
            status, now = api(zone_b, "GET", f"/v1/jobs/{job['id']}?wait=20", timeout=40)
            assert status == 200, now
            return now if now["state"] in FINAL_JOB_STATES else None
        done = wait_for(finished, 280, f"sync job {job['id']}")
        assert done["state"] == "succeeded", done
        assert done["progress"]["added"] == len(objects), done
        assert done["progress"]["failed"] == 0, done

        cached = {o.name: o.size for o in b.iter_objects(uri, cached=True)}
        assert cached == {name: len(body) for name, body in objects.items()}
        for name, body in objects.items():
            assert b.get_object(uri, name) == body, name
    assert wan.drops("zb", "src") > drops_before, "the sync never met a loss"
