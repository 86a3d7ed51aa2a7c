"""``aisync auth key create|ls|rm`` against a real cluster (``tests/harness.py``).

One cluster (2 proxies, 1 target) serves the module; commands go to the proxy that is not the
primary, so every call is also forwarded. Commands run in-process through click's ``CliRunner``
(one test runs the installed entry point, ``python -m aisync``, as a user would); what they did
is checked with the SDK and the primary's REST API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner, Result

from aisync.cli.main import cli
from aisync.client import Client
from tests.harness import REPO, LocalCluster, free_port, member_json
from tests.harness import cli_ok as ok

COMMANDS = [["auth"], ["auth", "key"], ["auth", "key", "create"], ["auth", "key", "ls"],
            ["auth", "key", "rm"]]
GENERATED_KEY = re.compile(r"^AK[A-Z0-9]{18}$")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(targets=1, proxies=2) as c:
        yield c


@pytest.fixture(scope="module")
def endpoint(cluster) -> str:
    return cluster.proxies[1].url


@pytest.fixture(scope="module")
def sdk(cluster):
    with Client(cluster.primary.url, timeout=30) as c:
        yield c


@pytest.fixture
def invoke(cli_at, endpoint):
    return cli_at(endpoint)


def failed(r: Result, message: str) -> Result:
    assert r.exit_code == 1, f"exit {r.exit_code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "Traceback" not in r.output
    assert "error: " in r.stderr and message in r.stderr, r.stderr
    return r


def fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def secret_on_primary(cluster, access_key: str) -> tuple[int, dict]:
    """The secret as the primary tells it to a member (no client may read it)."""
    return member_json(cluster, cluster.primary.url, "GET",
                       f"/v1/auth/keys/{access_key}/secret")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_every_command_has_teaching_help(args):
    r = ok(CliRunner().invoke(cli, [*args, "--help"]))
    assert r.output.startswith("Usage: ")
    match = re.search(r"Examples?:", r.output)
    assert match and "aisync auth key" in r.output[match.end():], r.output


def test_ls_without_keys(invoke):
    """First in the module: the cluster has no key yet."""
    r = ok(invoke("auth", "key", "ls"))
    assert "no access keys" in r.stdout
    assert json.loads(ok(invoke("auth", "key", "ls", "--json")).stdout) == []


def test_create_generated_prints_both_values_once(invoke, cluster):
    r = ok(invoke("auth", "key", "create", "--description", "training jobs"))
    shown = fields(r.stdout)
    assert GENERATED_KEY.match(shown["access key"]), r.stdout
    assert len(shown["secret key"]) == 40 and shown["description"] == "training jobs"
    assert "not shown again" in r.stderr
    assert secret_on_primary(cluster, shown["access key"]) == (
        200, {"secret_key": shown["secret key"]})
    listing = ok(invoke("auth", "key", "ls")).stdout
    assert shown["access key"] in listing and "training jobs" in listing
    assert shown["secret key"] not in listing


def test_create_given_values_as_json(invoke, cluster):
    ak = unique("ci-runner")
    r = ok(invoke("auth", "key", "create", "--access-key", ak, "--secret-key", "Given-s3cret!",
                  "--json"))
    created = json.loads(r.stdout)
    assert created["access_key"] == ak and created["secret_key"] == "Given-s3cret!"
    assert set(created) == {"access_key", "secret_key", "description", "created"}
    assert secret_on_primary(cluster, ak) == (200, {"secret_key": "Given-s3cret!"})


def test_secret_from_stdin(invoke, cluster):
    ak = unique("stdin")
    r = ok(invoke("auth", "key", "create", "--access-key", ak, "--secret-key", "-",
                  input="from-stdin-secret\n"))
    assert fields(r.stdout)["secret key"] == "from-stdin-secret"
    assert secret_on_primary(cluster, ak) == (200, {"secret_key": "from-stdin-secret"})
    r = invoke("auth", "key", "create", "--access-key", unique("empty"), "--secret-key", "-",
               input="")
    assert r.exit_code == 2 and "nothing on stdin" in r.stderr, r.output


def test_create_errors(invoke):
    ak = unique("dup")
    ok(invoke("auth", "key", "create", "--access-key", ak))
    failed(invoke("auth", "key", "create", "--access-key", ak), "already exists")
    r = failed(invoke("auth", "key", "create", "--secret-key", "has spaces in it"),
               "invalid secret key")
    assert "has spaces in it" not in r.stderr
    failed(invoke("auth", "key", "create", "--access-key", "no"), "invalid access key")
    failed(invoke("auth", "key", "create", "-d", "x" * 300), "description is too long")


def test_ls_json_has_no_secrets(invoke, sdk):
    ak = unique("listed")
    created = sdk.create_access_key(ak, "listed-secret", "for ls")
    keys = json.loads(ok(invoke("auth", "key", "ls", "--json")).stdout)
    (entry,) = [k for k in keys if k["access_key"] == ak]
    assert entry == {"access_key": ak, "description": "for ls", "created": created["created"]}
    assert "listed-secret" not in json.dumps(keys)


def test_rm_several_and_unknown(invoke, sdk, cluster):
    first, second = unique("rm-a"), unique("rm-b")
    for ak in (first, second):
        sdk.create_access_key(ak)
    r = ok(invoke("auth", "key", "rm", first))
    assert r.stdout.strip() == f"removed {first}"
    assert secret_on_primary(cluster, first)[0] == 404
    r = failed(invoke("auth", "key", "rm", second, "missing-key", first), "no access key")
    assert f"removed {second}" in r.stdout
    assert "missing-key" in r.stderr and first in r.stderr and r.stderr.count("error: ") == 2
    left = {k["access_key"] for k in sdk.list_access_keys()}
    assert not {first, second} & left
    r = invoke("auth", "key", "rm")
    assert r.exit_code == 2 and "Missing argument" in r.output


def test_unreachable_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("AISYNC_CLUSTER_DIR", str(tmp_path / "none"))
    r = CliRunner().invoke(cli, ["--endpoint", f"http://127.0.0.1:{free_port()}",
                                 "auth", "key", "ls"])
    assert r.exit_code == 1 and "error: " in r.stderr and "Traceback" not in r.output


def test_the_installed_command(endpoint, cluster, tmp_path):
    """The same commands as a user runs them: a separate ``python -m aisync`` process, with the
    token in ``AISYNC_TOKEN``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISYNC_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["AISYNC_CLUSTER_DIR"] = str(tmp_path / "none")

    def aisync(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aisync", "--endpoint", endpoint, *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    proc = aisync("auth", "key", "ls")  # no token anywhere: refused, and the error says why
    assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "token" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    env["AISYNC_TOKEN"] = cluster.token
    ak = unique("proc")
    proc = aisync("auth", "key", "create", "--access-key", ak, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["access_key"] == ak
    proc = aisync("auth", "key", "ls")
    assert proc.returncode == 0 and ak in proc.stdout, proc.stderr
    proc = aisync("auth", "key", "rm", ak, ak)  # twice on one line: removed once
    assert proc.returncode == 0 and proc.stdout.strip() == f"removed {ak}", proc.stderr
    proc = aisync("auth", "key", "rm", ak)
    assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr
