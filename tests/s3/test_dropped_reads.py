"""Clients that drop large GETs mid-way, among clients that read whole objects.

A proxy sends a large object from a worker thread (``sendfile`` of a target's descriptor with
short-circuit local reads; ``splice`` from the target's connection without them; the target
itself with ``sendfile`` for a native GET). A client that resets the connection mid-way makes
the event loop close that socket while the worker may still be sending: the worker must own its
descriptors until it returns, or it writes into a closed number (``EBADF``, logged as unhandled)
or, once the number is reused, into another client's connection. So: every well-behaved client
gets exactly its object's bytes (checksummed), every dropping client got a prefix of its object
before it left, and no node logged an unhandled error.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from aisync.client import Client
from tests import harness
from tests.harness import LocalCluster, http_json
from tests.s3.conftest import ACCESS_KEY, SECRET_KEY, boto3_client

MiB = 1 << 20
SIZE = 16 * MiB
OBJECTS = 4
BUCKET = "dropped"
DROPS_PER_ROUND, READS_PER_ROUND, ROUNDS = 24, 4, 2
TOKEN = getattr(harness, "TEST_TOKEN", None)


@pytest.fixture(scope="module", params=["local-reads", "http-relay"])
def loaded(request):
    """A cluster (local reads on or off) holding OBJECTS distinct objects: (cluster, data)."""
    extra = {"http": {"local_reads": request.param == "local-reads"}}
    with LocalCluster(targets=2, proxies=1, extra=extra) as cluster:
        with Client(cluster.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "dropped reads")
        s3 = boto3_client(cluster.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        data = {f"obj-{i}": os.urandom(SIZE) for i in range(OBJECTS)}
        for key, body in data.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        yield cluster, data


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed before its answer's headers: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def get_then_drop(url: str, expected: bytes, headers: dict[str, str] | None = None) -> None:
    """GET ``url`` on a raw socket, read some of the body, then reset the connection."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, body = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        while len(body) < 256 * 1024:
            chunk = sock.recv(65536)
            assert chunk, "the server closed mid-body"
            body += chunk
        assert body == expected[:len(body)], "a dropping client got another object's bytes"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST


def presigned_get(endpoint: str, key: str) -> str:
    return boto3_client(endpoint).generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600)


def native_location(cluster: LocalCluster, key: str) -> str:
    """Where the proxy redirects a native GET of ``key`` (a target's URL, signed)."""
    parts = urlsplit(cluster.endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", f"/v1/objects/{BUCKET}/{key}",
                     headers={"Authorization": f"Bearer {TOKEN}"} if TOKEN else {})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 307, resp.status
        return resp.getheader("Location")
    finally:
        conn.close()


def run_round(cluster: LocalCluster, data: dict[str, bytes], drop_url) -> None:
    s3 = boto3_client(cluster.endpoint)
    keys = sorted(data)

    def read_whole(i: int) -> tuple[str, str]:
        key = keys[i % len(keys)]
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return key, hashlib.sha256(body).hexdigest()

    def drop(i: int) -> None:
        key = keys[i % len(keys)]
        get_then_drop(drop_url(key), data[key])

    with ThreadPoolExecutor(max_workers=12) as pool:
        drops = [pool.submit(drop, i) for i in range(DROPS_PER_ROUND)]
        reads = [pool.submit(read_whole, i) for i in range(READS_PER_ROUND)]
        for future in drops:
            future.result()
        for future in reads:
            key, digest = future.result()
            assert digest == hashlib.sha256(data[key]).hexdigest(), f"{key}: wrong bytes"


def assert_clean(cluster: LocalCluster) -> None:
    assert cluster.unhandled_errors() == []
    for node in cluster.nodes:
        log = node.log.read_text(errors="replace")
        assert "Bad file descriptor" not in log, node.id
        assert http_json(f"{node.url}/v1/health")[0] == 200


def test_s3_clients_dropping_large_gets(loaded):
    cluster, data = loaded
    for _ in range(ROUNDS):
        run_round(cluster, data, lambda key: presigned_get(cluster.endpoint, key))
    assert_clean(cluster)


def test_native_clients_dropping_large_gets_at_the_target(loaded):
    cluster, data = loaded
    for _ in range(ROUNDS):
        run_round(cluster, data, lambda key: native_location(cluster, key))
    assert_clean(cluster)
