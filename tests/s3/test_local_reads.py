"""Short-circuit local reads (aisync.node.localread): a proxy on the target's host opens objects
through the target's unix socket and sends them itself.

The S3 suite's cluster runs with local reads on (the default), so every S3 test reads this way;
here the same requests go to a second cluster with them off, and the answers must be the same,
byte for byte and header for header. Then the properties only this path has: an open object is
never torn by an overwrite, a socket that fails turns the path off for a while, a target that
does not own the object declines.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from botocore.exceptions import ClientError

from aisync.client import Client
from aisync.cluster.maps import ClusterMap, NodeInfo
from aisync.node.localread import RETRY_AFTER, LocalReads, host_identity
from aisync.util.names import BucketRef
from tests.harness import LocalCluster, http_json
from tests.s3.conftest import ACCESS_KEY, SECRET_KEY, boto3_client

SIZES = {"tiny": 100, "page": 4096, "mid": 70 * 1024, "big": 3 * 1024 * 1024 + 17}
#: Headers that must agree between the two paths (Last-Modified differs: separate PUTs).
COMPARED = ("ETag", "Content-Length", "Content-Range", "Content-Type", "Accept-Ranges",
            "Cache-Control", "x-amz-meta-origin")


@pytest.fixture(scope="module")
def http_only_cluster():
    with LocalCluster(targets=2, proxies=1, extra={"http": {"local_reads": False}}) as cluster:
        with Client(cluster.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "tests")
        yield cluster


def proxy_stats(endpoint: str) -> dict:
    _, status = http_json(f"{endpoint}/v1/node/status")
    return status["local_reads"]


@pytest.fixture(scope="module")
def pair(s3_cluster, http_only_cluster):
    """The same bucket and objects in both clusters: (local-reads client, HTTP-only client)."""
    clients = boto3_client(s3_cluster.endpoint), boto3_client(http_only_cluster.endpoint)
    payloads = {name: os.urandom(size) for name, size in SIZES.items()}
    for s3 in clients:
        s3.create_bucket(Bucket="shortcircuit")
        for name, data in payloads.items():
            s3.put_object(Bucket="shortcircuit", Key=f"obj/{name}", Body=data,
                          ContentType="application/x-test", CacheControl="max-age=60",
                          Metadata={"origin": "local-reads"})
    return clients, payloads


def _answer(s3, method: str, key: str, **kwargs) -> tuple[int, dict, bytes]:
    call = s3.get_object if method == "GET" else s3.head_object
    try:
        resp = call(Bucket="shortcircuit", Key=key, **kwargs)
    except ClientError as exc:
        return (exc.response["ResponseMetadata"]["HTTPStatusCode"],
                {"code": exc.response["Error"]["Code"]}, b"")
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    body = resp["Body"].read() if method == "GET" else b""
    status = resp["ResponseMetadata"]["HTTPStatusCode"]
    return status, {h: headers.get(h.lower()) for h in COMPARED}, body


CASES = [
    ("GET", {}),
    ("HEAD", {}),
    ("GET", {"Range": "bytes=10-99"}),
    ("GET", {"Range": "bytes=-5"}),
    ("HEAD", {"Range": "bytes=0-0"}),
    ("GET", {"Range": "bytes=99999999-"}),
    ("GET", {"IfMatch": '"0123"'}),
    ("GET", {"ResponseContentType": "text/plain"}),
]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_answers_equal_the_http_path(pair, s3_cluster, name):
    (local, remote), payloads = pair
    before = proxy_stats(s3_cluster.endpoint)["served"]
    for method, kwargs in CASES:
        got = _answer(local, method, f"obj/{name}", **kwargs)
        want = _answer(remote, method, f"obj/{name}", **kwargs)
        assert got == want, (method, kwargs)
    # the matching ETag: 304 on both paths
    etag = _answer(remote, "HEAD", f"obj/{name}")[1]["ETag"]
    for s3 in (local, remote):
        with pytest.raises(ClientError) as caught:
            s3.get_object(Bucket="shortcircuit", Key=f"obj/{name}", IfNoneMatch=etag)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    whole = _answer(local, "GET", f"obj/{name}")[2]
    assert whole == payloads[name]
    assert proxy_stats(s3_cluster.endpoint)["served"] > before  # the short-circuit answered


def test_http_only_cluster_never_short_circuits(pair, http_only_cluster):
    (_, remote), payloads = pair
    assert _answer(remote, "GET", "obj/big")[2] == payloads["big"]
    stats = proxy_stats(http_only_cluster.endpoint)
    assert stats["served"] == 0 and stats["errors"] == 0
    cluster_map = ClusterMap.model_validate(http_json(f"{http_only_cluster.endpoint}/v1/cluster/map")[1])
    assert all(n.local_socket is None for n in cluster_map.nodes.values())


def _owner_and_other(cluster, key: str) -> tuple[NodeInfo, NodeInfo]:
    cluster_map = ClusterMap.model_validate(http_json(f"{cluster.endpoint}/v1/cluster/map")[1])
    ref = BucketRef("shortcircuit", "ais")
    owner = cluster_map.owner(ref, key)
    other = next(t for t in cluster_map.active_targets if t.id != owner.id)
    assert owner.host == host_identity() and owner.local_socket
    return owner, other


def test_open_object_is_never_torn_by_an_overwrite(pair, s3_cluster):
    (local, _), payloads = pair
    owner, _ = _owner_and_other(s3_cluster, "obj/big")

    async def hold_open():
        reads = LocalReads()
        try:
            return await reads.open(owner, BucketRef("shortcircuit", "ais"), "obj/big")
        finally:
            reads.close()

    answer = asyncio.run(hold_open())
    assert answer is not None and answer.fd is not None
    try:
        new = os.urandom(SIZES["big"] - 1000)
        local.put_object(Bucket="shortcircuit", Key="obj/big-overwritten", Body=b"x")
        local.put_object(Bucket="shortcircuit", Key="obj/big", Body=new)
        held = os.pread(answer.fd, answer.count + 1, 0)
        assert len(held) == answer.count == SIZES["big"]
        assert hashlib.md5(held).hexdigest() == answer.headers["ETag"].strip('"')
        assert held == payloads["big"]
        assert _answer(local, "GET", "obj/big")[2] == new
    finally:
        answer.close()
        local.put_object(Bucket="shortcircuit", Key="obj/big", Body=payloads["big"],
                         ContentType="application/x-test", CacheControl="max-age=60",
                         Metadata={"origin": "local-reads"})


def test_a_target_that_is_not_the_owner_declines(pair, s3_cluster):
    _, other = _owner_and_other(s3_cluster, "obj/tiny")

    async def ask():
        reads = LocalReads()
        try:
            answer = await reads.open(other, BucketRef("shortcircuit", "ais"), "obj/tiny")
            return answer, reads.stats
        finally:
            reads.close()

    answer, stats = asyncio.run(ask())
    assert answer is None
    assert (stats.fallbacks, stats.served, stats.errors) == (1, 0, 0)


def test_a_failing_socket_turns_the_path_off_for_a_while(tmp_path):
    ghost = NodeInfo(id="t-ghost", role="target", url="http://127.0.0.1:1",
                     host=host_identity(), local_socket=str(tmp_path / "missing.sock"))
    elsewhere = ghost.model_copy(update={"host": "another-machine"})

    async def ask():
        reads = LocalReads()
        try:
            ref = BucketRef("b", "ais")
            assert reads.socket_of(elsewhere) is None  # not on this host: never tried
            first = await reads.open(ghost, ref, "k")
            assert reads.socket_of(ghost) is None  # off for RETRY_AFTER seconds
            second = await reads.open(ghost, ref, "k")
            return first, second, reads.stats
        finally:
            reads.close()

    first, second, stats = asyncio.run(ask())
    assert first is None and second is None
    assert stats.errors == 1 and stats.served == 0
    assert RETRY_AFTER > 0


def test_a_restarted_target_is_reached_again_at_once():
    """Pooled sockets die with the target; the next read reconnects instead of turning the path
    off (no error, still short-circuited)."""
    with LocalCluster(targets=1, proxies=1) as cluster:
        with Client(cluster.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "tests")
        s3 = boto3_client(cluster.endpoint)
        s3.create_bucket(Bucket="restarts")
        data = os.urandom(2 * 1024 * 1024)
        s3.put_object(Bucket="restarts", Key="big", Body=data)
        assert s3.get_object(Bucket="restarts", Key="big")["Body"].read() == data
        before = proxy_stats(cluster.endpoint)
        assert before["served"] >= 1 and before["errors"] == 0
        target = cluster.targets[0]
        cluster.kill(target)
        cluster.start_node(target)
        cluster.wait_ready()
        assert s3.get_object(Bucket="restarts", Key="big")["Body"].read() == data
        after = proxy_stats(cluster.endpoint)
        assert after["errors"] == 0
        assert after["served"] == before["served"] + 1
