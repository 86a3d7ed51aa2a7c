"""The issue's user story, command by command, as a user types it (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import xxhash

from tests.harness import http_json


def aisync(*args: str, env: dict, cwd, check: bool = True, stdin: bytes | None = None):
    proc = subprocess.run([sys.executable, "-m", "aisync", *args], env=env, cwd=cwd,
                          capture_output=True, input=stdin, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"aisync {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout.decode()}\n{proc.stderr.decode()}")
    return proc


@pytest.fixture
def env(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AISYNC_")}
    environ["AISYNC_CLUSTER_DIR"] = str(tmp_path / "cluster")
    yield environ
    subprocess.run([sys.executable, "-m", "aisync", "cluster", "down", "--purge"], env=environ,
                   cwd=tmp_path, capture_output=True, timeout=60)


def test_user_story(tmp_path, env):
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    files = {f"{i:04d}.jpg": os.urandom(1000 + 997 * i) for i in range(1, 25)}
    files["nested/big.bin"] = os.urandom(2_500_000)
    for rel, data in files.items():
        (images / rel).write_bytes(data)

    up = aisync("cluster", "up", "--targets", "3", "--port", "0", "--detach", env=env,
                cwd=tmp_path)
    endpoint = up.stdout.decode().strip()
    assert endpoint.startswith("http://127.0.0.1:")
    # the admin token: kept in the cluster dir for this user alone (the token, nothing else),
    # never printed, and the only way in; the commands below find it there by themselves
    token_file = tmp_path / "cluster" / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert token and token_file.read_text() in (token, token + "\n")
    assert token.encode() not in up.stdout + up.stderr
    assert b"admin-token" in up.stdout + up.stderr  # says where it is
    assert http_json(f"{endpoint}/v1/buckets", token=None)[0] == 401
    status, before = http_json(f"{endpoint}/v1/buckets", token=token)
    assert status == 200 and before["buckets"] == []
    wrong = aisync("--token", token + "x", "bucket", "create", "ais://train", env=env,
                   cwd=tmp_path, check=False)
    assert wrong.returncode == 1 and b"error:" in wrong.stderr and b"token" in wrong.stderr
    assert http_json(f"{endpoint}/v1/buckets", token=token) == (200, before)
    aisync("bucket", "create", "ais://train", env=env, cwd=tmp_path)
    put = aisync("object", "put", "./images", "ais://train/images/", "--recursive", env=env,
                 cwd=tmp_path)
    assert b"25 file(s)" in put.stdout

    ls = aisync("object", "ls", "ais://train", "--prefix", "images/", "--json", env=env,
                cwd=tmp_path)
    listed = [e["name"] for e in json.loads(ls.stdout)]  # streamed, but one JSON array
    assert sorted(listed) == sorted(f"images/{rel}" for rel in files)

    aisync("object", "get", "ais://train/images/0001.jpg", "-o", "x.jpg", env=env, cwd=tmp_path)
    assert (tmp_path / "x.jpg").read_bytes() == files["0001.jpg"]
    out = aisync("object", "get", "ais://train/images/nested/big.bin", "-o", "-", env=env,
                 cwd=tmp_path)
    assert xxhash.xxh3_64_hexdigest(out.stdout) == xxhash.xxh3_64_hexdigest(
        files["nested/big.bin"])

    status = aisync("cluster", "status", "--json", env=env, cwd=tmp_path)
    doc = json.loads(status.stdout)
    assert doc["primary"] == "proxy-0"
    targets = [n for n in doc["nodes"] if n["role"] == "target"]
    assert len(targets) == 3 and all(n["state"] == "active" for n in targets)
    assert sum(n["objects"] for n in targets) == len(files)
    human = aisync("cluster", "status", env=env, cwd=tmp_path).stdout.decode()
    assert "target-2" in human and "primary" in human.lower()

    missing = aisync("object", "get", "ais://train/nope", "-o", "y", env=env, cwd=tmp_path,
                     check=False)
    assert missing.returncode == 1 and b"error:" in missing.stderr
    assert not (tmp_path / "y").exists()

    down = aisync("cluster", "down", env=env, cwd=tmp_path)
    assert b"stopped 4" in down.stdout
    again = aisync("cluster", "status", env=env, cwd=tmp_path, check=False)
    assert again.returncode != 0
