"""The bounded fuzz suite: hostile requests against a real cluster on loopback.

One cluster (1 proxy with S3 on its port and on a dedicated one, 2 targets, a read worker each)
serves every fuzz module. Requests are written byte by byte on raw sockets, so malformed ones
reach the server as sent. Each test is a hypothesis property with a fixed example count,
``derandomize=True`` (the same examples on every run) and no example database; every request
has a socket timeout. After each test the cluster must be as healthy as before: every node
alive and ready, and no node log holding a traceback or an ERROR record since the test began.

What a server may answer: anything below 500, or the documented 501 (``NotImplemented``) and
503 (a node or backend unavailable). Anything else is a bug.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, settings

from aisync.client import Client
from tests import harness
from tests.harness import LocalCluster, http_json

ACCESS_KEY, SECRET_KEY = "AKFUZZ0000000000001", "fuzz-secret-0123456789-abcdefghij"
BUCKET = "fuzz"
OBJECTS = {"small": b"0123456789", "big": os.urandom(300 * 1024)}
#: Statuses of the 5xx class a client may cause: not implemented, unavailable.
DOCUMENTED_5XX = frozenset({501, 503})
TIMEOUT = 10.0

settings.register_profile(
    "fuzz", deadline=None, derandomize=True, database=None, print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fuzz_settings(examples: int) -> settings:
    """A test's bound: ``examples`` requests-producing examples, deterministic."""
    return settings(settings.get_profile("fuzz"), max_examples=examples)


def token() -> str | None:
    return getattr(harness, "TEST_TOKEN", None)


@dataclass
class Endpoint:
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80)

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


def build(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"", *,
          host: str = "", close: bool = True) -> bytes:
    """A request's bytes exactly as given: no normalization of the target or the headers."""
    lines = [f"{method} {target} HTTP/1.1".encode("utf-8", "surrogateescape")]
    names = {name.lower() for name, _ in headers}
    if host and "host" not in names:
        lines.append(f"Host: {host}".encode())
    for name, value in headers:
        lines.append(f"{name}: {value}".encode("utf-8", "surrogateescape"))
    if close and "connection" not in names:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(endpoint: Endpoint, data: bytes, *, half_close: bool = False) -> int | None:
    """Send ``data`` and return the final status code, or None when the server closed the
    connection without one. ``half_close``: end our side after sending (a body that lies
    about its length is then cut short, as when a client goes away)."""
    with socket.create_connection((endpoint.host, endpoint.port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before taking everything
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                if status >= 200 or status == 101:
                    return status
                buffer = rest  # 100 Continue: the final answer follows
        return None


def check(status: int | None, what: str, *, may_close: bool = False) -> None:
    """The assertion every fuzz request ends with."""
    if status is None:
        assert may_close, f"no answer to {what}"
        return
    assert status < 500 or status in DOCUMENTED_5XX, f"HTTP {status} for {what}"


def s3_headers(method: str, netloc: str, target: str, *, body: bytes = b"",
               payload: str | None = None, secret: str = SECRET_KEY,
               region: str = "us-east-1", extra: dict[str, str] | None = None,
               amz_date: str | None = None) -> dict[str, str]:
    """SigV4 headers (botocore's signer) for ``method target`` at ``netloc``."""
    class Signer(S3SigV4Auth):
        def payload(self, request):
            return payload if payload is not None else super().payload(request)

        def _modify_request_before_signing(self, request):
            super()._modify_request_before_signing(request)
            if amz_date is not None:
                request.headers.replace_header("X-Amz-Date", amz_date)

    request = AWSRequest(method=method, url=f"http://{netloc}{target}", data=body,
                         headers=dict(extra or {}))
    Signer(Credentials(ACCESS_KEY, secret), "s3", region).add_auth(request)
    return dict(request.headers.items())


def presigned_target(method: str, netloc: str, target: str, *, expires: int = 60,
                     region: str = "us-east-1", secret: str = SECRET_KEY) -> str:
    request = AWSRequest(method=method, url=f"http://{netloc}{target}")
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, secret), "s3", region,
                     expires=expires).add_auth(request)
    parts = urlsplit(request.url)
    return f"{parts.path}?{parts.query}"


class FuzzCluster:
    """The running cluster and what the fuzz modules address in it."""

    def __init__(self, cluster: LocalCluster, fs_bucket: str, fs_root: Path) -> None:
        self.cluster = cluster
        self.fs_bucket = fs_bucket
        self.proxy = Endpoint.of(cluster.endpoint)
        _, status = http_json(f"{cluster.endpoint}/v1/node/status")
        self.s3_port = Endpoint.of(status["s3_url"])
        self.targets = [Endpoint.of(t.url) for t in cluster.targets]
        self.fs_root = fs_root
        self._locations: dict[tuple[str, str], tuple[float, Endpoint, str]] = {}

    def signed_location(self, method: str, path: str) -> tuple[Endpoint, str]:
        """Where the proxy redirects ``method path`` (signed, valid for a minute): reused
        for 20 s, so direct target requests cost one request each."""
        cached = self._locations.get((method, path))
        if cached is None or time.monotonic() - cached[0] > 20:
            data = build(method, path, [("Authorization", f"Bearer {token()}")],
                         host=self.proxy.netloc)
            with socket.create_connection((self.proxy.host, self.proxy.port), TIMEOUT) as s:
                s.sendall(data)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    head += chunk
            lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            assert status == 307, lines
            location = next(v for k, _, v in (line.partition(": ") for line in lines[1:])
                            if k.lower() == "location")
            parts = urlsplit(location)
            cached = (time.monotonic(), Endpoint.of(location), f"{parts.path}?{parts.query}")
            self._locations[(method, path)] = cached
        return cached[1], cached[2]

    def log_offsets(self) -> dict[str, int]:
        return {n.id: n.log.stat().st_size if n.log.exists() else 0
                for n in self.cluster.nodes}

    def problems_since(self, offsets: dict[str, int]) -> list[str]:
        """Tracebacks and ERROR records the nodes logged after ``offsets``, and nodes that are
        not alive and ready."""
        found = []
        for node in self.cluster.nodes:
            if not node.log.exists():
                continue
            with open(node.log, "rb") as f:
                f.seek(offsets.get(node.id, 0))
                text = f.read().decode("utf-8", "replace")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    if "Traceback (most recent call last)" in line:
                        found.append(f"{node.id}: a traceback outside the log format")
                    continue
                if not isinstance(record, dict):
                    continue
                if record.get("exc") or record.get("level") in ("error", "critical"):
                    found.append(f"{node.id}: {record.get('level')} {record.get('msg')}\n"
                                 f"{record.get('exc', '')}")
        for node in self.cluster.nodes:
            if node.process is None or node.process.poll() is not None:
                found.append(f"{node.id} is not running")
                continue
            status, _ = http_json(f"{node.url}/v1/health/ready", timeout=10)
            if status != 200:
                found.append(f"{node.id} is not ready (HTTP {status})")
        return found


@pytest.fixture(scope="package")
def fuzz_cluster(tmp_path_factory):
    fs_root = tmp_path_factory.mktemp("fuzz-fs")
    (fs_root / "present").write_bytes(b"fs object")
    extra = {"s3": {"port": 0}, "http": {"read_workers": 1}}
    with LocalCluster(targets=2, proxies=1, extra=extra) as cluster:
        with Client(cluster.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "fuzz")
            client.create_bucket(f"ais://{BUCKET}")
            for name, data in OBJECTS.items():
                client.put_object(f"ais://{BUCKET}", name, data)
            fs_bucket = f"fuzzfs-{uuid.uuid4().hex[:6]}"
            client.create_bucket(f"fs://{fs_bucket}", settings={"path": str(fs_root)})
        yield FuzzCluster(cluster, fs_bucket, fs_root)


@pytest.fixture
def fuzz(fuzz_cluster):
    """The cluster, checked after the test: healthy, and nothing logged as a bug."""
    offsets = fuzz_cluster.log_offsets()
    yield fuzz_cluster
    problems = fuzz_cluster.problems_since(offsets)
    assert not problems, "\n".join(problems)
