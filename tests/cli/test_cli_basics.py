"""CLI tests that need no cluster: help, argument errors, node config, cluster-dir state."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import aisync
from aisync import __version__
from aisync.cli.cluster import child_env, plan_cluster, write_configs
from aisync.cli.main import cli
from aisync.cli.state import (
    free_ports,
    pid_alive,
    port_in_use,
    read_state,
    stop_order,
    write_state,
)
from aisync.config import load_node_config
from tests.harness import REPO, free_port, http_json, wait_for

COMMANDS = [
    [], ["node"], ["cluster"], ["cluster", "up"], ["cluster", "down"], ["cluster", "status"],
    ["bucket"], ["bucket", "create"], ["bucket", "ls"], ["bucket", "show"], ["bucket", "rm"],
    ["object"], ["object", "put"], ["object", "get"], ["object", "ls"], ["object", "head"],
    ["object", "rm"],
]


@pytest.fixture
def runner(tmp_path, monkeypatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AISYNC_ENDPOINT", raising=False)
    monkeypatch.setenv("AISYNC_CLUSTER_DIR", str(tmp_path / "cluster"))
    return CliRunner()


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "root")
def test_every_command_has_teaching_help(runner, args):
    result = runner.invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    match = re.search(r"Examples?:", result.output)
    assert match, result.output
    assert "aisync " in result.output[match.end():]


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("args", [
    ["object", "get", "ais://bad..bucket/x"],
    ["object", "head", "ais://train"],          # no object name
    ["object", "ls", "nosuch://b"],              # unknown provider
    ["bucket", "create", "ais://train/obj"],     # object URI where a bucket is expected
    ["object", "get", "ais://b/x", "--range", "9-1"],
])
def test_bad_uri_or_argument_is_an_error_line(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "error: " in result.stderr
    assert "Traceback" not in result.output


def test_usage_error_is_exit_2(runner):
    result = runner.invoke(cli, ["object", "get"])
    assert result.exit_code == 2
    assert "Missing argument" in result.output


def test_unreachable_endpoint_is_clean_error(runner):
    port = free_ports(1)[0]
    result = runner.invoke(cli, ["--endpoint", f"http://127.0.0.1:{port}", "bucket", "ls"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach http://127.0.0.1:")
    assert "Traceback" not in result.output


def test_missing_local_file_is_clean_error(runner, tmp_path):
    port = free_ports(1)[0]
    result = runner.invoke(cli, ["--endpoint", f"http://127.0.0.1:{port}", "object", "put",
                                 str(tmp_path / "nope.bin"), "ais://b/"])
    assert result.exit_code == 1
    assert "error: " in result.stderr and "nope.bin" in result.stderr
    assert "Traceback" not in result.output


def test_cluster_down_without_cluster(runner, tmp_path):
    result = runner.invoke(cli, ["cluster", "down"])
    assert result.exit_code == 0
    assert "no cluster running" in result.output
    result = runner.invoke(cli, ["cluster", "down", "--dir", str(tmp_path / "other"), "--purge"])
    assert result.exit_code == 0
    assert "no cluster running" in result.output


def test_node_config_error_exits_2(runner, tmp_path):
    result = runner.invoke(cli, ["node", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot read config file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: storage\n")
    result = runner.invoke(cli, ["node", "--config", str(bad)])
    assert result.exit_code == 2
    assert "role" in result.stderr and "Traceback" not in result.output


def test_node_runs_with_flag_overrides_and_exits_0_on_sigterm(tmp_path):
    """``aisync node`` as operators run it: file settings, then flags on top; SIGTERM stops it."""
    port, file_port = free_port(), free_port()
    cfg_file = tmp_path / "n.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "role": "target", "port": file_port, "host": "127.0.0.1",
        "data_dir": str(tmp_path / "file-data"), "cluster": {"name": "zone-b"},
        "logging": {"format": "json"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISYNC_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["AISYNC_ENDPOINT"] = "http://127.0.0.1:1"  # CLI-only: must not break node config
    # the credentials as operators hand them to a node: environment overrides, not the file
    token, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    env["AISYNC_AUTH__ADMIN_TOKEN"] = token
    env["AISYNC_AUTH__CLUSTER_SECRET"] = secret
    log = tmp_path / "node.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aisync", "node", "--config", str(cfg_file),
             "--role", "proxy", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            start_new_session=True)
    try:
        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"node exited with {proc.returncode}:\n{log.read_text()}")
            return http_json(f"{url}/v1/health", timeout=1)[0] == 200

        wait_for(serving, 60, "the node to serve /v1/health")
        status, health = http_json(f"{url}/v1/health")
        assert status == 200
        assert (health["status"], health["role"], health["cluster"]) == ("ok", "proxy", "zone-b")
        assert http_json(f"{url}/v1/health/ready")[0] == 503  # a proxy without targets
        # the token from the environment is the one the node wants
        assert http_json(f"{url}/v1/cluster/map", token=token)[0] == 200
        assert http_json(f"{url}/v1/cluster/map", token=None)[0] == 401
        assert http_json(f"{url}/v1/cluster/map", token=token + "x")[0] == 401
        assert not port_in_use(file_port)  # --port won over the file's port
        assert (tmp_path / "data").is_dir() and not (tmp_path / "file-data").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        text = log.read_text()
        assert "Traceback" not in text and token not in text and secret not in text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.parametrize("missing", ["AISYNC_AUTH__ADMIN_TOKEN", "AISYNC_AUTH__CLUSTER_SECRET"])
def test_node_without_credentials_refuses_to_start(tmp_path, missing):
    """Auth is on by default: a node given no token (or no cluster secret) exits 2 with a
    message naming the setting, instead of serving an open cluster."""
    cfg_file = tmp_path / "n.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "role": "proxy", "port": 0, "host": "127.0.0.1", "data_dir": str(tmp_path / "data"),
        "logging": {"format": "json"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISYNC_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["AISYNC_AUTH__ADMIN_TOKEN"] = secrets.token_urlsafe(24)
    env["AISYNC_AUTH__CLUSTER_SECRET"] = secrets.token_urlsafe(32)
    del env[missing]
    proc = subprocess.run([sys.executable, "-m", "aisync", "node", "--config", str(cfg_file)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    setting = missing.removeprefix("AISYNC_AUTH__").lower()
    assert f"auth.{setting}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_plan_cluster_writes_loadable_configs(tmp_path):
    ports = free_ports(4)
    plans = plan_cluster(tmp_path / "c", targets=3, proxies=1, mountpaths=2, ports=ports)
    write_configs(plans)
    assert [p.id for p in plans] == ["proxy-0", "target-0", "target-1", "target-2"]
    primary = f"http://127.0.0.1:{ports[0]}"
    for plan, port in zip(plans, ports, strict=True):
        cfg = load_node_config(plan.config_path, environ={})
        assert (cfg.role, cfg.node_id, cfg.host, cfg.port) == (plan.role, plan.id,
                                                               "127.0.0.1", port)
        assert cfg.logging.format == "json" and cfg.cluster.name == "zone-a"
        assert Path(cfg.data_dir) == plan.dir
        if plan.id == "proxy-0":
            assert cfg.cluster.primary_url is None
        else:
            assert cfg.cluster.primary_url == primary
        if plan.role == "target":
            assert [Path(m) for m in cfg.storage.mountpaths] == [plan.dir / "mp0",
                                                                 plan.dir / "mp1"]
            assert all(Path(m).is_dir() for m in cfg.storage.mountpaths)
    # one token and one cluster secret for every node, kept beside the nodes (mode 0600, the
    # value alone), and only this user may read the configs that hold them
    cluster_dir = tmp_path / "c"
    token = only_value(cluster_dir / "admin-token")
    secret = only_value(cluster_dir / "cluster-secret")
    assert len(token) >= 32 and len(secret) >= 32 and token != secret
    for plan in plans:
        cfg = load_node_config(plan.config_path, environ={})
        assert cfg.auth.enabled
        assert cfg.auth.admin_token.get_secret_value() == token
        assert cfg.auth.cluster_secret.get_secret_value() == secret
        assert plan.config_path.stat().st_mode & 0o777 == 0o600
    # planned again (a restart): the same credentials
    again = plan_cluster(cluster_dir, targets=3, proxies=1, mountpaths=2, ports=ports)
    assert {p.config["auth"]["admin_token"] for p in again} == {token}
    assert {p.config["auth"]["cluster_secret"] for p in again} == {secret}


def only_value(path: Path) -> str:
    """The one value a credentials file holds; the file is this user's alone."""
    assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and lines[0] == lines[0].strip() and lines[0], lines
    return lines[0]


def test_child_env_drops_cli_and_identity_vars(monkeypatch):
    monkeypatch.setenv("AISYNC_ENDPOINT", "http://x:1")
    monkeypatch.setenv("AISYNC_PORT", "9")
    monkeypatch.setenv("AISYNC_KEEPALIVE__INTERVAL", "1s")
    env = child_env()
    assert "AISYNC_ENDPOINT" not in env and "AISYNC_PORT" not in env
    assert env["AISYNC_KEEPALIVE__INTERVAL"] == "1s"
    package_root = Path(aisync.__file__).resolve().parent.parent
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(package_root)


def test_state_file_roundtrip_and_stop_order(tmp_path):
    doc = {"endpoint": "http://127.0.0.1:1", "nodes": [
        {"id": "proxy-0", "role": "proxy", "pid": 1}, {"id": "proxy-1", "role": "proxy"},
        {"id": "target-0", "role": "target"}, {"id": "target-1", "role": "target"}]}
    write_state(tmp_path, doc)
    assert read_state(tmp_path) == doc
    assert [n.startswith(".") for n in (p.name for p in tmp_path.iterdir())] == [False]
    groups = stop_order(doc["nodes"])
    assert [[n["id"] for n in g] for g in groups] == [
        ["target-0", "target-1"], ["proxy-1"], ["proxy-0"]]
    (tmp_path / "cluster.json").write_text("{not json")
    runner = CliRunner()
    result = runner.invoke(cli, ["cluster", "down", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "not valid JSON" in result.stderr


def test_port_checks():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert port_in_use(busy)
        ports = free_ports(5, exclude=[busy])
        assert len(set(ports)) == 5 and busy not in ports


def test_stale_state_is_cleared_and_live_cluster_is_refused_then_stopped(runner, tmp_path):
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    # a stand-in "node": a process whose command line says aisync, blocked on stdin
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                             "aisync-node-standin"], stdin=subprocess.PIPE)
    try:
        assert pid_alive(proc.pid)
        write_state(cluster_dir, {"endpoint": "http://127.0.0.1:1", "nodes": [
            {"id": "target-0", "role": "target", "url": "http://127.0.0.1:1", "pid": proc.pid},
            {"id": "proxy-0", "role": "proxy", "url": "http://127.0.0.1:1", "pid": 0}]})
        result = runner.invoke(cli, ["cluster", "up", "--port", "0"])
        assert result.exit_code == 1
        assert "already running" in result.stderr and "cluster down" in result.stderr
        result = runner.invoke(cli, ["cluster", "down"])
        assert result.exit_code == 0, result.output
        assert "stopped 1 node(s)" in result.output
        assert proc.wait(timeout=10) == -15  # SIGTERM
        assert read_state(cluster_dir) is None
        # a state file whose pids are gone is cleared without signalling anything
        write_state(cluster_dir, {"endpoint": "x", "nodes": [
            {"id": "target-0", "role": "target", "pid": proc.pid}]})
        assert not pid_alive(proc.pid)
        result = runner.invoke(cli, ["cluster", "down"])
        assert result.exit_code == 0 and "cleared its state" in result.output
        assert not (cluster_dir / "cluster.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_recorded_endpoint_is_the_default(runner, tmp_path):
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    port = free_ports(1)[0]
    (cluster_dir / "cluster.json").write_text(json.dumps(
        {"endpoint": f"http://127.0.0.1:{port}", "nodes": []}))
    result = runner.invoke(cli, ["bucket", "ls"])
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.stderr
    result = runner.invoke(cli, ["--endpoint", "http://127.0.0.1:1", "bucket", "ls"])
    assert "127.0.0.1:1" in result.stderr and f":{port}" not in result.stderr


def test_invalid_endpoint_is_usage_error(runner):
    result = runner.invoke(cli, ["--endpoint", "ftp://host:1", "bucket", "ls"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid endpoint")
