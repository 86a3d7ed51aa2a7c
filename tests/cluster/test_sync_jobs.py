"""The sync engine on a real cluster: on-access policies, prefetch / sync / copy / evict jobs,
reports, fail-closed deletes, dry runs, abort, schedules and the freshness watermark.

Sources are real: an ``fs://`` directory changed out of band by the test, and an ``s3://``
bucket on a moto server (versioned, so a job can pin the version it compared).
"""

from __future__ import annotations

import os
import urllib.request
import uuid

import pytest

from aisync.client import Client
from aisync.util.errors import NotFound, ObjectNotFound
from tests.backends.moto_server import admin_client
from tests.cluster.conftest import lab_profile
from tests.harness import LocalCluster, http_json, new_fs_bucket, run_job, wait_for
from tests.harness import api as call
from tests.harness import job_report as report


@pytest.fixture(scope="module", params=[0, 1], ids=["one-process", "read-workers"])
def cluster(request, moto):
    with LocalCluster(targets=3, extra={"backends": lab_profile(moto),
                                        "http": {"read_workers": request.param}}) as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster.endpoint) as c:
        yield c


def get_latest(cluster, uri: str, name: str) -> bytes:
    """A GET with the per-request ``latest`` override (redirects followed)."""
    provider, _, bucket = uri.partition("://")
    url = f"{cluster.endpoint}/v1/objects/{bucket}/{name}?provider={provider}&latest=true"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=30) as resp:  # to the Location a proxy signed
        return resp.read()


def cold_get(client, uri: str, name: str) -> bytes:
    """A cold GET, returning once the copy is committed (a cold GET answers the client before
    its copy is renamed into place)."""
    data = client.get_object(uri, name)
    wait_for(lambda: name in cached_names(client, uri), 30, f"{uri}/{name} cached")
    return data


def cached_names(client, uri: str) -> dict[str, int]:
    return {o.name: o.size for o in client.iter_objects(uri, cached=True)}


@pytest.fixture
def fs_bucket(client, tmp_path):
    return new_fs_bucket(client, tmp_path)


def write(share, name: str, data: bytes) -> None:
    """Replace a source file the way most tools do (temp file, rename): a new inode, so the
    fs:// version token changes even within one tick of the file system's clock."""
    path = share / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- on-access policies --

def test_validate_refetches_same_size_change_and_synchronize_drops_deleted(
        cluster, client, fs_bucket):
    uri, share = fs_bucket
    write(share, "a.bin", b"1" * 1000)
    assert cold_get(client, uri, "a.bin") == b"1" * 1000
    write(share, "a.bin", b"2" * 1000)  # same size, out of band
    assert client.get_object(uri, "a.bin") == b"1" * 1000  # consistency=none: the cached copy
    assert get_latest(cluster, uri, "a.bin") == b"2" * 1000  # per-request override

    status, props = call(cluster, "PATCH", f"/v1/buckets/{uri[5:]}?provider=fs",
                         {"consistency": "validate"})
    assert status == 200 and props["consistency"] == "validate", props
    write(share, "a.bin", b"3" * 1000)
    assert client.get_object(uri, "a.bin") == b"3" * 1000
    (share / "a.bin").unlink()
    with pytest.raises(ObjectNotFound):
        client.get_object(uri, "a.bin")
    assert "a.bin" in cached_names(client, uri)  # validate keeps the copy

    status, props = call(cluster, "PATCH", f"/v1/buckets/{uri[5:]}?provider=fs",
                         {"consistency": "synchronize"})
    assert status == 200, props
    with pytest.raises(ObjectNotFound):
        client.get_object(uri, "a.bin")
    assert "a.bin" not in cached_names(client, uri)  # synchronize removed it

    request = urllib.request.Request(f"{cluster.endpoint}/v1/metrics",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'aisync_on_access_total{event="out_of_band_changes"}' in metrics
    assert 'aisync_on_access_total{event="removed_copies"} 1' in metrics


def test_max_staleness_serves_cached_within_the_window(cluster, client, fs_bucket):
    uri, share = fs_bucket
    status, props = call(cluster, "PATCH", f"/v1/buckets/{uri[5:]}?provider=fs",
                         {"consistency": "validate", "max_staleness": "1h"})
    assert status == 200 and props["max_staleness"] == 3600.0, props
    write(share, "b.bin", b"old!")
    assert cold_get(client, uri, "b.bin") == b"old!"
    write(share, "b.bin", b"new!")
    assert client.get_object(uri, "b.bin") == b"old!"  # within the window: not asked
    assert get_latest(cluster, uri, "b.bin") == b"new!"


def test_bad_bucket_props_are_clear_errors(cluster, fs_bucket):
    uri, _ = fs_bucket
    path = f"/v1/buckets/{uri[5:]}?provider=fs"
    for body, words in (({"consistency": "sometimes"}, "consistency"),
                        ({"max_staleness": "soon"}, "duration"),
                        ({"provider": "s3"}, "cannot be changed")):
        status, err = call(cluster, "PATCH", path, body)
        assert status == 400 and words in err["message"], (body, err)


# -- jobs --

def test_prefetch_then_sync_with_out_of_band_changes(cluster, client, fs_bucket):
    uri, share = fs_bucket
    files = {f"train/{i:03d}.bin": os.urandom(1000 + i) for i in range(40)}
    for name, data in files.items():
        write(share, name, data)
    job = run_job(cluster, kind="prefetch", bucket=uri, prefix="train/")
    assert job["state"] == "succeeded", job
    assert job["progress"]["added"] == 40 and job["progress"]["failed"] == 0
    assert cached_names(client, uri) == {n: len(d) for n, d in files.items()}
    rows = report(cluster, job["id"])
    assert len(rows) == 40 and {a for a, _ in rows.values()} == {"added"}

    again = run_job(cluster, kind="prefetch", bucket=uri)
    assert again["progress"]["added"] == 0 and again["progress"]["unchanged"] == 40

    # Out of band: one same-size overwrite, one new, one deleted, one delete-and-recreate.
    write(share, "train/000.bin", os.urandom(1000))
    write(share, "train/new.bin", b"new")
    (share / "train/001.bin").unlink()
    (share / "train/002.bin").unlink()
    write(share, "train/002.bin", os.urandom(1002))
    sync = run_job(cluster, kind="sync", bucket=uri, delete=True)
    assert sync["state"] == "succeeded", sync
    rows = report(cluster, sync["id"])
    assert {n: a for n, (a, _) in rows.items()} == {
        "train/000.bin": "updated", "train/new.bin": "added", "train/001.bin": "deleted",
        "train/002.bin": "updated"}
    for name in ("train/000.bin", "train/002.bin", "train/new.bin", "train/039.bin"):
        assert client.get_object(uri, name) == (share / name).read_bytes()
    assert set(cached_names(client, uri)) == {
        str(p.relative_to(share)) for p in share.rglob("*") if p.is_file()}

    status, info = call(cluster, "GET", f"/v1/buckets/{uri[5:]}/info?provider=fs")
    assert status == 200 and info["freshness"]["job_id"] == sync["id"], info
    assert info["freshness"]["verified_at"] is not None


def test_sync_fails_closed_on_max_delete_and_dry_run_changes_nothing(
        cluster, client, fs_bucket):
    uri, share = fs_bucket
    for i in range(20):
        write(share, f"{i:02d}", b"x" * i)
    assert run_job(cluster, kind="prefetch", bucket=uri)["progress"]["added"] == 20
    for i in range(5):
        (share / f"{i:02d}").unlink()

    dry = run_job(cluster, kind="sync", bucket=uri, delete=True, dry_run=True)
    assert dry["state"] == "succeeded", dry
    assert {a for a, _ in report(cluster, dry["id"]).values()} == {"would-delete"}
    assert len(cached_names(client, uri)) == 20

    capped = run_job(cluster, kind="sync", bucket=uri, delete=True, max_delete="2")
    assert capped["state"] == "deletes-refused", capped
    assert "deletes refused" in (capped["error"] or ""), capped
    assert len(cached_names(client, uri)) == 20
    rows = report(cluster, capped["id"])
    assert len(rows) == 5 and all(a == "skipped" and "refused" in r for a, r in rows.values())

    shrunk = run_job(cluster, kind="sync", bucket=uri, delete=True, max_delete="25%")
    assert shrunk["state"] == "succeeded" and shrunk["progress"]["deleted"] == 5, shrunk
    assert len(cached_names(client, uri)) == 15


def test_sync_deletes_nothing_when_the_listing_fails_or_shrinks(cluster, client, fs_bucket):
    uri, share = fs_bucket
    for i in range(20):
        write(share, f"k{i:02d}", b"data")
    run_job(cluster, kind="prefetch", bucket=uri)
    moved = share.with_name("share-away")
    share.rename(moved)  # the source's listing now fails
    try:
        job = run_job(cluster, kind="sync", bucket=uri, delete=True)
    finally:
        moved.rename(share)
    assert job["state"] == "failed" and job["progress"]["deleted"] == 0, job
    assert len(cached_names(client, uri)) == 20

    for i in range(15):  # 75 % gone: looks like a truncated listing
        (share / f"k{i:02d}").unlink()
    job = run_job(cluster, kind="sync", bucket=uri, delete=True)
    assert job["state"] == "deletes-refused", job
    assert "shrank" in job["error"] or "shrink" in job["error"], job
    assert job["progress"]["deleted"] == 0 and len(cached_names(client, uri)) == 20
    status, info = call(cluster, "GET", f"/v1/buckets/{uri[5:]}/info?provider=fs")
    assert status == 200 and info["freshness"]["last_job_state"] == "deletes-refused", info
    job = run_job(cluster, kind="sync", bucket=uri, delete=True, shrink_limit=1.0)
    assert job["state"] == "succeeded", job
    assert job["progress"]["deleted"] == 15 and len(cached_names(client, uri)) == 5


def test_copy_between_buckets_is_incremental_and_evict_drops_copies(
        cluster, client, fs_bucket):
    uri, share = fs_bucket
    for i in range(12):
        write(share, f"v/{i}", os.urandom(100 + i))
    dest = f"ais://snap-{uuid.uuid4().hex[:6]}"
    client.create_bucket(dest)
    first = run_job(cluster, kind="copy", bucket=uri, destination=dest, prefix="v/")
    assert first["progress"]["added"] == 12, first
    for i in range(12):
        assert client.get_object(dest, f"v/{i}") == (share / f"v/{i}").read_bytes()
    write(share, "v/3", os.urandom(103))
    second = run_job(cluster, kind="copy", bucket=uri, destination=dest)
    assert second["progress"]["updated"] == 1 and second["progress"]["added"] == 0, second
    assert client.get_object(dest, "v/3") == (share / "v/3").read_bytes()

    # ais -> ais copy compares the cluster's own checksums
    dest2 = f"ais://snap2-{uuid.uuid4().hex[:6]}"
    client.create_bucket(dest2)
    assert run_job(cluster, kind="copy", bucket=dest, destination=dest2)["progress"]["added"] == 12
    assert run_job(cluster, kind="copy", bucket=dest, destination=dest2)["progress"]["added"] == 0

    run_job(cluster, kind="prefetch", bucket=uri)
    evict = run_job(cluster, kind="evict", bucket=uri, prefix="v/1")
    assert evict["progress"]["evicted"] == 3, evict  # v/1, v/10, v/11
    assert not any(n.startswith("v/1") for n in cached_names(client, uri))
    assert (share / "v/1").exists()  # the source is untouched

    kept = run_job(cluster, kind="evict", bucket=uri, keep_metadata=True)
    assert kept["state"] == "succeeded" and cached_names(client, uri) == {}
    assert client.bucket_info(uri)["name"] == uri.split("://")[1]  # still registered
    run_job(cluster, kind="prefetch", bucket=uri, prefix="v/2")
    gone = run_job(cluster, kind="evict", bucket=uri)  # whole bucket, no --keep-metadata
    assert gone["state"] == "succeeded", gone
    with pytest.raises(NotFound):
        client.bucket_info(uri)
    assert (share / "v/2").exists()


def test_s3_versioned_sync_and_bad_jobs(cluster, client, moto):
    name = f"s3-{uuid.uuid4().hex[:8]}"
    admin = admin_client(moto)
    admin.create_bucket(Bucket=name)
    admin.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    for i in range(10):
        admin.put_object(Bucket=name, Key=f"o{i}", Body=b"a" * 64)
    client.create_bucket(f"s3://{name}", profile="lab")
    assert run_job(cluster, kind="sync", bucket=f"s3://{name}")["progress"]["added"] == 10
    admin.put_object(Bucket=name, Key="o1", Body=b"b" * 64)  # same size
    admin.delete_object(Bucket=name, Key="o2")
    job = run_job(cluster, kind="sync", bucket=f"s3://{name}", delete=True)
    assert {n: a for n, (a, _) in report(cluster, job["id"]).items()} == {
        "o1": "updated", "o2": "deleted"}
    assert client.get_object(f"s3://{name}", "o1") == b"b" * 64

    for spec, words in (({"kind": "copy", "bucket": f"s3://{name}"}, "destination"),
                        ({"kind": "sync", "bucket": "s3://nope"}, "does not exist"),
                        ({"kind": "teleport", "bucket": f"s3://{name}"}, "kind"),
                        ({"kind": "sync", "bucket": f"s3://{name}", "max_delete": "lots"},
                         "max"),
                        ({"kind": "prefetch", "bucket": "ais://local-only"}, "")):
        status, err = call(cluster, "POST", "/v1/jobs", spec)
        assert status in (400, 404) and words in err.get("message", ""), (spec, err)
    status, err = call(cluster, "GET", "/v1/jobs/j-nope")
    assert status == 404 and err["code"] == "JobNotFound"


def test_schedules_are_cluster_metadata_and_validated(cluster, client, fs_bucket):
    uri, _ = fs_bucket
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    status, view = call(cluster, "POST", "/v1/schedules",
                        {"name": name, "cron": "0 2 * * *",
                         "job": {"kind": "sync", "bucket": uri, "delete": True}})
    assert status == 201 and view["next_run"], view
    status, bucket_map = call(cluster, "GET", "/v1/cluster/bucket-map")
    assert name in bucket_map["schedules"]
    for target in cluster.targets:  # replicated to every node
        assert name in http_json(f"{target.url}/v1/cluster/bucket-map")[1]["schedules"]
    status, err = call(cluster, "POST", "/v1/schedules",
                       {"name": name, "cron": "0 2 * * *", "job": {"kind": "sync",
                                                                   "bucket": uri}})
    assert status == 409, err
    for body in ({"name": "x", "cron": "61 * * * *", "job": {"kind": "sync", "bucket": uri}},
                 {"name": "x", "job": {"kind": "sync", "bucket": uri}},
                 {"name": "x", "every": "soon", "job": {"kind": "sync", "bucket": uri}}):
        status, err = call(cluster, "POST", "/v1/schedules", body)
        assert status == 400, (body, err)
    assert call(cluster, "DELETE", f"/v1/schedules/{name}")[0] == 204
    assert call(cluster, "GET", f"/v1/schedules/{name}")[0] == 404
