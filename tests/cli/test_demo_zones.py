"""``aisync demo`` as a user runs it: the two-zone scenario (real node processes, two clusters)
and the single-cluster round trip, each as a subprocess. Both must leave nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@pytest.fixture
def scratch():
    """A short private TMPDIR for the demo (node sockets live under it: keep paths short)."""
    path = Path(tempfile.mkdtemp(prefix="azd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_demo(scratch: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISYNC_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["TMPDIR"] = str(scratch)
    proc = subprocess.run([sys.executable, "-m", "aisync", "demo", *args], cwd=scratch,
                          env=env, capture_output=True, text=True, timeout=300)
    # torn down: no node process still runs from the scratch dir, and its work dir is gone
    leftovers = [line for line in subprocess.run(
        ["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
        if str(scratch) in line]
    assert not leftovers, leftovers
    assert list(scratch.iterdir()) == [], list(scratch.iterdir())
    return proc


def size(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def test_two_zone_demo(scratch):
    proc = run_demo(scratch)
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    for line in ("ok     initial scheduled sync (zone-a)",
                 "ok     out-of-band change detected and synced (zone-a)",
                 "ok     cross-zone read (zone-b, peers=zone-a)",
                 "ok     checkpoint written in zone-a found in zone-b",
                 "demo passed: 4/4 checks"):
        assert line in out, out
    assert "304 objects added" in out
    assert "in the source: 3 rewritten (same size, temp+rename), 5 added, 4 deleted" in out
    assert re.search(r"report: 5 added, 3 updated, 4 deleted, 0 failed", out), out
    assert "305/305 objects identical to the source" in out
    peer = re.search(r"bytes from peer \(zone-a\) ([\d.]+ \w+), from source ([\d.]+ \w+)", out)
    assert peer and size(peer.group(1)) > 0, out
    assert "step-100.pt (8.0 MiB): in zone-b" in out and "bytes equal" in out
    fresh = {tuple(line.split()[:2]): line for line in out.splitlines()
             if line.startswith(("zone-a  ", "zone-b  ")) and "://" in line.split()[1]}
    assert "in sync with the source as of" in fresh[("zone-a", "fs://datasets")], out
    assert "synced from ais://@zone-a/checkpoints" in fresh[("zone-b", "ais://checkpoints")]


def test_single_cluster_demo(scratch):
    proc = run_demo(scratch, "--single-cluster", "--files", "20", "--shards", "1",
                    "--shard-mib", "1", "--no-progress")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "read back + verify  21/21 identical" in proc.stdout
    assert "demo passed: every object round-tripped byte for byte" in proc.stdout


def test_two_zone_demo_refuses_too_few_files(scratch):
    proc = run_demo(scratch, "--files", "3")
    assert proc.returncode == 2 and "--files 10 or more" in proc.stderr, proc.stderr
