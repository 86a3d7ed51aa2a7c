"""Two zones on loopback: remote attach/detach, buckets of a remote (``ais://@zone-a/...``),
and peer-first reads of a cloud bucket both zones cache (an fs:// source both can reach)."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

import pytest

from aisync.client import Client
from aisync.util.errors import NotFound
from tests.harness import LocalCluster, peer_stats, run_job, wait_for
from tests.harness import api as call


@pytest.fixture(scope="module")
def zone_a():
    with LocalCluster(targets=2, extra={"cluster": {"name": "zone-a"}}) as c:
        yield c


@pytest.fixture(scope="module")
def zone_c():
    """A third zone, which one test takes down."""
    with LocalCluster(targets=1, extra={"cluster": {"name": "zone-c"}}) as c:
        yield c


#: A proxy URL of zone a that nobody answers at (a gateway that is down): failover skips it.
DOWN_PROXY = "http://127.0.0.1:9"


def remote_profile(zone: LocalCluster, *more_urls: str) -> dict:
    """What a node's configuration says of a peer it may attach: its URLs and its token."""
    return {"urls": [zone.endpoint, *more_urls], "token": zone.token}


@pytest.fixture(scope="module")
def zone_b(zone_a, zone_c):
    remotes = {"zone-a": remote_profile(zone_a, DOWN_PROXY), "zone-c": remote_profile(zone_c),
               "zone-x": remote_profile(zone_a),  # the same cluster under a second alias
               "zone-wrong": {"urls": [zone_a.endpoint], "token": "not-zone-a-s-token"}}
    with LocalCluster(targets=2, extra={"cluster": {"name": "zone-b"},
                                        "remotes": remotes}) as c:
        yield c


@pytest.fixture(scope="module")
def attached(zone_a, zone_b):
    status, remote = call(zone_b, "PUT", "/v1/remotes/zone-a", {"urls": [zone_a.endpoint]})
    assert status == 201, remote
    return remote




def test_attach_list_and_bad_attaches(zone_a, zone_b, attached):
    assert attached["cluster"] == "zone-a" and attached["urls"] == [zone_a.endpoint]
    status, listing = call(zone_b, "GET", "/v1/remotes")
    (view,) = [r for r in listing["remotes"] if r["alias"] == "zone-a"]
    assert view["reachable"] and view["map_version"] >= 1
    # Only the remotes the nodes' configuration names, at the URLs it lists: no request makes
    # the cluster fetch from anywhere else.
    for alias, body, status_wanted in (
            ("other", {"urls": [zone_a.endpoint]}, 403),           # no remotes.other profile
            ("other", {}, 403),
            ("zone-a", {"urls": ["http://127.0.0.1:7"]}, 403),      # not in remotes.zone-a
            ("zone-a", {"urls": [zone_b.endpoint]}, 403),
            ("zone-a", {"urls": "ftp://x"}, 400),
            ("zone-a", {"urls": []}, 400)):
        status, err = call(zone_b, "PUT", f"/v1/remotes/{alias}", body)
        assert status == status_wanted, (alias, body, err)
    status, listing = call(zone_b, "GET", "/v1/remotes")
    assert "other" not in {r["alias"] for r in listing["remotes"]}  # nothing was attached
    assert zone_a.token not in json.dumps(listing)  # the peer's token is never shown
    assert call(zone_b, "DELETE", "/v1/remotes/nope")[0] == 404
    assert call(zone_b, "PUT", "/v1/remotes/bad%20alias!", {"urls": [zone_a.endpoint]})[0] in \
        (400, 404)


def test_a_peer_is_reached_with_the_token_of_its_profile(zone_a, zone_b):
    """zone b's nodes send the token their profile gives for the alias, not their own (every
    test cluster has the same admin token, so only a wrong profile token can show which)."""
    status, err = call(zone_b, "PUT", "/v1/remotes/zone-wrong", {})
    assert status == 503 and "refused the token of remotes.zone-wrong" in err["message"], err
    status, listing = call(zone_b, "GET", "/v1/remotes")
    assert "zone-wrong" not in {r["alias"] for r in listing["remotes"]}


def test_buckets_of_a_remote_read_through_and_write_through(zone_a, zone_b, attached):
    name = f"ckpt-{uuid.uuid4().hex[:6]}"
    with Client(zone_a.endpoint) as a, Client(zone_b.endpoint) as b:
        a.create_bucket(f"ais://{name}")
        data = os.urandom(300_000)
        a.put_object(f"ais://{name}", "step-900.pt", data)
        remote = f"ais://@zone-a/{name}"
        assert b.get_object(remote, "step-900.pt") == data  # registered on first use
        wait_for(lambda: [o.name for o in b.iter_objects(remote, cached=True)]
                 == ["step-900.pt"], 30, "the copy committed in zone b")
        b.put_object(remote, "from-b.txt", b"written in zone b")  # write-through to zone a
        assert a.get_object(f"ais://{name}", "from-b.txt") == b"written in zone b"
        with pytest.raises(NotFound):
            b.get_object("ais://@nowhere/x", "y")
    status, err = call(zone_b, "DELETE", "/v1/remotes/zone-a")
    assert status == 409 and name in err["message"], err  # still has buckets here


@pytest.fixture
def shared_source(tmp_path, zone_a, zone_b, attached):
    """A directory both zones cache as the same fs:// bucket: the far source of truth."""
    share = tmp_path / "source"
    share.mkdir()
    name = f"data-{uuid.uuid4().hex[:6]}"
    for cluster in (zone_a, zone_b):
        with Client(cluster.endpoint) as c:
            c.create_bucket(f"fs://{name}", settings={"path": str(share)})
    status, props = call(zone_b, "PATCH", f"/v1/buckets/{name}?provider=fs",
                         {"peers": ["zone-a"]})
    assert status == 200 and props["peers"] == ["zone-a"], props
    return f"fs://{name}", share


def replace(path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_peer_first_reads_use_a_current_peer_copy_and_never_a_stale_one(
        zone_a, zone_b, shared_source):
    uri, share = shared_source
    data = os.urandom(2 * 1024 * 1024 + 3)
    replace(share / "shard-0.tar", data)
    replace(share / "shard-1.tar", b"v1" * 1000)
    with Client(zone_a.endpoint) as a, Client(zone_b.endpoint) as b:
        a.get_object(uri, "shard-0.tar")
        a.get_object(uri, "shard-1.tar")
        wait_for(lambda: len(list(a.iter_objects(uri, cached=True))) == 2, 30, "zone a cached")
        before = peer_stats(zone_b)
        assert b.get_object(uri, "shard-0.tar") == data  # from zone a's cache
        after = peer_stats(zone_b)
        assert after["peer_hits"] == before["peer_hits"] + 1
        assert after["bytes_from_peers"] - before["bytes_from_peers"] == len(data)
        assert after["bytes_from_sources"] == before["bytes_from_sources"]

        replace(share / "shard-1.tar", b"v2" * 1000)  # zone a's copy is now stale
        assert b.get_object(uri, "shard-1.tar") == b"v2" * 1000
        final = peer_stats(zone_b)
        assert final["peer_hits"] == after["peer_hits"]  # the stale copy was not used
        assert final["bytes_from_sources"] - after["bytes_from_sources"] == 2000
    request = urllib.request.Request(f"{zone_b.endpoint}/v1/metrics",
                                     headers={"Authorization": f"Bearer {zone_b.token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert 'aisync_peer_reads_total{event="bytes_from_peers"}' in resp.read().decode()


def test_bad_peers_property(zone_b, shared_source):
    uri, _ = shared_source
    name = uri.split("://")[1]
    status, err = call(zone_b, "PATCH", f"/v1/buckets/{name}?provider=fs", {"peers": ["zz"]})
    assert status == 404 and err["code"] == "RemoteNotFound", err
    status, err = call(zone_b, "PATCH", f"/v1/buckets/{name}?provider=fs", {"peers": 5})
    assert status == 400, err


def test_remote_cli(zone_a, zone_b, attached):
    from click.testing import CliRunner

    from aisync.cli.main import cli

    runner = CliRunner()

    def aisync(*args: str):
        return runner.invoke(cli, ["--endpoint", zone_b.endpoint, *args])

    listed = aisync("remote", "ls")
    assert listed.exit_code == 0 and "zone-a" in listed.output and "yes" in listed.output
    again = aisync("remote", "attach", f"zone-a={zone_a.endpoint}")  # re-attach: same URLs
    assert again.exit_code == 0 and "attached zone-a" in again.output, again.output
    configured = aisync("remote", "attach", "zone-a")  # the URLs of the nodes' profile
    assert configured.exit_code == 0 and zone_a.endpoint in configured.output
    bad = aisync("remote", "attach", "zone-a=")
    assert bad.exit_code == 2 and "ALIAS=URL" in bad.output
    unknown = aisync("remote", "attach", "zone-q")
    assert unknown.exit_code == 1 and "remotes.zone-q" in unknown.output
    missing = aisync("remote", "detach", "nowhere")
    assert missing.exit_code == 1 and "nowhere" in missing.output
    assert aisync("remote", "--help").exit_code == 0


def contents(client, uri: str) -> dict[str, str]:
    return {o.name: o.checksum for o in client.iter_objects(uri)}


def test_sync_between_zones_follows_the_change_feed_and_falls_back_on_a_gap(
        zone_a, zone_b, attached):
    name = f"ckpt-{uuid.uuid4().hex[:6]}"
    src, dest = f"ais://@zone-a/{name}", f"ais://{name}-b"
    with Client(zone_a.endpoint) as a, Client(zone_b.endpoint) as b:
        a.create_bucket(f"ais://{name}")
        b.create_bucket(dest)
        for i in range(12):
            a.put_object(f"ais://{name}", f"step-{i:03d}.pt", os.urandom(1000 + i))
        first = run_job(zone_b, kind="sync", bucket=src, destination=dest, delete=True)
        assert first["state"] == "succeeded" and first["progress"]["added"] == 12, first
        assert contents(b, dest) == contents(a, f"ais://{name}")

        a.put_object(f"ais://{name}", "step-012.pt", b"new")
        a.put_object(f"ais://{name}", "step-000.pt", os.urandom(1000))  # same size, new bytes
        a.delete_object(f"ais://{name}", "step-005.pt")
        fed = run_job(zone_b, kind="sync", bucket=src, destination=dest, delete=True)
        assert fed["state"] == "succeeded", fed
        assert "change feed" in fed["progress"].get("note", ""), fed
        assert fed["progress"]["listed"] == 3, fed  # only the changes, no listing
        assert fed["progress"]["copied"] == 2 and fed["progress"]["deleted"] == 1, fed
        assert contents(b, dest) == contents(a, f"ais://{name}")
        assert b.get_object(dest, "step-012.pt") == b"new"

        victim = zone_a.targets[0]  # loses its index: the feed no longer reaches back
        zone_a.kill(victim)
        zone_a.start_node(victim)
        wait_for(lambda: zone_a._health(victim) and victim.id in zone_a.active_targets(), 60,
                 "zone a's target back")
        a.delete_object(f"ais://{name}", "step-001.pt")
        fallback = run_job(zone_b, kind="sync", bucket=src, destination=dest, delete=True)
        assert fallback["state"] == "succeeded", fallback
        assert "listed instead" in fallback["progress"].get("note", ""), fallback
        assert contents(b, dest) == contents(a, f"ais://{name}")


def test_a_peer_that_is_down_falls_back_to_the_source(zone_b, zone_c, tmp_path):
    share = tmp_path / "source"
    share.mkdir()
    replace(share / "x.bin", b"from the source" * 100)
    name = f"down-{uuid.uuid4().hex[:6]}"
    status, _ = call(zone_b, "PUT", "/v1/remotes/zone-c", {"urls": [zone_c.endpoint]})
    assert status == 201
    with Client(zone_c.endpoint) as c:
        c.create_bucket(f"fs://{name}", settings={"path": str(share)})
        c.get_object(f"fs://{name}", "x.bin")  # zone c holds a current copy
    with Client(zone_b.endpoint) as b:
        b.create_bucket(f"fs://{name}", settings={"path": str(share)})
        assert call(zone_b, "PATCH", f"/v1/buckets/{name}?provider=fs",
                    {"peers": ["zone-c"]})[0] == 200
    zone_c.kill(zone_c.primary)  # the peer's gateway is gone
    before = peer_stats(zone_b)
    with Client(zone_b.endpoint) as b:
        assert b.get_object(f"fs://{name}", "x.bin") == b"from the source" * 100
    after = peer_stats(zone_b)
    assert after["peer_errors"] > before["peer_errors"]
    assert after["bytes_from_sources"] - before["bytes_from_sources"] == 1500
    assert after["peer_hits"] == before["peer_hits"]
    status, listing = call(zone_b, "GET", "/v1/remotes")
    (view,) = [r for r in listing["remotes"] if r["alias"] == "zone-c"]
    assert not view["reachable"]


def test_prefetch_from_a_peer_warms_a_dataset_in_another_zone(zone_a, zone_b, attached,
                                                              tmp_path):
    share = tmp_path / "dataset"
    share.mkdir()
    for i in range(10):
        replace(share / f"train-{i}.bin", os.urandom(50_000))
    name = f"ds-{uuid.uuid4().hex[:6]}"
    with Client(zone_a.endpoint) as a, Client(zone_b.endpoint) as b:
        a.create_bucket(f"fs://{name}", settings={"path": str(share)})
        b.create_bucket(f"fs://{name}", settings={"path": str(share)})
        assert run_job(zone_a, kind="prefetch", bucket=f"fs://{name}")["progress"]["added"] == 10
        replace(share / "train-3.bin", b"changed since zone a cached it")
        before = peer_stats(zone_b)
        from click.testing import CliRunner

        from aisync.cli.main import cli
        result = CliRunner().invoke(cli, ["--endpoint", zone_b.endpoint, "job", "start",
                                          "prefetch", f"fs://{name}", "--from", "zone-a",
                                          "--no-progress"])
        assert result.exit_code == 0, result.output
        after = peer_stats(zone_b)
        assert after["peer_hits"] - before["peer_hits"] == 9  # the stale one came from source
        assert after["bytes_from_peers"] - before["bytes_from_peers"] == 9 * 50_000
        for i in range(10):
            assert b.get_object(f"fs://{name}", f"train-{i}.bin") == \
                (share / f"train-{i}.bin").read_bytes()
    bad = CliRunner().invoke(cli, ["--endpoint", zone_b.endpoint, "job", "start", "evict",
                                   f"fs://{name}", "--from", "zone-a"])
    assert bad.exit_code == 2 and "--from" in bad.output


def test_checkpoints_written_in_a_reach_b_through_a_scheduled_feed_sync(zone_a, zone_b,
                                                                        attached):
    name = f"sched-{uuid.uuid4().hex[:6]}"
    with Client(zone_a.endpoint) as a, Client(zone_b.endpoint) as b:
        a.create_bucket(f"ais://{name}")
        b.create_bucket(f"ais://{name}")
        a.put_object(f"ais://{name}", "step-100.pt", b"first")
        status, view = call(zone_b, "POST", "/v1/schedules", {
            "name": f"ckpt-{name}", "every": "1s",
            "job": {"kind": "sync", "bucket": f"ais://@zone-a/{name}",
                    "destination": f"ais://{name}", "delete": True}})
        assert status == 201, view
        try:
            wait_for(lambda: contents(b, f"ais://{name}") == contents(a, f"ais://{name}"),
                     60, "the first checkpoint in zone b")
            a.put_object(f"ais://{name}", "step-200.pt", b"second")
            a.delete_object(f"ais://{name}", "step-100.pt")
            wait_for(lambda: contents(b, f"ais://{name}") == contents(a, f"ais://{name}"),
                     60, "the next checkpoint in zone b")
            assert b.get_object(f"ais://{name}", "step-200.pt") == b"second"
        finally:
            assert call(zone_b, "DELETE", f"/v1/schedules/ckpt-{name}")[0] == 204
    jobs = [j for j in call(zone_b, "GET", "/v1/jobs?limit=1000")[1]["jobs"]
            if j.get("schedule") == f"ckpt-{name}" and j["state"] == "succeeded"]
    assert any("change feed" in (j["progress"].get("note") or "") for j in jobs), jobs


def test_attach_and_detach_while_reads_run(zone_a, zone_b, attached):
    import threading

    name = f"busy-{uuid.uuid4().hex[:6]}"
    data = os.urandom(200_000)
    with Client(zone_a.endpoint) as a:
        a.create_bucket(f"ais://{name}")
        a.put_object(f"ais://{name}", "blob", data)
    failures: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        with Client(zone_b.endpoint) as b:
            while not stop.is_set():
                try:
                    assert b.get_object(f"ais://@zone-a/{name}", "blob") == data
                    reads += 1
                except BaseException as exc:  # noqa: BLE001 (collected, asserted below)
                    failures.append(exc)
                    return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_for(lambda: reads >= 3, 60, "reads under way")
        for urls in ([zone_a.endpoint, DOWN_PROXY], [zone_a.endpoint]):
            assert call(zone_b, "PUT", "/v1/remotes/zone-a", {"urls": urls})[0] == 201
            done = reads
            wait_for(lambda d=done: reads >= d + 3, 60, "reads after re-attaching")
        assert call(zone_b, "PUT", "/v1/remotes/zone-x", {"urls": [zone_a.endpoint]})[0] == 201
        assert call(zone_b, "DELETE", "/v1/remotes/zone-x")[0] == 204
        done = reads
        wait_for(lambda: reads >= done + 3, 60, "reads after an unrelated detach")
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures


def test_two_zones_sync_the_same_source_on_schedules(zone_a, zone_b, attached, tmp_path):
    share = tmp_path / "shared"
    share.mkdir()
    for i in range(8):
        replace(share / f"f{i}", os.urandom(3000))
    name = f"both-{uuid.uuid4().hex[:6]}"
    uri = f"fs://{name}"

    def expected() -> dict[str, int]:
        return {p.name: p.stat().st_size for p in share.iterdir() if not p.name.startswith(".")}

    clients = [Client(zone_a.endpoint), Client(zone_b.endpoint)]
    try:
        for cluster, client in zip((zone_a, zone_b), clients, strict=True):
            client.create_bucket(uri, settings={"path": str(share)})
            status, view = call(cluster, "POST", "/v1/schedules", {
                "name": f"s-{name}", "every": "1s",
                "job": {"kind": "sync", "bucket": uri, "delete": True}})
            assert status == 201, view

        def both_match() -> bool:
            want = expected()
            return all({o.name: o.size for o in c.iter_objects(uri, cached=True)} == want
                       for c in clients)

        wait_for(both_match, 60, "both zones in sync")
        replace(share / "f0", os.urandom(3000))
        (share / "f1").unlink()
        replace(share / "new", b"n")
        wait_for(both_match, 60, "both zones in sync again")
        for client in clients:
            assert client.get_object(uri, "f0") == (share / "f0").read_bytes()
    finally:
        for cluster, client in zip((zone_a, zone_b), clients, strict=True):
            call(cluster, "DELETE", f"/v1/schedules/s-{name}")
            client.close()
    for cluster in (zone_a, zone_b):
        jobs = [j for j in call(cluster, "GET", "/v1/jobs?limit=1000")[1]["jobs"]
                if j.get("schedule") == f"s-{name}"]
        assert jobs and all(j["state"] in ("succeeded", "running") for j in jobs), jobs
