"""Job lifecycles on a real cluster: resume after the primary is killed (nothing copied twice),
a target killed mid-job, abort, and schedules that never overlap their own previous run.

Jobs are slowed with their own bandwidth limit so the test can act while they run; the test
waits on observable state (job progress, schedule runs), never on sleeps.
"""

from __future__ import annotations

import os
import uuid

import pytest

from aisync.client import Client
from tests.harness import FAST_FAILURE_DETECTION, LocalCluster, http_json, wait_for, wait_job
from tests.harness import api as call

OBJECTS = 24
SIZE = 64 * 1024


@pytest.fixture
def cluster():
    with LocalCluster(targets=3, extra=FAST_FAILURE_DETECTION) as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster.endpoint) as c:
        yield c


def job_state(cluster, job_id: str) -> dict:
    status, job = call(cluster, "GET", f"/v1/jobs/{job_id}")
    assert status == 200, job
    return job


def transferred(cluster) -> int:
    return sum(http_json(f"{t.url}/v1/node/status")[1]["jobs"]["transferred"]
               for t in cluster.targets)


@pytest.fixture
def source(client, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    for i in range(OBJECTS):
        (share / f"obj-{i:03d}").write_bytes(os.urandom(SIZE))
    uri = f"fs://src-{uuid.uuid4().hex[:6]}"
    client.create_bucket(uri, settings={"path": str(share)})
    return uri, share


def slow_sync(cluster, uri: str, **extra) -> str:
    # ~6 s in all: long enough to act on while it runs
    spec = {"kind": "sync", "bucket": uri, "bandwidth": OBJECTS * SIZE // 6, "batch": 2,
            **extra}
    status, job = call(cluster, "POST", "/v1/jobs", spec)
    assert status == 201, job
    return job["id"]


def test_killed_primary_resumes_the_job_and_copies_nothing_twice(cluster, client, source):
    uri, share = source
    job_id = slow_sync(cluster, uri)
    wait_for(lambda: job_state(cluster, job_id).get("checkpoint"), 60, "a saved checkpoint")
    cluster.kill(cluster.primary)
    cluster.start_node(cluster.primary)
    job = wait_job(cluster, job_id)
    assert job["state"] == "succeeded", job
    assert transferred(cluster) == OBJECTS  # each object fetched exactly once
    cached = {o.name for o in client.iter_objects(uri, cached=True)}
    assert cached == {p.name for p in share.iterdir()}
    for name in ("obj-000", f"obj-{OBJECTS - 1:03d}"):
        assert client.get_object(uri, name) == (share / name).read_bytes()


def test_target_killed_mid_job_the_job_still_finishes(cluster, client, source):
    uri, share = source
    job_id = slow_sync(cluster, uri)
    wait_for(lambda: job_state(cluster, job_id)["progress"].get("added", 0) >= 2, 60,
             "progress")
    victim = cluster.targets[1]
    cluster.kill(victim)
    job = wait_job(cluster, job_id, timeout=180)
    # The dead target's objects moved to the others once keepalive marked it inactive; the job
    # ran them there and finished.
    assert job["state"] == "succeeded", job
    assert victim.id not in cluster.active_targets()
    # Copies the dead target made before it died are out of reach (no replicas yet): a second
    # sync fetches exactly those again, and the cached view is whole.
    names = {p.name for p in share.iterdir()}
    missing = names - {o.name for o in client.iter_objects(uri, cached=True)}
    again = wait_job(cluster, slow_sync(cluster, uri))
    assert again["state"] == "succeeded" and again["progress"]["added"] == len(missing), again
    assert {o.name for o in client.iter_objects(uri, cached=True)} == names


def test_abort_stops_a_running_job(cluster, client, source):
    uri, _ = source
    job_id = slow_sync(cluster, uri)
    wait_for(lambda: job_state(cluster, job_id)["state"] == "running", 30, "running")
    status, job = call(cluster, "POST", f"/v1/jobs/{job_id}/abort")
    assert status == 200 and job["state"] == "aborted", job
    done = job["progress"].get("added", 0)
    assert done < OBJECTS
    again = job_state(cluster, job_id)
    assert again["state"] == "aborted" and again["error"] == "aborted by request"
    # aborting a finished job is harmless
    assert call(cluster, "POST", f"/v1/jobs/{job_id}/abort")[1]["state"] == "aborted"


def test_a_schedule_never_overlaps_its_previous_run(cluster, client, source):
    uri, _ = source
    name = f"every-second-{uuid.uuid4().hex[:4]}"
    status, view = call(cluster, "POST", "/v1/schedules", {
        "name": name, "every": "1s",
        "job": {"kind": "sync", "bucket": uri, "bandwidth": OBJECTS * SIZE // 6, "batch": 2}})
    assert status == 201, view

    def runs() -> list[dict]:
        return call(cluster, "GET", f"/v1/schedules/{name}")[1]["runs"]

    wait_for(lambda: any(r["outcome"] == "skipped" for r in runs()), 60, "a skipped run")
    history = runs()
    assert call(cluster, "DELETE", f"/v1/schedules/{name}")[0] == 204
    skipped = [r for r in history if r["outcome"] == "skipped"]
    assert all("still running" in r["reason"] or "still pending" in r["reason"]
               for r in skipped), skipped
    jobs = [j for j in call(cluster, "GET", "/v1/jobs?limit=1000")[1]["jobs"]
            if j.get("schedule") == name]
    assert jobs and {r["job_id"] for r in history if r["outcome"] == "started"} <= \
        {j["id"] for j in jobs}
    spans = sorted((j["created_at"], j["finished_at"] or "9999") for j in jobs)
    for (_, end), (begin, _) in zip(spans, spans[1:], strict=False):
        assert begin >= end, spans  # each run started after the previous one finished


def test_schedules_survive_a_primary_restart(cluster, source):
    uri, _ = source
    status, view = call(cluster, "POST", "/v1/schedules", {
        "name": "nightly", "cron": "0 2 * * *", "job": {"kind": "sync", "bucket": uri}})
    assert status == 201, view
    cluster.kill(cluster.primary)
    cluster.start_node(cluster.primary)
    wait_for(lambda: call(cluster, "GET", "/v1/schedules/nightly")[0] == 200, 60,
             "the restarted primary")
    status, again = call(cluster, "GET", "/v1/schedules/nightly")
    assert again["cron"] == "0 2 * * *" and again["next_run"], again
    assert again["job"]["bucket"] == view["job"]["bucket"]
