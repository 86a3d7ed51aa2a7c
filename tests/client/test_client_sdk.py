"""SDK tests against a real cluster: node processes on loopback ports (``tests/harness.py``).

The module-scoped ``cluster`` fixture (``tests/conftest.py``) runs every test twice: targets as
one process, and targets with a read worker beside them. Each test works in its own bucket.

Where a test must see what crossed the wire (the bytes an upload sends to a proxy, the requests
a lazy listing makes) it puts a plain TCP relay (``tests/client/relay.py``) in front of a real
node and counts the bytes that pass through it. Only the "too many redirects" test uses an in-test
server, because only a misbehaving server can produce that answer.
"""

from __future__ import annotations

import http.client
import io
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import xxhash
from aiohttp import web

from aisync.client import (
    AsyncClient,
    Client,
    ObjectEntry,
    ObjectInfo,
    parse_range,
)
from aisync.util.errors import (
    AisyncError,
    BucketAlreadyExists,
    BucketNotFound,
    ChecksumMismatch,
    InvalidBucketName,
    InvalidObjectName,
    InvalidRange,
    NodeUnavailable,
    NotFound,
    ObjectNotFound,
)
from tests.client.relay import Relay
from tests.harness import TEST_TOKEN, LocalCluster, http_json, member_json, wait_for

HEAD_LIMIT = 4096  # more than any request or response head here; far less than any body


def checksum(data: bytes) -> str:
    return "xxh3:" + xxhash.xxh3_64_hexdigest(data)


def new_bucket(cluster: LocalCluster) -> str:
    name = f"sdk-{uuid.uuid4().hex[:10]}"
    status, body = http_json(f"{cluster.endpoint}/v1/buckets/{name}?provider=ais", "PUT")
    assert status == 201, body
    return name


def raw_status(url: str, method: str, path: str, body: bytes | None = None,
               token: str | None = TEST_TOKEN) -> tuple[int, dict[str, str]]:
    """One request exactly as given (with the admin token unless ``token=None``), redirects
    not followed."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path, body=body,
                     headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def proxy_location(cluster: LocalCluster, method: str, path: str) -> str:
    """The Location the proxy answers ``method path`` with: the owner's URL, signed by the proxy
    for that method and path (the only way a client reaches a target)."""
    status, headers = raw_status(cluster.endpoint, method, path)
    assert status == 307, status
    return headers["location"]


def owner_url(cluster: LocalCluster, bucket: str, name: str) -> str:
    """The owning target's URL, from the proxy's 307 ``Location`` for the object."""
    loc = urlparse(proxy_location(cluster, "HEAD", f"/v1/objects/{bucket}/{name}?provider=ais"))
    return f"{loc.scheme}://{loc.netloc}"


def request_target(location: str) -> str:
    """The path and query of a (signed) Location: what a client sends to the node it names, or
    to another one (what a proxy with a stale map would have named)."""
    loc = urlparse(location)
    return f"{loc.path}?{loc.query}"


def expect_answer(url: str, method: str, target: str, size: int) -> tuple[int, dict[str, str]]:
    """Send only the head of a request with ``Expect: 100-continue`` and a ``size``-byte body,
    and read the first answer: its status and headers (no body byte is ever sent)."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                     f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
            chunk = sock.recv(HEAD_LIMIT)
            if not chunk:
                break
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def bucket(cluster) -> str:
    return new_bucket(cluster)


@pytest.fixture
async def client(cluster):
    async with AsyncClient(cluster.endpoint, timeout=10) as c:
        yield c


# --------------------------------------------------------------------------------------------
# cluster documents


async def test_health_ready_and_map(cluster, client):
    health = await client.health()
    assert (health["status"], health["id"], health["role"], health["cluster"]) == (
        "ok", "proxy-0", "proxy", "test-zone")
    assert await client.ready() is True
    cluster_map = await client.cluster_map()
    assert cluster_map["name"] == "test-zone" and cluster_map["primary"] == "proxy-0"
    assert set(cluster_map["nodes"]) == {n.id for n in cluster.nodes}
    assert all(n["state"] == "active" for n in cluster_map["nodes"].values())
    async with AsyncClient(cluster.targets[0].url, timeout=10) as c:
        assert (await c.health())["role"] == "target"
        assert await c.ready() is True


def test_ready_is_false_on_a_proxy_without_targets():
    lone = LocalCluster(targets=0, proxies=1)  # started by hand: it never becomes ready
    try:
        lone.start_node(lone.primary)
        lone._learn_port(lone.primary, 60)  # it binds port 0, like every test node
        wait_for(lambda: http_json(f"{lone.endpoint}/v1/health", timeout=1)[0] == 200, 60,
                 "the lone proxy to serve")
        with Client(lone.endpoint, timeout=10) as c:
            assert c.health()["status"] == "ok"
            assert c.ready() is False  # 503: its map has no active target
        assert lone.unhandled_errors() == []
    finally:
        lone.stop()


async def test_bucket_lifecycle(cluster, client):
    name = f"life-{uuid.uuid4().hex[:10]}"
    assert await client.head_bucket(f"ais://{name}") is False
    created = await client.create_bucket(f"ais://{name}")
    assert (created["name"], created["provider"]) == (name, "ais")
    with pytest.raises(BucketAlreadyExists):
        await client.create_bucket(name)
    assert await client.head_bucket(name) is True
    assert name in [b["name"] for b in await client.list_buckets()]
    await client.put_object(name, "x", b"12345")
    await client.put_object(name, "y/z", b"678")
    info = await client.bucket_info(f"ais://{name}")
    assert (info["name"], info["objects"], info["bytes"]) == (name, 2, 8)
    await client.destroy_bucket(f"ais://{name}")
    assert await client.head_bucket(name) is False
    assert name not in [b["name"] for b in await client.list_buckets()]
    with pytest.raises(BucketNotFound):
        await client.bucket_info(name)
    with pytest.raises(BucketNotFound):
        await client.destroy_bucket(name)


# --------------------------------------------------------------------------------------------
# uploads


async def test_put_file_returns_info_and_stores_the_bytes(cluster, client, bucket, tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    info = await client.put_object(f"ais://{bucket}", "dir/big.bin", src)
    assert isinstance(info, ObjectInfo)
    assert (info.bucket, info.provider, info.name, info.size) == (
        bucket, "ais", "dir/big.bin", len(payload))
    assert info.checksum == checksum(payload) and info.etag == checksum(payload)[5:]
    assert await client.get_object(bucket, "dir/big.bin") == payload
    # stored once, on the owner only
    owner = owner_url(cluster, bucket, "dir/big.bin")
    for target in cluster.targets:  # asked as a member: a target's own bucket summary
        status, summary = member_json(cluster, target.url, "GET",
                                      f"/v1/buckets/{bucket}/info?provider=ais")
        assert status == 200, summary
        assert summary["objects"] == (1 if target.url == owner else 0), target.id


async def test_expect_redirect_sends_zero_body_bytes_to_the_proxy(cluster, bucket):
    """The upload goes through a TCP relay in front of the real proxy: only headers cross it."""
    payload = os.urandom(4 * 1024 * 1024)
    async with Relay(cluster.endpoint) as relay:
        async with AsyncClient(relay.url, timeout=10) as c:
            info = await c.put_object(bucket, "wire", payload)
        await relay.drained()  # the client closed its connections: nothing more can cross
        assert info.size == len(payload) and info.checksum == checksum(payload)
        assert relay.connections == 1
        assert len(relay.sent) < HEAD_LIMIT, len(relay.sent)
        head = bytes(relay.sent).lower()
        assert head.startswith(f"put /v1/objects/{bucket}/wire?".encode())
        assert b"expect: 100-continue" in head
        assert f"content-length: {len(payload)}".encode() in head
        assert bytes(relay.received).startswith(b"HTTP/1.1 307 ")
    async with AsyncClient(cluster.endpoint, timeout=10) as c:
        assert await c.get_object(bucket, "wire") == payload


@pytest.mark.parametrize("kind", ["bytes", "path", "fileobj", "async_iter", "iterator"])
async def test_put_body_kinds(client, bucket, tmp_path, kind):
    payload = os.urandom(2_500_000)
    chunks = [payload[i:i + 700_000] for i in range(0, len(payload), 700_000)]
    src = tmp_path / "src.bin"
    src.write_bytes(payload)

    async def agen():
        for c in chunks:
            yield c

    data = {"bytes": payload, "path": src, "fileobj": io.BytesIO(payload),
            "async_iter": agen(), "iterator": iter(chunks)}[kind]
    seen: list[int] = []
    info = await client.put_object(f"ais://{bucket}", f"obj-{kind}", data, progress=seen.append)
    assert (info.size, info.checksum) == (len(payload), checksum(payload))
    assert sum(seen) == len(payload)
    assert await client.get_object(bucket, f"obj-{kind}") == payload
    assert (await client.head_object(bucket, f"obj-{kind}")).size == len(payload)


async def test_put_with_declared_checksum(client, bucket):
    payload = b"declared" * 1000
    info = await client.put_object(bucket, "good", payload, checksum=checksum(payload))
    assert info.checksum == checksum(payload)
    with pytest.raises(ChecksumMismatch):
        await client.put_object(bucket, "bad", payload, checksum="xxh3:0000000000000000")
    with pytest.raises(ObjectNotFound):
        await client.head_object(bucket, "bad")


async def test_put_to_a_target_that_does_not_own_the_object(cluster, bucket):
    """A proxy whose map is stale hands a PUT to a target that does not own the object, with
    the Location it signed: that target answers ``Expect: 100-continue`` with a 307 to the owner
    before any body byte (so not one goes to the wrong node), passing the signature on, and the
    body sent there lands on the owner, and only there. (How every kind of SDK body survives a
    307 before the body: the proxy tests above.)"""
    payload = b"abc" * 100_000
    names = ("o-file", "o-bytes", "o-stream")

    def wrong_target(name: str) -> str:
        owner = owner_url(cluster, bucket, name)
        return next(t.url for t in cluster.targets if t.url != owner)

    for name in names:
        owner, wrong = owner_url(cluster, bucket, name), wrong_target(name)
        target = request_target(proxy_location(cluster, "PUT",
                                               f"/v1/objects/{bucket}/{name}?provider=ais"))
        status, headers = expect_answer(wrong, "PUT", target, len(payload))
        assert status == 307, (status, headers)  # the final answer, no 100 Continue first
        assert headers["location"] == f"{owner}{target}"  # the signature passed on
        status, _ = raw_status(owner, "PUT", target, payload, token=None)
        assert 200 <= status < 300, status

    async with AsyncClient(cluster.endpoint, timeout=10) as c:
        for name in names:
            assert await c.get_object(bucket, name) == payload
    for name in names:  # stored on the owner only: the wrong target still redirects
        target = request_target(proxy_location(cluster, "GET",
                                               f"/v1/objects/{bucket}/{name}?provider=ais"))
        status, headers = raw_status(wrong_target(name), "GET", target, token=None)
        assert status == 307 and headers["location"].startswith(owner_url(cluster, bucket, name))


# --------------------------------------------------------------------------------------------
# reads, HEAD, DELETE


async def test_get_redirect_range_head_delete(client, bucket):
    data = bytes(range(256)) * 10
    name = "a b/ü?.bin"
    put = await client.put_object(f"ais://{bucket}", name, data)
    assert await client.get_object(f"ais://{bucket}", name) == data
    assert await client.get_object(bucket, name, byte_range=(10, 19)) == data[10:20]
    assert await client.get_object(bucket, name, byte_range=(2550, None)) == data[2550:]
    assert await client.get_object(bucket, name, byte_range=(-5, None)) == data[-5:]
    async with client.open_object(bucket, name, byte_range=(0, 99)) as reader:
        assert reader.status == 206
        assert reader.info.size == len(data)  # whole-object size from Content-Range
        chunks = [c async for c in reader.iter_chunks(30)]
    assert [len(c) for c in chunks] == [30, 30, 30, 10] and b"".join(chunks) == data[:100]
    info = await client.head_object(bucket, name)
    assert (info.size, info.checksum, info.mtime_ns, info.etag) == (
        len(data), checksum(data), put.mtime_ns, checksum(data)[5:])
    await client.delete_object(bucket, name)
    with pytest.raises(ObjectNotFound):
        await client.head_object(bucket, name)


async def test_get_is_redirected_and_bytes_bypass_the_proxy(cluster, client, bucket):
    data = os.urandom(512 * 1024)
    await client.put_object(bucket, "big", data)
    for byte_range, want in ((None, data), ((1000, 200_999), data[1000:201_000])):
        async with Relay(cluster.endpoint) as relay:
            async with AsyncClient(relay.url, timeout=10) as c:
                assert await c.get_object(bucket, "big", byte_range=byte_range) == want
            await relay.drained()
        assert bytes(relay.sent).startswith(f"GET /v1/objects/{bucket}/big?".encode())
        assert bytes(relay.received).startswith(b"HTTP/1.1 307 ")
        assert len(relay.received) < HEAD_LIMIT  # the object came straight from its target


async def test_typed_errors(client, bucket):
    with pytest.raises(ObjectNotFound) as exc_info:
        await client.get_object(f"ais://{bucket}", "missing.jpg")
    assert isinstance(exc_info.value, FileNotFoundError)
    assert f"ais://{bucket}/missing.jpg: no such object" in str(exc_info.value)
    # HEAD: no body, the code comes from the X-Aisync-Error-Code header
    with pytest.raises(ObjectNotFound) as exc_info:
        await client.head_object(bucket, "missing.jpg")
    assert f"ais://{bucket}/missing.jpg" in str(exc_info.value)
    missing_bucket = f"nope-{uuid.uuid4().hex[:8]}"
    with pytest.raises(BucketNotFound):
        await client.head_object(missing_bucket, "x")
    with pytest.raises(BucketNotFound):
        await client.get_object(missing_bucket, "x")
    with pytest.raises(BucketNotFound):
        await client.put_object(missing_bucket, "x", b"data")
    with pytest.raises(NotFound):
        await client.delete_object(bucket, "missing.jpg")
    await client.put_object(bucket, "small", b"0123")
    with pytest.raises(InvalidRange):
        await client.get_object(bucket, "small", byte_range=(100, 200))


async def test_head_error_code_header(cluster, bucket):
    """What the SDK decodes: a HEAD error has no body, its code travels in a header."""
    status, headers = raw_status(cluster.endpoint, "HEAD",
                                 f"/v1/objects/nope-{uuid.uuid4().hex[:8]}/x?provider=ais")
    assert status == 404 and headers["x-aisync-error-code"] == "BucketNotFound"
    target = request_target(proxy_location(cluster, "HEAD",
                                           f"/v1/objects/{bucket}/missing?provider=ais"))
    status, headers = raw_status(owner_url(cluster, bucket, "missing"), "HEAD", target,
                                 token=None)
    assert status == 404 and headers["x-aisync-error-code"] == "ObjectNotFound"


async def test_invalid_names_fail_before_any_request(cluster, bucket):
    async with Relay(cluster.endpoint) as relay:
        async with AsyncClient(relay.url, timeout=10) as c:
            with pytest.raises(InvalidBucketName):
                await c.put_object("bad..name", "x", b"")
            for bad in ("a/../b", "/lead", "./x", "nul\x00", "n" * 1025, ""):
                with pytest.raises(InvalidObjectName):
                    await c.put_object(bucket, bad, b"x")
                with pytest.raises(InvalidObjectName):
                    await c.get_object(bucket, bad)
        assert relay.connections == 0 and not relay.sent


async def test_unreachable_node_is_node_unavailable():
    with socket.socket() as s:  # a port that is free now: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AsyncClient(f"127.0.0.1:{port}", timeout=5) as c:
        with pytest.raises(NodeUnavailable, match=f"127.0.0.1:{port}") as exc_info:
            await c.health()
        assert isinstance(exc_info.value, ConnectionError)
        assert exc_info.value.__cause__ is not None
        with pytest.raises(NodeUnavailable):
            await c.get_object("b", "o")


async def test_too_many_redirects():
    """A real cluster never loops: a proxy redirects once, to the owning target, and a target
    redirects only to the owner in its current map. A server that answers 307 to itself forever
    is a misbehaving server, so this one is built here, and is the point of the test."""
    hits = 0

    async def loop(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        raise web.HTTPTemporaryRedirect(request.path_qs)

    app = web.Application()
    app.router.add_get("/v1/objects/{bucket}/{name:.+}", loop)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with AsyncClient(url, timeout=5) as c:
            with pytest.raises(AisyncError, match="more than 5 redirects"):
                await c.get_object("b", "o")
    finally:
        await runner.cleanup()
    assert hits == 6  # the first request and 5 redirects followed


# --------------------------------------------------------------------------------------------
# listings


async def test_iter_objects_pages_lazily(cluster, client, bucket):
    sizes = {f"k{i:02d}": i for i in range(7)}
    for name, size in sizes.items():
        await client.put_object(bucket, name, b"x" * size)
    await client.put_object(bucket, "other", b"")
    page = await client.list_objects(bucket, prefix="k", limit=3)
    assert [e.name for e in page.objects] == ["k00", "k01", "k02"] and page.next_token == "k02"
    page = await client.list_objects(bucket, prefix="k", limit=3, token=page.next_token)
    assert [e.name for e in page.objects] == ["k03", "k04", "k05"] and page.next_token == "k05"

    def listings(relay: Relay) -> int:
        return bytes(relay.sent).count(f"GET /v1/buckets/{bucket}?".encode())

    async with Relay(cluster.endpoint) as relay:
        async with AsyncClient(relay.url, timeout=10) as c:
            it = c.iter_objects(f"ais://{bucket}", prefix="k", page_size=3)
            first = await anext(it)
            assert first == ObjectEntry("k00", 0, checksum(b""), first.mtime_ns)
            assert first.mtime_ns > 0
            assert listings(relay) == 1  # only the first page was fetched so far
            rest = [e async for e in it]
            assert listings(relay) == 3  # 3 + 3 + 1
    assert [(e.name, e.size) for e in rest] == [(f"k{i:02d}", i) for i in range(1, 7)]
    everything = [e.name async for e in client.iter_objects(bucket, page_size=2)]
    assert everything == [*sizes, "other"]


# --------------------------------------------------------------------------------------------
# downloads


async def test_download_atomic(client, bucket, tmp_path):
    data = os.urandom(1_500_000)
    await client.put_object(bucket, "d/file.bin", data)
    dest = tmp_path / "out.bin"
    seen: list[int] = []
    infos: list[ObjectInfo] = []
    info = await client.download(bucket, "d/file.bin", dest, progress=seen.append,
                                 on_info=infos.append)
    assert dest.read_bytes() == data and info.size == len(data) and sum(seen) == len(data)
    assert infos == [info] and info.checksum == checksum(data)
    part = await client.download(bucket, "d/file.bin", tmp_path / "part.bin",
                                 byte_range=(100, 199))
    assert (tmp_path / "part.bin").read_bytes() == data[100:200] and part.size == len(data)
    # a failed download leaves neither the destination nor a temp file behind
    with pytest.raises(ObjectNotFound):
        await client.download(bucket, "missing", tmp_path / "never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "part.bin"]


# --------------------------------------------------------------------------------------------
# the blocking facade


def test_sync_client_facade(cluster, tmp_path):
    name = f"sync-{uuid.uuid4().hex[:10]}"
    with Client(cluster.endpoint, timeout=10) as c:
        assert c.ready() is True
        assert c.health()["role"] == "proxy"
        c.create_bucket(f"ais://{name}")
        for i in range(5):
            c.put_object(f"ais://{name}", f"n{i}", f"v{i}".encode())
        src = tmp_path / "up.txt"
        src.write_bytes(b"from a file")
        assert c.put_object(name, "file", Path(src)).size == 11
        assert [e.name for e in c.iter_objects(name, page_size=2)] == [
            "file", "n0", "n1", "n2", "n3", "n4"]
        assert c.get_object(name, "n3") == b"v3"
        assert c.get_object(name, "file", byte_range=(5, 8)) == b"a fi"
        assert c.head_object(name, "file").size == 11
        c.download(name, "file", tmp_path / "down.txt")
        assert (tmp_path / "down.txt").read_bytes() == b"from a file"
        c.delete_object(name, "n0")
        with pytest.raises(ObjectNotFound):
            c.get_object(name, "n0")
        assert c.bucket_info(name)["objects"] == 5
        c.destroy_bucket(name)
        assert c.head_bucket(name) is False
    with pytest.raises(RuntimeError, match="closed"):
        c.health()


def test_parse_range():
    assert parse_range("0-99") == (0, 99)
    assert parse_range("100-") == (100, None)
    assert parse_range("-5") == (-5, None)
    for bad in ("", "-", "a-b", "9-1", "5"):
        with pytest.raises(InvalidRange):
            parse_range(bad)
