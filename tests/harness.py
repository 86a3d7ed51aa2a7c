"""A real aisync cluster for tests: node processes on loopback ports chosen at run time.

``LocalCluster`` writes one YAML config per node under a temp directory, spawns each node as
``python -m aisync node --config FILE`` (the same command operators run), waits until the
primary's cluster map lists every target as active and every proxy is ready, and on ``stop()``
terminates every process it started (SIGKILL after a grace period) and removes the directory.
Keepalive runs fast here (0.3 s interval, dead after 1.5 s) so membership tests finish quickly.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from aisync.client.types import JOB_FINAL_STATES

REPO = Path(__file__).resolve().parent.parent
#: The admin token of every test cluster (unless a test gives its own): the SDK finds it in
#: ``AISYNC_TOKEN``, which ``tests/conftest.py`` sets, and :func:`http_json` sends it.
TEST_TOKEN = secrets.token_urlsafe(24)
#: Test clusters may create ``fs://`` buckets on directories under this root (pytest's tmp_path
#: lives there): the nodes' fs profile ``tmp`` names it.
FS_ROOT = tempfile.gettempdir()
#: Failure detection of test clusters: a budget no VM stall reaches, so a healthy but briefly
#: starved node is never dropped from the map mid-test (and its objects never seem to vanish).
STEADY_KEEPALIVE = {"interval": "1s", "dead_after": "10s", "request_timeout": "3s"}
#: For tests that kill a node and wait for the cluster to notice: pass as ``extra``.
FAST_FAILURE_DETECTION = {
    "keepalive": {"interval": "300ms", "dead_after": "1500ms", "request_timeout": "1s"}}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, method: str = "GET", body: bytes | None = None,
              timeout: float = 5.0, token: str | None = TEST_TOKEN,
              headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One request with the test token (``token=None``: none) and the answer as JSON."""
    req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else {}
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def new_fs_bucket(client, tmp_path: Path, prefix: str = "fs") -> tuple[str, Path]:
    """An ``fs://`` bucket on a fresh directory under ``tmp_path`` (inside the test nodes'
    fs root): ``(uri, directory)``."""
    share = tmp_path / "share"
    share.mkdir()
    uri = f"fs://{prefix}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(uri, settings={"path": str(share)})
    return uri, share


def bearer(token: str = TEST_TOKEN) -> dict[str, str]:
    """The header that carries a test cluster's admin token."""
    return {"Authorization": f"Bearer {token}"}


def raw_http(url: str, method: str, target: str, body=None, headers: dict | None = None, *,
             chunked: bool = False) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a fresh connection, the request target sent exactly as given (no
    encoding of the path, no decoding of the body), never following a redirect: ``(status,
    headers, body)``. ``chunked``: the body goes with ``Transfer-Encoding: chunked``."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        if chunked:
            conn.request(method, target, body=iter([body or b""]), headers=headers or {},
                         encode_chunked=True)
        else:
            conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def member_headers(secret: str, method: str, target: str, body: bytes = b"",
                   member: str = "test-member") -> dict[str, str]:
    """Headers that sign a request as a member of the cluster whose secret is ``secret``
    (``target``: the path and query exactly as sent)."""
    from aisync.auth.members import MemberSigner, body_digest

    signer = MemberSigner(member, secret.encode(), lambda origin: True)
    return signer.headers(method, target, body_digest(body))


def member_json(cluster: LocalCluster, url: str, method: str = "GET", path: str = "",
                body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict]:
    """``http_json`` as a cluster member (signed with the cluster's secret, no token)."""
    return http_json(f"{url}{path}", method, body or None, timeout=timeout, token=None,
                     headers=member_headers(cluster.cluster_secret, method, path, body))


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


@dataclass
class Node:
    id: str
    role: str
    port: int
    dir: Path
    config: Path
    process: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "node.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class LocalCluster:
    def __init__(self, targets: int = 3, proxies: int = 1, mountpaths: int = 1,
                 extra: dict | None = None, base: Path | None = None,
                 command_prefix: list[str] | None = None, token: str = TEST_TOKEN) -> None:
        """``command_prefix`` wraps every node's command (e.g. ``setpriv`` options that drop
        the capabilities a root process uses to bypass file permissions); ``token`` is the
        cluster's admin token."""
        self.base = Path(base or tempfile.mkdtemp(prefix="aisync-test-"))
        self.nodes: list[Node] = []
        self.extra = extra or {}
        self.token = token
        #: Signs this cluster's intra-cluster requests (tests forge with it, or without it).
        self.cluster_secret = secrets.token_urlsafe(32)
        self.command_prefix = list(command_prefix or [])
        # Every node binds port 0 and the harness reads the bound port back from its log (no
        # window in which another process could take a port chosen in advance); a restarted
        # node keeps its port.
        for i in range(proxies):
            self._add(f"proxy-{i}", "proxy", 0, 0)
        for i in range(targets):
            self._add(f"target-{i}", "target", 0, mountpaths)

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    @property
    def proxies(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "proxy"]

    @property
    def targets(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "target"]

    @property
    def endpoint(self) -> str:
        return self.primary.url

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def _add(self, node_id: str, role: str, port: int, mountpaths: int) -> None:
        ndir = self.base / node_id
        ndir.mkdir(parents=True)
        cfg: dict = {
            "role": role, "node_id": node_id, "host": "127.0.0.1", "port": port,
            "data_dir": str(ndir), "logging": {"format": "json", "level": "INFO"},
            "keepalive": dict(STEADY_KEEPALIVE),
            "cluster": {"name": "test-zone"},
            "auth": {"admin_token": self.token, "cluster_secret": self.cluster_secret},
            "backends": {"tmp": {"provider": "fs", "root": FS_ROOT}},
        }
        if role == "target":
            cfg["storage"] = {"mountpaths": [str(ndir / f"mp{i}") for i in range(mountpaths)]}
        for key, value in self.extra.items():
            if isinstance(value, dict):
                cfg.setdefault(key, {}).update(value)
            else:
                cfg[key] = value
        path = ndir / "node.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.nodes.append(Node(node_id, role, port, ndir, path))

    # -- processes --
    def start_node(self, node: Node) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AISYNC_")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        with open(node.log, "ab") as log:
            node.process = subprocess.Popen(
                [*self.command_prefix, sys.executable, "-m", "aisync", "node", "--config",
                 str(node.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.base,
                start_new_session=True)

    def start(self, timeout: float = 60.0) -> LocalCluster:
        try:
            self.start_node(self.primary)
            self._learn_port(self.primary, timeout)
            wait_for(lambda: self._health(self.primary), timeout, "the primary proxy")
            for node in self.nodes[1:]:
                self._edit_config(node, {"cluster": {"primary_url": self.primary.url}})
                self.start_node(node)
            for node in self.nodes[1:]:
                self._learn_port(node, timeout)
            self.wait_ready(timeout)
        except BaseException:
            self.dump_logs()
            self.stop()
            raise
        return self

    @staticmethod
    def _edit_config(node: Node, changes: dict) -> None:
        cfg = yaml.safe_load(node.config.read_text())
        for key, value in changes.items():
            if isinstance(value, dict):
                cfg.setdefault(key, {}).update(value)
            else:
                cfg[key] = value
        node.config.write_text(yaml.safe_dump(cfg))

    def _learn_port(self, node: Node, timeout: float) -> None:
        """A node started on port 0: its bound port, from the "serving at URL" record of its
        log; written into its config so a restart binds it again."""
        if node.port:
            return

        def bound() -> int | None:
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(f"{node.id} exited with {node.process.returncode}:\n"
                                   + node.log.read_text()[-3000:])
            for line in node.log.read_text(errors="replace").splitlines():
                if '"serving at' not in line and " serving at " not in line:
                    continue
                record = json.loads(line)
                if record.get("logger") == "aisync.node" and record.get("url"):
                    return urllib.parse.urlsplit(record["url"]).port
            return None

        node.port = wait_for(bound, timeout, f"{node.id} to report its port")
        self._edit_config(node, {"port": node.port})

    def _health(self, node: Node) -> bool:
        if node.process is not None and node.process.poll() is not None:
            raise RuntimeError(f"{node.id} exited with {node.process.returncode}:\n"
                               + node.log.read_text()[-3000:])
        return http_json(f"{node.url}/v1/health", timeout=1, token=None)[0] == 200

    def cluster_map(self, via: Node | None = None) -> dict:
        status, body = http_json(f"{(via or self.primary).url}/v1/cluster/map",
                                 token=self.token)
        if status != 200:
            raise ValueError(f"cluster map: HTTP {status}")
        return body

    def active_targets(self) -> set[str]:
        nodes = self.cluster_map()["nodes"]
        return {i for i, n in nodes.items() if n["role"] == "target" and n["state"] == "active"}

    def wait_ready(self, timeout: float = 60.0) -> None:
        want = {n.id for n in self.targets if n.process and n.process.poll() is None}
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                wait_for(lambda n=node: self._health(n), timeout, f"{node.id} to serve")
        wait_for(lambda: want <= self.active_targets(), timeout, "all targets active")
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                wait_for(lambda n=node: http_json(f"{n.url}/v1/health/ready",
                                                  token=None)[0] == 200,
                         timeout, f"{node.id} ready")

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        if node.process is not None and node.process.poll() is None:
            os.killpg(node.process.pid, sig)
            node.process.wait(timeout=15)

    def stop_node(self, node: Node) -> None:
        if node.process is None or node.process.poll() is not None:
            return
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill(node)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            try:
                self.stop_node(node)
            except Exception:
                self.kill(node)
        shutil.rmtree(self.base, ignore_errors=True)

    def unhandled_errors(self) -> list[str]:
        """Unhandled exceptions the nodes logged: always a bug (errors must map to 4xx/5xx)."""
        found = []
        for node in self.nodes:
            if not node.log.exists():
                continue
            for line in node.log.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("level") == "error" and (
                        record.get("logger") == "aiohttp.server"
                        or str(record.get("msg", "")).startswith("unhandled error")):
                    found.append(f"{node.id}: {record.get('msg')}\n{record.get('exc', '')}")
        return found

    def dump_logs(self) -> None:
        for node in self.nodes:
            if node.log.exists():
                sys.stderr.write(f"--- {node.id} log tail ---\n{node.log.read_text()[-2000:]}\n")

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.dump_logs()
        errors = self.unhandled_errors()
        self.stop()
        if errors and exc[0] is None:
            raise AssertionError("nodes logged unhandled exceptions:\n" + "\n".join(errors))


# -- the job API, shared by the sync-engine tests --

FINAL_JOB_STATES = tuple(sorted(JOB_FINAL_STATES))


def api(cluster: LocalCluster, method: str, path: str, body: dict | None = None,
        timeout: float = 60.0) -> tuple[int, dict]:
    """One JSON call to the cluster's endpoint: (status, answer)."""
    data = json.dumps(body).encode() if body is not None else None
    return http_json(f"{cluster.endpoint}{path}", method, data, timeout=timeout)


def wait_job(cluster: LocalCluster, job_id: str, timeout: float = 120) -> dict:
    """The job once finished (long-polling ``?wait=``)."""
    def done() -> dict | None:
        status, job = api(cluster, "GET", f"/v1/jobs/{job_id}?wait=20", timeout=40)
        assert status == 200, job
        return job if job["state"] in FINAL_JOB_STATES else None
    return wait_for(done, timeout, f"job {job_id}")


def run_job(cluster: LocalCluster, **spec) -> dict:
    """Start a job (``POST /v1/jobs``) and return it finished."""
    status, job = api(cluster, "POST", "/v1/jobs", spec)
    assert status == 201, job
    return wait_job(cluster, job["id"])


def job_report(cluster: LocalCluster, job_id: str) -> dict[str, tuple[str, str | None]]:
    """Every report row of a job: name -> (action, reason)."""
    rows: dict[str, tuple[str, str | None]] = {}
    after = ""
    while True:
        query = "limit=500" + (f"&after={urllib.parse.quote(after)}" if after else "")
        status, page = api(cluster, "GET", f"/v1/jobs/{job_id}/report?{query}")
        assert status == 200, page
        rows.update({r["name"]: (r["action"], r["reason"]) for r in page["entries"]})
        if not page["next_token"]:
            return rows
        after = page["next_token"]


def peer_stats(cluster: LocalCluster) -> dict[str, int]:
    """A zone's peer-read counters (bytes from peers and sources, hits, misses, errors),
    summed over its targets."""
    totals: dict[str, int] = {}
    for target in cluster.targets:
        for key, value in http_json(f"{target.url}/v1/node/status")[1]["peers"].items():
            totals[key] = totals.get(key, 0) + value
    return totals


def cli_ok(result):
    """A click ``Result`` that exited 0 without a traceback (else a readable failure)."""
    assert result.exit_code == 0, \
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.output
    return result
