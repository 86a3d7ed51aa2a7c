"""Deletes fail closed when an ``fs://`` source cannot be read: a directory the node may not
read fails the listing (naming it), so ``sync --delete`` deletes nothing and the job fails.

The nodes run as root here and in CI, and root reads a directory of mode 000 anyway: the
cluster's node processes run without the capabilities that bypass file permissions
(``setpriv``, else ``capsh``). A probe checks that such a process really is refused; the module
is skipped only when neither tool can make one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aisync.client import Client
from tests.harness import LocalCluster, http_json, new_fs_bucket, run_job

PROBE = "import os, sys; os.listdir(sys.argv[1])"


def _prefixes() -> list[list[str]]:
    """Command prefixes that may run a process without permission-bypassing capabilities."""
    found = [] if os.geteuid() == 0 else [[]]
    if shutil.which("setpriv"):
        found.append(["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"])
    if shutil.which("capsh"):
        found.append(["capsh", "--drop=cap_dac_override,cap_dac_read_search,cap_fowner", "--",
                      "-c", 'exec "$0" "$@"'])
    return found


def unprivileged_prefix(scratch: Path) -> list[str]:
    """The first prefix under which Python runs but cannot list a directory of mode 000."""
    closed = scratch / "closed"
    closed.mkdir()
    closed.chmod(0)
    try:
        for prefix in _prefixes():
            runs = subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True,
                                  timeout=60)
            refused = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(closed)],
                                     capture_output=True, text=True, timeout=60)
            if runs.returncode == 0 and "PermissionError" in refused.stderr:
                return prefix
    finally:
        closed.chmod(0o700)
    pytest.skip("cannot start a process that file permissions apply to (no setpriv or capsh, "
                "or not allowed to drop capabilities)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    prefix = unprivileged_prefix(tmp_path_factory.mktemp("probe"))
    with LocalCluster(targets=2, command_prefix=prefix) as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster.endpoint) as c:
        yield c


@pytest.fixture
def source(client, tmp_path):
    """An fs:// bucket on a fresh directory: (uri, directory)."""
    return new_fs_bucket(client, tmp_path)


def write(root: Path, name: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(name.encode())


def cached(client, uri: str) -> set[str]:
    return {o.name for o in client.iter_objects(uri, cached=True)}


class closed:
    """``with closed(path):`` the directory has mode 000 inside the block."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.path.chmod(0)

    def __exit__(self, *exc: object) -> None:
        self.path.chmod(0o755)


def test_an_unreadable_subdirectory_fails_the_listing_and_deletes_nothing(
        cluster, client, source):
    uri, share = source
    names = {"a/0", "a/1", "z"} | {f"private/{i:02d}" for i in range(26)}
    for name in names:
        write(share, name)
    assert run_job(cluster, kind="prefetch", bucket=uri)["progress"]["added"] == len(names)

    with closed(share / "private"):
        job = run_job(cluster, kind="sync", bucket=uri, delete=True)
        bucket = uri.removeprefix("fs://")
        status, body = http_json(f"{cluster.endpoint}/v1/buckets/{bucket}?provider=fs")
    assert job["state"] == "failed", job
    assert job["progress"]["deleted"] == 0, job
    assert f"cannot read {uri}/private/: Permission denied" in job["error"], job
    assert cached(client, uri) == names
    assert status == 403 and body["code"] == "AccessDenied", body
    assert f"{uri}/private/" in body["message"], body

    # readable again: the same sync finds nothing gone
    job = run_job(cluster, kind="sync", bucket=uri, delete=True)
    assert job["state"] == "succeeded" and job["progress"]["deleted"] == 0, job
    assert cached(client, uri) == names


def test_an_unreadable_bucket_directory_deletes_nothing_below_the_shrink_guard(
        cluster, client, source):
    uri, share = source
    names = {f"k{i}" for i in range(9)}  # too few for the shrink guard, which starts at 10
    for name in names:
        write(share, name)
    assert run_job(cluster, kind="prefetch", bucket=uri)["progress"]["added"] == 9

    with closed(share):
        job = run_job(cluster, kind="sync", bucket=uri, delete=True)
    assert job["state"] == "failed" and job["progress"]["deleted"] == 0, job
    assert f"cannot read {uri}/: Permission denied" in job["error"], job
    assert cached(client, uri) == names
