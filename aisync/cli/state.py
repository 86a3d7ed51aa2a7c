"""Local cluster bookkeeping for ``aisync cluster up/down``: the cluster dir, its state file,
free ports, node processes.

The state file ``DIR/cluster.json`` is ``{"endpoint", "dir", "status", "nodes": [{"id", "role",
"url", "pid", "log"}]}``, written atomically (temp file, fsync, rename). A recorded pid counts
as live only if the process exists, is not a zombie and (where ``/proc`` tells) runs aisync, so
a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aisync.cli.common import CliError

STATE_FILE = "cluster.json"
STOP_TIMEOUT = 10.0


def default_cluster_dir() -> Path:
    return Path(os.environ.get("AISYNC_CLUSTER_DIR") or ".aisync-cluster")


def resolve_dir(path: str | os.PathLike | None) -> Path:
    return Path(path).expanduser() if path else default_cluster_dir()


def read_state(cluster_dir: Path) -> dict[str, Any] | None:
    path = Path(cluster_dir) / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON; remove it if no cluster runs") from exc
    if not isinstance(doc, dict):
        raise CliError(f"{path} does not hold a cluster state")
    return doc


def write_state(cluster_dir: Path, doc: dict[str, Any]) -> None:
    path = Path(cluster_dir) / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_state(cluster_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (Path(cluster_dir) / STATE_FILE).unlink()


# -- processes -------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a running (non-zombie) process that looks like an aisync node."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True  # no /proc: trust kill(0)
    try:
        stat = (proc / "stat").read_text()
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return False
        return b"aisync" in (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def live_nodes(state: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not state:
        return []
    return [n for n in state.get("nodes", []) if pid_alive(n.get("pid"))]


def stop_order(nodes: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Targets first, then the other proxies, then the primary proxy (the first one)."""
    nodes = list(nodes)
    proxies = [n for n in nodes if n.get("role") == "proxy"]
    primary = proxies[:1]
    others = proxies[1:]
    targets = [n for n in nodes if n.get("role") != "proxy"]
    return [group for group in (targets, others, primary) if group]


def stop_nodes(nodes: Iterable[dict[str, Any]],
               procs: dict[int, subprocess.Popen] | None = None,
               timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM each group (see :func:`stop_order`), wait up to ``timeout`` for it, SIGKILL
    stragglers. Returns the ids that had to be killed."""
    procs = procs or {}
    killed: list[str] = []
    for group in stop_order(nodes):
        running = [n for n in group if _running(n["pid"], procs)]
        for node in running:
            _signal(node["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in running:
            if not _wait_exit(node["pid"], procs, deadline):
                _signal(node["pid"], signal.SIGKILL)
                killed.append(str(node.get("id")))
                _wait_exit(node["pid"], procs, time.monotonic() + 5)
    return killed


def _running(pid: int, procs: dict[int, subprocess.Popen]) -> bool:
    proc = procs.get(pid)
    if proc is not None:
        return proc.poll() is None
    return pid_alive(pid)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_exit(pid: int, procs: dict[int, subprocess.Popen], deadline: float) -> bool:
    proc = procs.get(pid)
    if proc is not None:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- ports and logs --------------------------------------------------------------------------


def free_ports(count: int, host: str = "127.0.0.1", exclude: Iterable[int] = ()) -> list[int]:
    """``count`` distinct ports the OS considers free right now (bind to port 0)."""
    excluded = set(exclude)
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((host, 0))
            port = s.getsockname()[1]
            if port not in excluded and port not in ports:
                ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def log_tail(path: str | os.PathLike, lines: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return "(no log)"
    text = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(text) if text else "(empty log)"
