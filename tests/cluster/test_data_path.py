"""Object round trips through a real 1-proxy, 3-target cluster (node processes on loopback)."""

from __future__ import annotations

import hashlib
import os
import urllib.request
import uuid

import pytest
import xxhash

from aisync.client import Client
from aisync.util.errors import BucketNotFound, InvalidRange, ObjectNotFound
from tests.harness import http_json

SIZES = [0, 1, 4096, 65536, 65537, 300_000, 5 * 1024 * 1024 + 7]


@pytest.fixture
def client(cluster):
    with Client(cluster.endpoint) as c:
        yield c


@pytest.fixture
def bucket(client):
    name = f"b-{uuid.uuid4().hex[:10]}"
    client.create_bucket(f"ais://{name}")
    return name


@pytest.mark.parametrize("size", SIZES)
def test_put_get_head_delete_round_trip(client, bucket, size):
    data = os.urandom(size)
    name = f"dir/sub/obj-{size}.bin"
    info = client.put_object(bucket, name, data)
    assert info.size == size
    assert info.checksum == f"xxh3:{xxhash.xxh3_64_hexdigest(data)}"
    assert client.get_object(bucket, name) == data
    head = client.head_object(bucket, name)
    assert (head.size, head.checksum) == (size, info.checksum)
    client.delete_object(bucket, name)
    with pytest.raises(ObjectNotFound):
        client.get_object(bucket, name)
    with pytest.raises(FileNotFoundError):  # typed errors subclass the built-ins
        client.head_object(bucket, name)


@pytest.mark.parametrize("size", [5000, 300_000])  # in-memory path and sendfile path
def test_ranges(client, bucket, size):
    data = os.urandom(size)
    client.put_object(bucket, "r", data)
    assert client.get_object(bucket, "r", byte_range=(10, 99)) == data[10:100]
    assert client.get_object(bucket, "r", byte_range=(size - 5, None)) == data[-5:]
    assert client.get_object(bucket, "r", byte_range=(0, size + 100)) == data
    with pytest.raises(InvalidRange):
        client.get_object(bucket, "r", byte_range=(size, None))


def test_overwrite_returns_new_content(client, bucket):
    for i in range(5):
        payload = bytes([i]) * (70_000 + i)
        client.put_object(bucket, "same", payload)
        assert client.get_object(bucket, "same") == payload


def test_nested_names_coexist_and_unicode(client, bucket):
    names = ["a", "a/b", "a/b/c", "ünïcødé/名前.txt", "spaces in name", "x" * 1024]
    for n in names:
        client.put_object(bucket, n, n.encode())
    for n in names:
        assert client.get_object(bucket, n) == n.encode()
    listed = [e.name for e in client.iter_objects(bucket)]
    assert listed == sorted(names, key=lambda s: s.encode())


def test_listing_pages_in_key_order(client, bucket):
    names = [f"p/{i:04d}" for i in range(257)] + [f"q/{i}" for i in range(13)]
    for n in names:
        client.put_object(bucket, n, b"x")
    seen, token, pages = [], None, 0
    while True:
        page = client.list_objects(bucket, limit=50, token=token)
        seen += [e.name for e in page.objects]
        pages += 1
        assert len(page.objects) <= 50
        token = page.next_token
        if token is None:
            break
    assert seen == sorted(names)
    assert pages == 6
    assert [e.name for e in client.iter_objects(bucket, prefix="q/")] == sorted(names[-13:])
    assert client.list_objects(bucket, prefix="zzz").objects == []
    info = client.bucket_info(bucket)
    assert (info["objects"], info["bytes"]) == (270, 270)


def test_objects_spread_over_all_targets(cluster, client, bucket):
    for i in range(60):
        client.put_object(bucket, f"spread/{i}", b"y")
    owners = set()
    for i in range(60):
        req = urllib.request.Request(f"{cluster.endpoint}/v1/objects/{bucket}/spread/{i}",
                                     method="HEAD", headers=admin(cluster))
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as exc:
            opener.open(req)
        assert exc.value.code == 307
        owners.add(exc.value.headers["Location"].split("/v1/")[0])
    assert owners == {t.url for t in cluster.targets}


def admin(cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.token}"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_reverse_proxy_mode_streams_through_proxy(cluster, bucket):
    data = os.urandom(200_000)
    url = f"{cluster.endpoint}/v1/objects/{bucket}/rev.bin?mode=reverse"
    req = urllib.request.Request(url, method="PUT", data=data, headers=admin(cluster))
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200
    get = urllib.request.Request(url, headers=admin(cluster))
    with urllib.request.build_opener(NoRedirect).open(get) as resp:  # no redirect involved
        assert resp.status == 200
        assert hashlib.sha256(resp.read()).digest() == hashlib.sha256(data).digest()


def test_bucket_lifecycle(client):
    name = f"life-{uuid.uuid4().hex[:8]}"
    assert not client.head_bucket(name)
    client.create_bucket(name)
    assert client.head_bucket(name)
    assert name in [b["name"] for b in client.list_buckets()]
    client.put_object(name, "k", b"v")
    client.destroy_bucket(name)
    assert not client.head_bucket(name)
    with pytest.raises(BucketNotFound):
        client.get_object(name, "k")
    client.create_bucket(name)  # a re-created bucket starts empty
    assert client.list_objects(name).objects == []


def test_unknown_bucket_and_object(client, bucket):
    with pytest.raises(BucketNotFound):
        client.put_object("no-such-bucket", "x", b"1")
    with pytest.raises(ObjectNotFound):
        client.get_object(bucket, "missing")


def test_checksum_declared_by_client_is_verified(cluster, bucket):
    url = f"{cluster.endpoint}/v1/objects/{bucket}/declared?mode=reverse"
    req = urllib.request.Request(url, method="PUT", data=b"abc",
                                 headers={"X-Aisync-Checksum": "xxh3:0000000000000000",
                                          **admin(cluster)})
    status, body = _send(req)
    assert (status, body["code"]) == (400, "BadDigest")
    assert http_json(url, method="HEAD")[0] == 404  # nothing was stored


def _send(req):
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, {}
    except urllib.error.HTTPError as exc:
        import json

        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("size", [3000, 300_000])
def test_keep_alive_connection_serves_many_gets(cluster, client, bucket, size):
    import http.client
    from urllib.parse import urlparse

    data = os.urandom(size)
    client.put_object(bucket, "ka", data)
    owner = client.head_object(bucket, "ka")  # warm
    assert owner.size == size
    u = urlparse(cluster.endpoint)
    signed = {}  # the proxy signs each Location for its method
    for method in ("GET", "HEAD"):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request(method, f"/v1/objects/{bucket}/ka", headers=admin(cluster))
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 307
        location = urlparse(resp.getheader("Location"))
        signed[method] = f"{location.path}?{location.query}"
        conn.close()
    conn = http.client.HTTPConnection(location.hostname, location.port, timeout=10)
    for _ in range(5):  # one TCP connection, five full GETs and a HEAD
        conn.request("GET", signed["GET"])
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == data
        conn.request("HEAD", signed["HEAD"])
        resp = conn.getresponse()
        resp.read()
        assert int(resp.getheader("Content-Length")) == size
    conn.close()


def _object_file(cluster, bucket: str, name: str):
    """The file holding ``bucket/name`` on whichever target stores it."""
    from aisync.storage.metadata import read_metadata

    for target in cluster.targets:
        for path in (target.dir).rglob("objects/**/*"):
            if path.is_file():
                meta = read_metadata(str(path))
                if meta is not None and meta.name == name and meta.bucket == f"ais/{bucket}":
                    return path
    raise AssertionError(f"{bucket}/{name} is on no target")


@pytest.mark.parametrize("size,query", [(5000, ""), (300_000, "?verify=true")])
def test_corrupted_bytes_are_never_served(cluster, client, bucket, size, query):
    data = os.urandom(size)
    client.put_object(bucket, "rot", data)
    path = _object_file(cluster, bucket, "rot")
    with open(path, "r+b") as f:  # bit rot, behind aisync's back, before any read
        f.seek(size // 2)
        flipped = f.read(1)[0] ^ 0xFF
        f.seek(size // 2)  # the read moved past it: write the byte back where it was
        f.write(bytes([flipped]))
    with open(path, "rb") as f:
        f.seek(size // 2)
        assert f.read(1)[0] != data[size // 2]  # the rot really is on disk
    status, body = http_json(f"{cluster.endpoint}/v1/objects/{bucket}/rot{query}"
                             f"{'&' if query else '?'}mode=reverse")
    assert (status, body["code"]) == (500, "ObjectCorrupted")
    with pytest.raises(ObjectNotFound):  # the copy was quarantined
        client.get_object(bucket, "rot")
    assert not path.exists()
