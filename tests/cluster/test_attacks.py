"""The attacks that once worked against an open cluster, as regression tests.

Each one is tried the way a stranger on the network would, with no credentials at all (and where
it matters with a made-up member signature or with the admin token a client holds), against a
real cluster of two proxies and one target. Each must be refused (401) with nothing changed, and
the cluster must keep working afterwards: a forged bucket map must neither delete the bucket's
objects nor make the target refuse the real primary's next map. Nodes log at DEBUG with the
access log on, and no admin token, cluster secret or S3 secret key may reach any log. The lab
switch (``auth.enabled: false``) is shown last: such a cluster answers anyone, and says so in
every node's log at every start.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from aisync.client import Client
from tests.harness import LocalCluster, http_json, member_headers, member_json, wait_for

BUCKET = "guarded"
OBJECT = "precious"
DATA = b"nobody but the admin may change this " * 50
ROGUE_URL = "http://127.0.0.1:9"
ACCESS_KEY, SECRET_KEY = "AKATTACKTESTS000001", "attack-test-secret-key-0123456789"
LAB_WARNING = "auth.enabled is false"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(targets=1, proxies=2, extra={
            "logging": {"level": "DEBUG", "access_log": True}}) as c:
        with Client(c.endpoint, timeout=30) as client:
            client.create_bucket(BUCKET)
            client.put_object(BUCKET, OBJECT, DATA)
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "attack tests")
        yield c


@pytest.fixture
def client(cluster) -> Iterator[Client]:
    with Client(cluster.endpoint, timeout=30) as c:
        yield c


def anonymous(url: str, method: str = "GET", body: object = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    return http_json(url, method, data, timeout=30, token=None, headers=headers)


def refused(answer: tuple[int, dict]) -> None:
    status, doc = answer
    assert status == 401 and doc.get("code") == "Unauthorized", answer


def state(cluster: LocalCluster, client: Client) -> dict:
    """What the attacks were after, as the admin sees it."""
    target = cluster.targets[0]
    return {
        "buckets": client.list_buckets(),
        "data": client.get_object(BUCKET, OBJECT),
        "keys": client.list_access_keys(),
        "remotes": client.list_remotes(),
        "cluster map": client.cluster_map(),
        "target bucket map": http_json(f"{target.url}/v1/cluster/bucket-map")[1]["version"],
        "target cluster map": http_json(f"{target.url}/v1/cluster/map")[1]["version"],
    }


def boto3_client(endpoint: str, secret_key: str = SECRET_KEY):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      retries={"max_attempts": 1}))


def test_a_stranger_cannot_list_read_or_mint_keys(cluster, client):
    before = state(cluster, client)
    for proxy in cluster.proxies:
        refused(anonymous(f"{proxy.url}/v1/auth/keys"))
        refused(anonymous(f"{proxy.url}/v1/auth/keys/{ACCESS_KEY}/secret"))
        refused(anonymous(f"{proxy.url}/v1/auth/keys", "POST",
                          {"access_key": "AKSTRANGER000000001", "secret_key": "minted-by-me-1"}))
        refused(anonymous(f"{proxy.url}/v1/auth/keys/{ACCESS_KEY}", "DELETE"))
    assert state(cluster, client) == before
    # a key the stranger did not get cannot sign S3 requests either
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        boto3.client("s3", endpoint_url=cluster.endpoint, region_name="us-east-1",
                     aws_access_key_id="AKSTRANGER000000001",
                     aws_secret_access_key="minted-by-me-1",
                     config=Config(s3={"addressing_style": "path"},
                                   retries={"max_attempts": 1})).list_buckets()


def test_the_admin_token_never_reveals_a_secret(cluster):
    for proxy in cluster.proxies:
        status, listing = http_json(f"{proxy.url}/v1/auth/keys", token=cluster.token)
        assert status == 200 and ACCESS_KEY in {k["access_key"] for k in listing["keys"]}
        assert SECRET_KEY not in json.dumps(listing)
        assert all("secret_key" not in k for k in listing["keys"])
        # members only (the proxies checking SigV4), never a client, admin or not
        refused(http_json(f"{proxy.url}/v1/auth/keys/{ACCESS_KEY}/secret", token=cluster.token))
        assert member_json(cluster, proxy.url, "GET", f"/v1/auth/keys/{ACCESS_KEY}/secret") == (
            200, {"secret_key": SECRET_KEY})


def test_a_stranger_cannot_create_buckets_on_host_paths_or_urls(cluster, client):
    before = state(cluster, client)
    for proxy in cluster.proxies:
        refused(anonymous(f"{proxy.url}/v1/buckets/etc?provider=fs", "PUT",
                          {"settings": {"path": "/etc"}}))
        refused(anonymous(f"{proxy.url}/v1/buckets/exfil?provider=gs", "PUT",
                          {"settings": {"endpoint": ROGUE_URL}}))
        refused(anonymous(f"{proxy.url}/v1/remotes/evil", "PUT", {"urls": [ROGUE_URL]}))
        refused(anonymous(f"{proxy.url}/v1/buckets/{BUCKET}", "DELETE"))
    assert state(cluster, client) == before


def test_a_join_needs_the_cluster_secret(cluster, client):
    """An active target's id with a rogue URL, as a stranger and with a made-up signature."""
    before = state(cluster, client)
    target = cluster.targets[0]
    join = {"id": target.id, "role": "target", "url": ROGUE_URL, "host": "rogue",
            "map_version": 0}
    body = json.dumps(join).encode()
    for proxy in cluster.proxies:
        refused(anonymous(f"{proxy.url}/v1/cluster/join", "POST", join))
        refused(http_json(f"{proxy.url}/v1/cluster/join", "POST", body, token=cluster.token))
        forged = member_headers(secrets.token_urlsafe(32), "POST", "/v1/cluster/join", body)
        refused(http_json(f"{proxy.url}/v1/cluster/join", "POST", body, token=None,
                          headers=forged))
    after = state(cluster, client)
    assert after == before
    assert after["cluster map"]["nodes"][target.id]["url"] == target.url


def test_a_join_cannot_take_over_an_active_id(cluster, client):
    """Even a member (holding the secret) cannot move an active node to another URL."""
    before = state(cluster, client)
    target = cluster.targets[0]
    join = json.dumps({"id": target.id, "role": "target", "url": ROGUE_URL, "host": "rogue",
                       "map_version": 0}).encode()
    for proxy in cluster.proxies:  # the other proxy forwards it to the primary
        status, answer = member_json(cluster, proxy.url, "POST", "/v1/cluster/join", join)
        assert (status, answer.get("code")) == (409, "Conflict"), answer
    assert state(cluster, client) == before


def test_the_admin_token_does_not_reach_host_paths_or_urls(cluster, client):
    """Credentials let a client use what the operator configured, not the nodes' hosts."""
    before = state(cluster, client)
    for path in ("/etc", "../../../../etc", "/"):
        status, err = http_json(f"{cluster.endpoint}/v1/buckets/etc?provider=fs", "PUT",
                                json.dumps({"settings": {"path": path}}).encode())
        assert (status, err.get("code")) == (403, "AccessDenied"), (path, err)
    status, err = http_json(f"{cluster.endpoint}/v1/buckets/exfil?provider=gs", "PUT",
                            json.dumps({"settings": {"endpoint": ROGUE_URL}}).encode())
    assert (status, err.get("code")) == (400, "InvalidArgument"), err
    assert state(cluster, client) == before


def test_a_forged_bucket_map_changes_nothing_and_the_real_ones_still_apply(cluster, client):
    target = cluster.targets[0]
    _, bucket_map = http_json(f"{target.url}/v1/cluster/bucket-map")
    forged = {**bucket_map, "version": 1003,
              "buckets": {k: v for k, v in bucket_map["buckets"].items() if BUCKET not in k}}
    body = json.dumps({"bucket_map": forged}).encode()
    before = state(cluster, client)
    for url in (target.url, cluster.proxies[1].url):
        refused(anonymous(f"{url}/v1/metasync", "PUT", {"bucket_map": forged}))
        refused(http_json(f"{url}/v1/metasync", "PUT", body, token=cluster.token))
        forged_headers = member_headers(secrets.token_urlsafe(32), "PUT", "/v1/metasync", body)
        refused(http_json(f"{url}/v1/metasync", "PUT", body, token=None,
                          headers=forged_headers))
    assert state(cluster, client) == before  # the bucket's object is still there
    # the target still follows the real primary: a bucket made now is usable on it
    client.create_bucket("after-forgery")
    version = client.bucket_map()["version"]
    wait_for(lambda: http_json(f"{target.url}/v1/cluster/bucket-map")[1]["version"] == version,
             30, "the target to take the primary's next bucket map")
    client.put_object("after-forgery", "new", b"written after the forgery")
    assert client.get_object("after-forgery", "new") == b"written after the forgery"
    client.delete_object("after-forgery", "new")
    client.destroy_bucket("after-forgery")


def test_batches_and_puts_straight_to_a_target_are_refused(cluster, client):
    target = cluster.targets[0]
    before = state(cluster, client)
    batch = {"spec": {"kind": "sync", "bucket": f"ais://{BUCKET}"}, "targets": 1,
             "actions": [{"op": "evict", "name": OBJECT}, {"op": "delete", "name": OBJECT}]}
    for token in (None, cluster.token):
        refused(http_json(f"{target.url}/v1/jobs/j-evil/batch", "POST",
                          json.dumps(batch).encode(), token=token))
        refused(http_json(f"{target.url}/v1/jobs/j-evil/settle", "POST", token=token))
        refused(http_json(f"{target.url}/v1/objects/{BUCKET}/{OBJECT}", "PUT",
                          b"overwritten by a stranger", token=token))
        refused(http_json(f"{target.url}/v1/objects/{BUCKET}/{OBJECT}", "DELETE", token=token))
        refused(http_json(f"{target.url}/v1/buckets/{BUCKET}", token=token))  # its listing
    assert state(cluster, client) == before


def test_no_secret_in_any_log(cluster, client):
    """S3 requests signed with a key through both proxies (the second one learns the secret
    from the primary), a wrong secret, and admin calls: no secret in any node's log."""
    for proxy in cluster.proxies:
        s3 = boto3_client(proxy.url)
        s3.put_object(Bucket=BUCKET, Key=f"via-{proxy.id}", Body=b"signed")
        assert s3.get_object(Bucket=BUCKET, Key=f"via-{proxy.id}")["Body"].read() == b"signed"
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            boto3_client(proxy.url, secret_key=SECRET_KEY + "x").list_objects_v2(Bucket=BUCKET)
        client.delete_object(BUCKET, f"via-{proxy.id}")
    refused(anonymous(f"{cluster.endpoint}/v1/auth/keys/{ACCESS_KEY}/secret"))
    logs = {node.id: node.log.read_text(errors="replace") for node in cluster.nodes}
    assert ACCESS_KEY in logs[cluster.proxies[1].id]  # the logs were really written
    for node_id, text in logs.items():
        for name, secret in (("admin token", cluster.token),
                             ("cluster secret", cluster.cluster_secret),
                             ("S3 secret key", SECRET_KEY)):
            assert secret not in text, f"the {name} reached the log of {node_id}"


def test_the_lab_switch_opens_the_cluster_and_says_so():
    """``auth.enabled: false`` and no credentials configured at all: anyone may call every
    route, and every node logs a warning at every start."""
    lab = {"auth": {"enabled": False, "admin_token": None, "cluster_secret": None}}
    with LocalCluster(targets=1, proxies=1, extra=lab) as cluster:
        url = cluster.endpoint
        assert anonymous(f"{url}/v1/auth/keys")[0] == 200
        assert anonymous(f"{url}/v1/buckets/lab", "PUT")[0] == 201
        with Client(url, token="", timeout=30) as client:
            client.put_object("lab", "open", b"anyone may")
            assert client.get_object("lab", "open") == b"anyone may"
        target = cluster.targets[0]
        assert anonymous(f"{target.url}/v1/buckets/lab")[0] == 200  # a member route, open
        for node in cluster.nodes:
            assert warnings(node.log.read_text()) == 1, node.id
        cluster.stop_node(cluster.primary)
        cluster.start_node(cluster.primary)
        wait_for(lambda: http_json(f"{url}/v1/health/ready", token=None)[0] == 200, 60,
                 "the restarted proxy")
        assert warnings(cluster.primary.log.read_text()) == 2


def warnings(log_text: str) -> int:
    """How many times a node's log says that its auth is off (a WARNING record)."""
    count = 0
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if LAB_WARNING in str(record.get("msg", "")):
            assert record.get("level") == "warning", record
            count += 1
    return count
