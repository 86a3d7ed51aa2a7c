"""What the real-client tests share: the test tree, data and ETag helpers, a clean environment
for client subprocesses, and the ``unique`` bucket-name fixture (see ``test_clients.py``)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest

MiB = 1 << 20
#: Larger than every client's multipart threshold as configured here (5 MiB parts).
BIG = 12_000_000
PART = 5 * MiB
TIMEOUT = 180

#: A tree with nesting, an empty file and names that every client encodes (and signs) its own
#: way: space, '+', '%', reserved and sub-delimiter characters, non-ASCII.
ODD = "c/odd %41;=&@$,!'()~[x]{y}^#.txt"
TREE = {
    "top.txt": 1000,
    "a/one.bin": 70_000,
    "a/b/deep.dat": 3000,
    "c/sp ace+plus.txt": 500,
    "c/uni-\u00e9t\u00e9.txt": 800,
    "c/empty": 0,
    ODD: 321,
}


# -- helpers ----------------------------------------------------------------------------------

def need(what: str, found) -> None:
    """Skip when a client is missing on a developer's machine; fail in CI."""
    if found:
        return
    reason = f"{what} is not installed (bash .ci/clients.sh; pip install -e '.[dev]')"
    if os.environ.get("CI"):
        pytest.fail(f"CI must have every S3 client: {reason}")
    pytest.skip(reason)


def data(size: int, seed: int | str) -> bytes:
    return random.Random(seed).randbytes(size)


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def multipart_etag(blob: bytes, part: int = PART) -> str:
    digests = [hashlib.md5(blob[i:i + part]).digest() for i in range(0, len(blob), part)]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def make_tree(root: Path, seed: str, files: dict[str, int] = TREE) -> dict[str, bytes]:
    content = {}
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data(size, f"{seed}/{rel}"))
        content[rel] = path.read_bytes()
    return content


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def remote_tree(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix`` (names relative to it) with its bytes, through boto3."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            assert len(body) == obj["Size"], obj["Key"]
            found[obj["Key"][len(prefix):]] = body
    return found


def keys(s3, bucket: str, prefix: str = "") -> set[str]:
    return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])}


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a client process: none of the caller's AWS/rclone/s3cmd settings,
    and a HOME of its own so that nothing global is read or written."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RCLONE_", "S3CMD_"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), PYTHONIOENCODING="utf-8", LC_ALL="C.UTF-8", LANG="C.UTF-8")
    return env


def run(cmd: list[str], env: dict[str, str], *, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=env["HOME"], capture_output=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    proc.stdout = proc.stdout.decode("utf-8", "replace")
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    if check:
        assert proc.returncode == 0, (f"{cmd} exited {proc.returncode}\nstdout: "
                                      f"{proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
    return proc
