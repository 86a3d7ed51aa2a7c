"""No request makes a node read a host path or fetch a URL it was not configured for, and no
join takes over an active node's id.

The harness gives every test node one fs profile, ``tmp``, rooted at the system temp dir
(``tests.harness.FS_ROOT``); this module's cluster adds a second, narrower one.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from aisync.client import Client
from aisync.util.errors import InvalidObjectName
from tests.harness import LocalCluster, api, member_json, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    narrow = tmp_path_factory.mktemp("narrow-root")
    (narrow / "inside").mkdir()
    (narrow / "inside" / "hello.txt").write_bytes(b"hello")
    with LocalCluster(targets=1, extra={"backends": {
            "narrow": {"provider": "fs", "root": str(narrow)}}}) as c:
        c.narrow = narrow  # type: ignore[attr-defined]
        yield c


def buckets(cluster) -> set[str]:
    status, body = api(cluster, "GET", "/v1/buckets")
    assert status == 200, body
    return {f"{b['provider']}://{b['name']}" for b in body["buckets"]}


def create_fs(cluster, name: str, **props) -> tuple[int, dict]:
    return api(cluster, "PUT", f"/v1/buckets/{name}?provider=fs", props)


def test_fs_buckets_only_under_configured_roots(cluster, tmp_path):
    before = buckets(cluster)
    for props in ({"settings": {"path": "/etc"}},
                  {"settings": {"path": "/"}},
                  {"profile": "narrow", "settings": {"path": "../../etc"}},
                  {"profile": "narrow", "settings": {"path": str(tmp_path)}},  # in tmp, not narrow
                  {"profile": "narrow", "settings": {"path": "/etc"}}):
        status, err = create_fs(cluster, f"x-{uuid.uuid4().hex[:6]}", **props)
        assert (status, err.get("code")) == (403, "AccessDenied"), (props, err)
    assert buckets(cluster) == before


def test_a_symlink_inside_a_root_cannot_lead_out(cluster):
    link = cluster.narrow / "escape"
    if not link.exists():
        os.symlink("/etc", link)
    status, err = create_fs(cluster, "escape", profile="narrow", settings={"path": "escape"})
    assert (status, err.get("code")) == (403, "AccessDenied"), err
    assert "fs://escape" not in buckets(cluster)


def test_a_path_inside_a_root_works_relative_or_absolute(cluster):
    name = f"in-{uuid.uuid4().hex[:6]}"
    status, body = create_fs(cluster, name, profile="narrow", settings={"path": "inside"})
    assert status == 201, body
    status, page = api(cluster, "GET", f"/v1/buckets/{name}?provider=fs")
    assert status == 200 and [o["name"] for o in page["objects"]] == ["hello.txt"], page
    other = f"abs-{uuid.uuid4().hex[:6]}"  # no profile named: the root that holds the path
    status, body = create_fs(cluster, other, settings={"path": str(cluster.narrow / "inside")})
    assert status == 201, body


@pytest.mark.parametrize("provider, settings", [
    ("s3", {"endpoint_url": "http://169.254.169.254/latest/meta-data"}),
    ("s3", {"endpoint": "http://127.0.0.1:1"}),
    ("gcp", {"endpoint": "http://127.0.0.1:1"}),
    ("azure", {"account_url": "http://127.0.0.1:1/x"}),
    ("oci", {"service_endpoint": "http://127.0.0.1:1"}),
    ("fs", {"path": "inside", "root": "/"}),
])
def test_no_endpoint_or_root_from_a_request(cluster, provider, settings):
    before = buckets(cluster)
    status, err = api(cluster, "PUT", f"/v1/buckets/ssrf-{uuid.uuid4().hex[:6]}"
                      f"?provider={provider}", {"profile": "narrow" if provider == "fs" else "",
                                                "settings": settings})
    assert status == 400 and err["code"] == "InvalidArgument", err
    assert "not accepted" in err["message"] and "profile" in err["message"]
    assert buckets(cluster) == before


def test_a_join_cannot_take_over_an_active_node(cluster):
    target = cluster.targets[0]
    before = cluster.cluster_map()
    body = json.dumps({"id": target.id, "role": "target", "url": "http://127.0.0.1:9",
                       "map_version": 0}).encode()
    status, err = member_json(cluster, cluster.primary.url, "POST", "/v1/cluster/join", body)
    assert status == 409 and err["code"] == "Conflict", err
    assert target.url in err["message"]
    after = cluster.cluster_map()
    assert after["version"] == before["version"]
    assert after["nodes"][target.id]["url"] == target.url


def test_object_names_cannot_leave_the_bucket_directory(cluster, tmp_path):
    """Inside an allowed directory, a symlink that points out is neither read, written through
    nor listed; names with ``..`` or a leading ``/`` are refused before any path is built."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "ok.txt").write_bytes(b"fine")
    os.symlink("/etc/passwd", share / "passwd")
    os.symlink(tmp_path, share / "up")  # a directory outside the bucket's own
    (tmp_path / "outside.txt").write_bytes(b"secret")
    name = f"fs://names-{uuid.uuid4().hex[:6]}"
    with Client(cluster.endpoint) as client:
        client.create_bucket(name, settings={"path": str(share)})
        assert [o.name for o in client.list_objects(name).objects] == ["ok.txt"]
        for escaping in ("passwd", "up/outside.txt"):
            with pytest.raises(InvalidObjectName):
                client.get_object(name, escaping)
        with pytest.raises(InvalidObjectName):
            client.put_object(name, "up/written.txt", b"x")
        assert client.get_object(name, "ok.txt") == b"fine"
    assert not (tmp_path / "written.txt").exists()
    for raw_name in ("../outside.txt", "a/../../outside.txt", "/etc/passwd"):
        status, err = api(cluster, "GET", f"/v1/objects/{name[5:]}/{raw_name}?provider=fs")
        assert status == 400 and err.get("code") == "InvalidObjectName", (raw_name, err)


def join(cluster, node_id: str, url: str) -> tuple[int, dict]:
    body = json.dumps({"id": node_id, "role": "target", "url": url, "map_version": 0}).encode()
    return member_json(cluster, cluster.primary.url, "POST", "/v1/cluster/join", body)


def test_a_restart_at_the_same_url_or_an_inactive_node_at_a_new_one_is_admitted():
    """The join conflict rule refuses only an id that is active elsewhere."""
    fast = {"keepalive": {"interval": 0.2, "dead_after": 1.0, "request_timeout": 0.5}}
    with LocalCluster(targets=2, extra=fast) as cluster:
        staying, leaving = cluster.targets
        status, body = join(cluster, staying.id, staying.url)  # a restart: same id, same URL
        assert status == 200, body
        assert cluster.cluster_map()["nodes"][staying.id]["url"] == staying.url
        cluster.stop_node(leaving)
        wait_for(lambda: cluster.cluster_map()["nodes"][leaving.id]["state"] != "active", 30,
                 f"{leaving.id} marked inactive")
        moved = "http://127.0.0.1:9"  # where it claims to be now
        status, body = join(cluster, leaving.id, moved)
        assert status == 200, body
        assert cluster.cluster_map()["nodes"][leaving.id]["url"] == moved
