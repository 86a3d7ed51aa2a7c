"""Crash safety and isolation: kill -9 mid-PUT, concurrent PUT/GET, acknowledged writes survive."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import xxhash

from aisync.client import Client
from aisync.util.errors import ObjectNotFound
from tests.harness import FAST_FAILURE_DETECTION, LocalCluster, http_json, wait_for


@pytest.fixture
def fresh():
    with LocalCluster(targets=3, proxies=1, extra=FAST_FAILURE_DETECTION) as c:
        yield c


def _owner_location(cluster, method: str, bucket: str, name: str) -> tuple[str, str]:
    """``(owner URL, request target)`` the proxy redirects ``method`` of the object to (the
    target carries the proxy's signature for that method: a client's only way to the owner)."""
    u = urlparse(cluster.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    conn.request(method, f"/v1/objects/{bucket}/{name}",
                 headers={"Authorization": f"Bearer {cluster.token}"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 307
    location = urlparse(resp.getheader("Location"))
    return f"{location.scheme}://{location.netloc}", f"{location.path}?{location.query}"


def test_sigkill_mid_put_leaves_no_partial_object(fresh):
    with Client(fresh.endpoint) as client:
        bucket = f"kill-{uuid.uuid4().hex[:8]}"
        client.create_bucket(bucket)
        others = {f"other-{i}": os.urandom(2000) for i in range(30)}
        for name, data in others.items():
            client.put_object(bucket, name, data)
        name = "victim.bin"
        client.put_object(bucket, name, b"old version")  # an acknowledged earlier version
        owner_url, signed_put = _owner_location(fresh, "PUT", bucket, name)
        owner = next(t for t in fresh.targets if t.url == owner_url)
        # Stream half of a large body straight to the owner, then kill it with SIGKILL.
        u = urlparse(owner_url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.putrequest("PUT", signed_put)
        conn.putheader("Content-Length", str(8 * 1024 * 1024))
        conn.endheaders()
        for _ in range(64):
            conn.send(b"N" * 65536)  # 4 MiB of the 8 MiB
        tmp_dir = Path(owner.dir) / "mp0" / "tmp"
        wait_for(lambda: any(tmp_dir.iterdir()), 10, "the partial write to reach disk")
        fresh.kill(owner, signal.SIGKILL)
        conn.close()
        # Other targets' objects keep being served while the owner is down.
        wait_for(lambda: owner.id not in fresh.active_targets(), 10, "owner marked inactive")
        served = sum(1 for n, d in others.items() if _try_get(client, bucket, n) == d)
        assert served > 0
        fresh.start_node(owner)
        fresh.wait_ready()
        # Only the acknowledged version is visible; the temp file of the torn PUT is gone.
        assert client.get_object(bucket, name) == b"old version"
        assert not any(tmp_dir.iterdir())
        for n, d in others.items():
            assert client.get_object(bucket, n) == d


def _try_get(client, bucket, name):
    try:
        return client.get_object(bucket, name)
    except (ObjectNotFound, ConnectionError, OSError):
        return None


def test_acknowledged_writes_survive_sigkill(fresh):
    with Client(fresh.endpoint) as client:
        bucket = f"ack-{uuid.uuid4().hex[:8]}"
        client.create_bucket(bucket)
        written = {f"ack/{i}": os.urandom(100 + 977 * i) for i in range(40)}
        for name, data in written.items():
            client.put_object(bucket, name, data)
        for target in fresh.targets:
            fresh.kill(target, signal.SIGKILL)  # no clean shutdown: the index is rebuilt
        for target in fresh.targets:
            fresh.start_node(target)
        fresh.wait_ready()
        for name, data in written.items():
            assert client.get_object(bucket, name) == data
        assert sorted(e.name for e in client.iter_objects(bucket)) == sorted(written)


@pytest.mark.parametrize("workers", [0, 1], ids=["one-process", "read-workers"])
@pytest.mark.parametrize("size", [3000, 400_000])  # hot-cache path and sendfile path
def test_concurrent_put_and_get_never_tear(size, workers):
    with LocalCluster(targets=3, extra={"http": {"read_workers": workers}}) as fresh, \
            Client(fresh.endpoint) as client:
        bucket = f"tear-{uuid.uuid4().hex[:8]}"
        client.create_bucket(bucket)
        versions = [bytes([v]) * size for v in range(1, 9)]
        sums = {xxhash.xxh3_64_hexdigest(v): v[0] for v in versions}
        client.put_object(bucket, "hot", versions[0])
        errors: list[str] = []
        crashed: list[BaseException] = []  # any exception that ended a thread
        stop = threading.Event()
        readers = 3
        reads = [0] * readers
        # every reader has read once before the writer starts: reads and writes overlap
        started = threading.Barrier(readers + 1, timeout=60)

        def writer():
            started.wait()
            for _ in range(6):
                for v in versions:
                    client.put_object(bucket, "hot", v)

        def reader(i: int):
            with Client(fresh.endpoint) as own:
                while True:
                    data = own.get_object(bucket, "hot")
                    reads[i] += 1
                    if len(data) != size or data.count(data[0]) != size:
                        errors.append(f"torn read: {len(data)} bytes, first {data[:1]!r}")
                    elif xxhash.xxh3_64_hexdigest(data) not in sums:
                        errors.append("unknown content")
                    if reads[i] == 1:
                        started.wait()
                    if stop.is_set():
                        return

        def guarded(fn, *args):
            try:
                fn(*args)
            except BaseException as exc:
                crashed.append(exc)
                started.abort()  # nobody waits for a thread that died
            finally:
                if fn is writer:
                    stop.set()

        threads = [threading.Thread(target=guarded, args=(reader, i), daemon=True)
                   for i in range(readers)]
        threads.append(threading.Thread(target=guarded, args=(writer,), daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        stop.set()  # a hung writer must not leave the readers running
        assert not [t for t in threads if t.is_alive()], "threads still running after 120 s"
        assert not crashed, crashed
        assert not errors, errors[:3]
        assert all(reads), reads
        assert client.get_object(bucket, "hot") == versions[-1]


def _worker_pids(cluster, node) -> dict[str, int]:
    status = http_json(f"{node.url}/v1/node/status")[1]
    workers = {w["name"]: w for w in status["workers"]}
    return {k: int(v) for k, v in workers["read-workers"].get("pids", {}).items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_read_worker_is_restarted_and_exits_with_its_target():
    with LocalCluster(targets=1, extra={"http": {"read_workers": 2}}) as fresh, \
            Client(fresh.endpoint) as client:
        client.create_bucket("rw")
        payload = os.urandom(200_000)
        client.put_object("rw", "x", payload)
        target = fresh.targets[0]
        pids = wait_for(lambda: len(_worker_pids(fresh, target)) == 2 and
                        _worker_pids(fresh, target), 10, "two read workers")
        os.kill(pids["0"], signal.SIGKILL)
        wait_for(lambda: _worker_pids(fresh, target).get("0") not in (None, pids["0"]), 15,
                 "the killed worker to be replaced")
        for _ in range(20):  # served by whichever process accepts each connection
            assert client.get_object("rw", "x") == payload
        survivors = _worker_pids(fresh, target)
        os.kill(target.process.pid, signal.SIGKILL)  # only the main process
        target.process.wait(timeout=10)
        wait_for(lambda: not any(_alive(p) for p in survivors.values()), 10,
                 "read workers to exit after their target died")
