"""``aisync cluster up|down|status``: a whole cluster on this machine, and its status."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

import aisync
from aisync.cli.common import (
    CliError,
    UsageFailure,
    echo_json,
    human_bytes,
    print_table,
    run,
    state_of,
)
from aisync.cli.state import (
    free_ports,
    live_nodes,
    log_tail,
    port_in_use,
    read_state,
    remove_state,
    resolve_dir,
    stop_nodes,
    write_state,
)
from aisync.client import AsyncClient
from aisync.client.aio import TOKEN_FILE
from aisync.util.errors import AisyncError

HOST = "127.0.0.1"
CLUSTER_NAME = "zone-a"
#: Beside ``admin-token`` in the cluster dir: the secret the nodes sign each other's requests with.
SECRET_FILE = "cluster-secret"
POLL_INTERVAL = 0.1
#: Environment variables that belong to the CLI or to one node's identity: never handed to
#: the nodes of a local cluster (each gets its identity from its own node.yaml).
_CHILD_ENV_DROP = {
    "AISYNC_ENDPOINT", "AISYNC_CLUSTER_DIR", "AISYNC_CONFIG", "AISYNC_ROLE", "AISYNC_NODE_ID",
    "AISYNC_TOKEN", "AISYNC_AUTH__ADMIN_TOKEN", "AISYNC_AUTH__CLUSTER_SECRET",
    "AISYNC_HOST", "AISYNC_PORT", "AISYNC_PUBLIC_URL", "AISYNC_DATA_DIR",
    "AISYNC_CLUSTER__PRIMARY_URL", "AISYNC_STORAGE__MOUNTPATHS",
}

DIR_HELP = "Cluster directory (default: $AISYNC_CLUSTER_DIR or ./.aisync-cluster)."


@dataclass
class NodePlan:
    id: str
    role: str
    port: int
    dir: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.dir / "node.yaml"

    @property
    def log_path(self) -> Path:
        return self.dir / "node.log"


def cluster_credentials(cluster_dir: Path) -> tuple[str, str]:
    """``(admin token, cluster secret)`` of the cluster in ``cluster_dir``: made at its first
    ``cluster up`` and kept (mode 0600) in ``admin-token`` and ``cluster-secret``, so restarts
    keep them and clients find the token there."""
    values = []
    for filename in (TOKEN_FILE, SECRET_FILE):
        path = cluster_dir / filename
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            value = ""
        if not value:
            value = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(value + "\n")
        values.append(value)
    return values[0], values[1]


def plan_cluster(cluster_dir: Path, *, targets: int, proxies: int, mountpaths: int,
                 ports: list[int], name: str = CLUSTER_NAME,
                 s3_port: int | None = None, fs_roots: tuple[str, ...] = (),
                 remotes: dict[str, dict[str, Any]] | None = None) -> list[NodePlan]:
    """The nodes of a local cluster and each one's node.yaml content (first proxy = primary).
    ``fs_roots`` become fs profiles ``fs-0``, ``fs-1``...; ``remotes`` the remote profiles."""
    cluster_dir = cluster_dir.resolve()
    cluster_dir.mkdir(parents=True, exist_ok=True)
    token, secret = cluster_credentials(cluster_dir)
    ids = [f"proxy-{i}" for i in range(proxies)] + [f"target-{i}" for i in range(targets)]
    if len(ports) != len(ids):
        raise ValueError("one port per node")
    plans = [NodePlan(id=node_id, role=node_id.split("-")[0], port=port,
                      dir=cluster_dir / node_id) for node_id, port in zip(ids, ports, strict=True)]
    primary_url = plans[0].url
    for i, plan in enumerate(plans):
        cfg: dict[str, Any] = {
            "role": plan.role,
            "node_id": plan.id,
            "host": HOST,
            "port": plan.port,
            "data_dir": str(plan.dir),
            "cluster": {"name": name},
            "logging": {"format": "json"},
            "auth": {"admin_token": token, "cluster_secret": secret},
        }
        if fs_roots:
            cfg["backends"] = {f"fs-{n}": {"provider": "fs", "root": str(Path(r).resolve())}
                               for n, r in enumerate(fs_roots)}
        if remotes:
            cfg["remotes"] = remotes
        if i > 0:
            cfg["cluster"]["primary_url"] = primary_url
        if plan.role == "proxy" and s3_port is not None:  # the first proxy gets the given one
            cfg["s3"] = {"port": s3_port if i == 0 else 0}
        if plan.role == "target":
            cfg["storage"] = {"mountpaths": [str(plan.dir / f"mp{m}") for m in range(mountpaths)]}
        plan.config = cfg
    return plans


def write_configs(plans: list[NodePlan]) -> None:
    for plan in plans:
        plan.dir.mkdir(parents=True, exist_ok=True)
        for mp in plan.config.get("storage", {}).get("mountpaths", []):
            Path(mp).mkdir(parents=True, exist_ok=True)
        # It holds the cluster's credentials: readable by this user only.
        fd = os.open(plan.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# written by `aisync cluster up`; rewritten on every start\n"
                      + yaml.safe_dump(plan.config, sort_keys=False))


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
    package_root = str(Path(aisync.__file__).resolve().parent.parent)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([package_root, *parts])
    return env


def spawn(plan: NodePlan, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aisync", "node", "--config", str(plan.config_path)]
    with open(plan.log_path, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                cwd=str(plan.dir))


def _remote_profiles(specs: tuple[str, ...],
                     token_files: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--remote ALIAS=URL,...`` and ``--remote-token-file ALIAS=FILE`` as remote profiles."""
    remotes: dict[str, dict[str, Any]] = {}
    for spec in specs:
        alias, sep, urls = spec.partition("=")
        if not alias or not sep or not urls:
            raise UsageFailure(f"--remote: expected ALIAS=URL[,URL...], got {spec!r}")
        remotes[alias] = {"urls": [u.rstrip("/") for u in urls.split(",") if u]}
    for spec in token_files:
        alias, sep, path = spec.partition("=")
        if alias not in remotes or not sep or not path:
            raise UsageFailure(f"--remote-token-file: expected ALIAS=FILE for an alias given "
                               f"with --remote, got {spec!r}")
        try:
            remotes[alias]["token"] = Path(path).read_text().strip()
        except OSError as exc:
            raise UsageFailure(f"--remote-token-file {alias}: cannot read {path}: "
                               f"{exc.strerror}") from None
    return remotes


def _token(plan: NodePlan) -> str:
    return plan.config["auth"]["admin_token"]


def _s3_url(endpoint: str, token: str) -> str:
    """Where the primary proxy serves S3: its dedicated port, else the endpoint's root."""
    request = urllib.request.Request(f"{endpoint}/v1/node/status",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read()).get("s3_url") or endpoint
    except (OSError, ValueError):
        return endpoint


class StartupFailed(Exception):
    pass


class _Terminated(Exception):
    pass


def _state_doc(cluster_dir: Path, plans: list[NodePlan], procs: dict[str, subprocess.Popen],
               status: str) -> dict[str, Any]:
    return {
        "endpoint": plans[0].url,
        "dir": str(cluster_dir.resolve()),
        "status": status,
        "nodes": [{"id": p.id, "role": p.role, "url": p.url, "pid": procs[p.id].pid,
                   "log": str(p.log_path)} for p in plans if p.id in procs],
    }


def _check_exited(plans: list[NodePlan], procs: dict[str, subprocess.Popen]) -> None:
    for plan in plans:
        proc = procs.get(plan.id)
        if proc is not None and proc.poll() is not None:
            raise StartupFailed(
                f"node {plan.id} exited with code {proc.returncode} during startup; "
                f"last lines of {plan.log_path}:\n{log_tail(plan.log_path)}"
            )


async def _wait_primary(plan: NodePlan, plans: list[NodePlan],
                        procs: dict[str, subprocess.Popen], deadline: float) -> None:
    async with AsyncClient(plan.url, timeout=2) as client:
        while True:
            _check_exited(plans, procs)
            try:
                await client.health()
                return
            except AisyncError:
                pass
            if time.monotonic() >= deadline:
                raise StartupFailed(f"the primary proxy {plan.id} did not answer /v1/health "
                                    f"at {plan.url} in time; log: {plan.log_path}")
            await asyncio.sleep(POLL_INTERVAL)


def _active_targets(cluster_map: dict[str, Any], plans: list[NodePlan]) -> set[str]:
    nodes = cluster_map.get("nodes") or {}
    entries = nodes.values() if isinstance(nodes, dict) else nodes
    by_url = {p.url: p.id for p in plans}
    active: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("state") != "active":
            continue
        node_id = entry.get("id")
        if node_id not in {p.id for p in plans}:
            node_id = by_url.get(str(entry.get("url", "")).rstrip("/"))
        if node_id:
            active.add(node_id)
    return active


async def _wait_ready(plans: list[NodePlan], procs: dict[str, subprocess.Popen],
                      deadline: float) -> None:
    targets = [p for p in plans if p.role == "target"]
    proxies = [p for p in plans if p.role == "proxy"]
    clients = {p.id: AsyncClient(p.url, timeout=2, token=_token(p)) for p in proxies}
    missing: list[str] = []
    try:
        while True:
            _check_exited(plans, procs)
            missing = []
            try:
                active = _active_targets(await clients[proxies[0].id].cluster_map(), plans)
                missing += [f"{t.id} (not active in the cluster map)" for t in targets
                            if t.id not in active]
            except AisyncError as exc:
                missing.append(f"cluster map ({exc.message})")
            for proxy in proxies:
                try:
                    if not await clients[proxy.id].ready():
                        missing.append(f"{proxy.id} (not ready)")
                except AisyncError as exc:
                    missing.append(f"{proxy.id} ({exc.message})")
            if not missing:
                return
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        for client in clients.values():
            await client.close()
    tails = "\n".join(f"--- {p.id}: {p.log_path}\n{log_tail(p.log_path, 10)}" for p in plans
                      if any(m.startswith(p.id) for m in missing))
    raise StartupFailed("timed out waiting for: " + ", ".join(missing)
                        + (f"\n{tails}" if tails else ""))


@click.group()
def cluster() -> None:
    """Run a local cluster (up/down) and show cluster status.

    \b
    Example:
      aisync cluster up --targets 3 --detach
      aisync cluster status
      aisync cluster down
    """


@cluster.command()
@click.option("--targets", default=3, show_default=True, type=click.IntRange(1, 256),
              help="Number of target (storage) nodes.")
@click.option("--proxies", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Number of proxies (gateways); the first one is the primary.")
@click.option("--mountpaths", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Mountpaths (directories standing in for disks) per target.")
@click.option("--port", default=51080, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the primary proxy (the endpoint); 0 picks a free one. "
                   "Other nodes always get free ports.")
@click.option("--dir", "dir_", type=click.Path(file_okay=False), help=DIR_HELP)
@click.option("--detach/--foreground", default=False,
              help="Return once the cluster is ready (stop it with `cluster down`), or keep "
                   "running until Ctrl-C (default).")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(1),
              help="Seconds to wait for every node to be ready.")
@click.option("--name", default=CLUSTER_NAME, show_default=True,
              help="Cluster name (a zone); give each cluster on one machine its own --dir.")
@click.option("--s3-port", type=click.IntRange(0, 65535), default=None,
              help="Also serve the S3 API on a dedicated port of each proxy (0: a free one). "
                   "S3 is always served at the root of the endpoint as well.")
@click.option("--fs-root", "fs_roots", multiple=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False),
              help="A directory under which fs:// buckets may live (repeatable); none: no "
                   "fs:// buckets.")
@click.option("--remote", "remote_specs", multiple=True, metavar="ALIAS=URL[,URL...]",
              help="A peer cluster the nodes may attach (repeatable); its token with "
                   "--remote-token-file.")
@click.option("--remote-token-file", "remote_tokens", multiple=True, metavar="ALIAS=FILE",
              help="The file holding a --remote peer's admin token (its <dir>/admin-token).")
def up(targets: int, proxies: int, mountpaths: int, port: int, dir_: str | None,
       detach: bool, timeout: float, name: str, s3_port: int | None,
       fs_roots: tuple[str, ...], remote_specs: tuple[str, ...],
       remote_tokens: tuple[str, ...]) -> None:
    """Start a local cluster: proxies and targets as processes on 127.0.0.1.

    Writes DIR/<node>/node.yaml and DIR/<node>/node.log for each node and records the cluster
    in DIR/cluster.json. With --detach, prints only the endpoint on stdout.

    \b
    Example:
      aisync cluster up --targets 3 --mountpaths 2 --detach
    """
    cluster_dir = resolve_dir(dir_)
    remotes = _remote_profiles(remote_specs, remote_tokens)
    running = live_nodes(read_state(cluster_dir))
    if running:
        raise CliError(f"a cluster is already running from {cluster_dir} "
                       f"({len(running)} live node(s)); run `aisync cluster down"
                       f"{'' if dir_ is None else ' --dir ' + str(dir_)}` first")
    count = targets + proxies
    if port == 0:
        ports = free_ports(count, HOST)
    else:
        if port_in_use(port, HOST):
            raise CliError(f"port {port} is already in use; choose another with --port, or "
                           "--port 0 for any free port")
        ports = [port, *free_ports(count - 1, HOST, exclude=[port])]
    cluster_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_cluster(cluster_dir, targets=targets, proxies=proxies, mountpaths=mountpaths,
                         ports=ports, name=name, s3_port=s3_port, fs_roots=fs_roots,
                         remotes=remotes)
    write_configs(plans)
    env = child_env()
    procs: dict[str, subprocess.Popen] = {}
    previous = _install_sigterm()
    try:
        try:
            deadline = time.monotonic() + timeout
            procs[plans[0].id] = spawn(plans[0], env)
            write_state(cluster_dir, _state_doc(cluster_dir, plans, procs, "starting"))
            run(_wait_primary(plans[0], plans, procs, deadline))
            for plan in plans[1:]:
                procs[plan.id] = spawn(plan, env)
            write_state(cluster_dir, _state_doc(cluster_dir, plans, procs, "starting"))
            run(_wait_ready(plans, procs, deadline))
            write_state(cluster_dir, _state_doc(cluster_dir, plans, procs, "running"))
        except (StartupFailed, KeyboardInterrupt, _Terminated) as exc:
            _shutdown(cluster_dir, plans, procs)
            if isinstance(exc, StartupFailed):
                raise CliError(f"cluster up failed: {exc}") from None
            raise CliError("interrupted; the cluster was stopped", exit_code=130) from None
        endpoint = plans[0].url
        click.echo(f"cluster {name} is up: {proxies} prox{'y' if proxies == 1 else 'ies'}"
                   f", {targets} target(s); dir {cluster_dir}", err=True)
        click.echo(f"S3 API at {_s3_url(endpoint, _token(plans[0]))} (path-style; make "
                   f"credentials with `aisync auth key create`)", err=True)
        click.echo(f"admin token in {cluster_dir / TOKEN_FILE} (the CLI and SDK read it there "
                   f"or from $AISYNC_TOKEN)", err=True)
        if detach:
            click.echo(endpoint)
            return
        click.echo(endpoint)
        click.echo("running in the foreground; press Ctrl-C to stop", err=True)
        _foreground(plans, procs)
        _shutdown(cluster_dir, plans, procs)
        click.echo("cluster stopped", err=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _install_sigterm() -> Any:
    """SIGTERM stops the cluster like Ctrl-C does (main thread only: signals need it)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()

    return signal.signal(signal.SIGTERM, on_term)


def _foreground(plans: list[NodePlan], procs: dict[str, subprocess.Popen]) -> None:
    reported: set[str] = set()
    try:
        while True:
            for plan in plans:
                proc = procs[plan.id]
                if plan.id not in reported and proc.poll() is not None:
                    reported.add(plan.id)
                    click.echo(f"warning: node {plan.id} exited with code {proc.returncode}; "
                               f"last lines of {plan.log_path}:\n{log_tail(plan.log_path, 10)}",
                               err=True)
            if len(reported) == len(plans):
                return
            time.sleep(1.0)
    except (KeyboardInterrupt, _Terminated):
        return


def _shutdown(cluster_dir: Path, plans: list[NodePlan],
              procs: dict[str, subprocess.Popen]) -> None:
    nodes = [{"id": p.id, "role": p.role, "pid": procs[p.id].pid} for p in plans if p.id in procs]
    killed = stop_nodes(nodes, {procs[p.id].pid: procs[p.id] for p in plans if p.id in procs})
    if killed:
        click.echo(f"warning: killed {', '.join(killed)} (no exit within the grace period)",
                   err=True)
    remove_state(cluster_dir)


@cluster.command()
@click.option("--dir", "dir_", type=click.Path(file_okay=False), help=DIR_HELP)
@click.option("--purge", is_flag=True,
              help="Also delete the node directories (configs, logs and ALL stored data).")
def down(dir_: str | None, purge: bool) -> None:
    """Stop the local cluster started by `cluster up` (targets first, primary proxy last).

    Sends SIGTERM, waits up to 10 s per node, then SIGKILL. Safe to repeat.

    \b
    Example:
      aisync cluster down --purge
    """
    cluster_dir = resolve_dir(dir_)
    state = read_state(cluster_dir)
    running = live_nodes(state)
    if running:
        killed = stop_nodes(running)
        click.echo(f"stopped {len(running)} node(s) from {cluster_dir}"
                   + (f" (killed: {', '.join(killed)})" if killed else ""))
    elif state is not None:
        click.echo(f"no node of the cluster in {cluster_dir} was running; cleared its state")
    else:
        click.echo(f"no cluster running from {cluster_dir}")
    remove_state(cluster_dir)
    if purge and cluster_dir.is_dir():
        removed = 0
        for child in sorted(cluster_dir.iterdir()):
            if child.is_dir() and (child / "node.yaml").exists():
                shutil.rmtree(child)
                removed += 1
        try:
            cluster_dir.rmdir()
        except OSError:
            pass
        click.echo(f"purged {removed} node director{'y' if removed == 1 else 'ies'}")


@cluster.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status document.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the cluster's nodes, their state and disks, and the map versions.

    \b
    Example:
      aisync --endpoint http://127.0.0.1:51080 cluster status
    """
    cli = state_of(ctx)

    async def fetch() -> dict:
        async with cli.client(timeout=10) as client:
            return await client.cluster_status()

    doc = run(fetch())
    if as_json:
        echo_json(doc)
        return
    s3 = sorted({str(n["s3_url"]) for n in doc.get("nodes") or [] if n.get("s3_url")})
    click.echo(f"cluster {doc.get('cluster', '?')}  map v{doc.get('map_version', '?')}  "
               f"bucket map v{doc.get('bucket_map_version', '?')}  "
               f"primary {doc.get('primary', '?')}  endpoint {cli.endpoint}"
               + (f"  S3 API at {', '.join(s3)}" if s3 else ""))
    rows = []
    for node in doc.get("nodes") or []:
        disks = node.get("disks") or []
        if disks:
            used = sum(int(d.get("used") or 0) for d in disks)
            total = sum(int(d.get("total") or 0) for d in disks)
            disk = f"{human_bytes(used)}/{human_bytes(total)}"
        else:
            disk = "-"
        objects = node.get("objects")
        rows.append([
            str(node.get("id", "?")), str(node.get("role", "?")),
            str(node.get("state", "?")),
            "*" if node.get("primary") or node.get("id") == doc.get("primary") else "",
            str(node.get("url", "")), str(node.get("map_version", "-")), disk,
            "-" if objects is None else str(objects),
        ])
    print_table(rows, ["ID", "ROLE", "STATE", "PRIMARY", "URL", "MAP", "DISK USED/TOTAL",
                       "OBJECTS"])

