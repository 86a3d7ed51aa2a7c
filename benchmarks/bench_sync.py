"""A sync job vs ``rclone sync``, from the same moto S3 source, in one run.

    python benchmarks/bench_sync.py [--initial-objects 10000] [--objects 100000]
                                    [--size-kib 64] [--json PATH]

Needs rclone on PATH (``apt-get install -y rclone``). A moto S3 server (its own process) holds
two buckets, filled with boto3 PutObject from a thread pool (the fill time is reported, and is
not part of any measurement). An aisync cluster (1 proxy + 3 targets, ``aisync cluster up``)
caches both as ``s3://src1`` and ``s3://src2`` (profile ``lab``); rclone reads them through an
S3 remote configured by ``RCLONE_CONFIG_SRC_*`` environment variables and writes to local
directories on the same disk as the cluster.

1. **initial**: ``--initial-objects`` objects of ``--size-kib`` in ``src1``, none copied yet. A
   sync job (``POST /v1/jobs {"kind": "sync", "bucket": "s3://src1"}``) into the cluster, vs
   ``rclone sync`` into an empty directory, once with rclone's defaults (``--transfers 4
   --checkers 8``) and once with ``--transfers 16 --checkers 16``; and, shown but not counted,
   with ``--use-server-modtime`` too (rclone then compares with the listing's LastModified
   instead of one HEAD per object for its mtime metadata).
2. **re-sync**: ``--objects`` objects in ``src2``. Setup (not measured): a sync job, an
   ``rclone sync`` into one directory and a copy of it (``cp -a``, mtimes kept) for the second
   rclone configuration. Then 1 % of the objects get new content of the same size (PutObject)
   and the same syncs are measured. Checked: the job reports ``updated`` == the changed count
   and no failure; rclone's files hold the new content for a sample of the changed keys. Then,
   not compared, the sync job once more with nothing changed: its listing and diff alone.

Dirty pages are flushed (``sync``) before each measured run, and the machine's busy cores during
it are recorded (other load on a shared machine shows there).

Prints scenario, tool, seconds, objects/s (objects in the bucket / seconds) and ratios: on the
aisync row the faster of the two counted rclone configurations / aisync (> 1: aisync is
faster), on each rclone row that rclone's seconds / aisync's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_cold import start_moto  # the sibling benchmark's helpers

RCLONE_CONFIGS = {  # label -> extra arguments; the ratio that counts is vs the faster of these
    "rclone (defaults: 4 transfers, 8 checkers)": [],
    "rclone (16 transfers, 16 checkers)": ["--transfers", "16", "--checkers", "16"],
}
# Shown beside them, not counted: rclone reads an S3 object's modification time from its metadata
# with one HEAD per object, unless told to take the listing's LastModified instead.
RCLONE_TUNED = {"rclone (16/16, --use-server-modtime)": [
    "--transfers", "16", "--checkers", "16", "--use-server-modtime"]}
TARGETS = {"initial": 1.5, "re-sync": 5.0}  # wanted ratio best rclone / aisync
SAMPLE = 50  # changed keys whose bytes are checked in rclone's directory


def key_of(i: int) -> str:
    return f"shard-{i // 1000:04d}/obj-{i:07d}.bin"


def body_of(base: bytes, i: int, generation: int) -> bytes:
    """Object ``i``'s bytes in ``generation``: unique per object and generation, same size."""
    head = f"{i:010d}:{generation:04d}:".encode()
    return head + base[len(head):]


def fill(s3, bucket: str, base: bytes, indices, generation: int, threads: int) -> float:
    start = time.perf_counter()

    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=key_of(i), Body=body_of(base, i, generation))

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, indices):
            pass
    return time.perf_counter() - start


def api(endpoint: str, method: str, path: str, body: dict | None = None,
        timeout: float = 90) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(endpoint + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def aisync_sync(endpoint: str, bucket: str) -> tuple[float, dict]:
    """Start a sync job of ``bucket`` and wait for it: (seconds, final job record)."""
    start = time.perf_counter()
    job = api(endpoint, "POST", "/v1/jobs", {"kind": "sync", "bucket": bucket})
    while job["state"] not in ("succeeded", "failed", "aborted"):
        job = api(endpoint, "GET", f"/v1/jobs/{job['id']}?wait=30")
    return time.perf_counter() - start, job


def check_job(job: dict, **expected: int) -> None:
    progress = job.get("progress") or {}
    wrong = {k: progress.get(k) for k, v in expected.items() if progress.get(k) != v}
    if job["state"] != "succeeded" or wrong:
        raise RuntimeError(f"sync job {job['id']} {job['state']} (error: {job.get('error')}); "
                           f"expected {expected}, got {wrong or progress}; see the node logs "
                           f"(--logs DIR keeps them)")


def rclone_sync(bucket: str, dest: Path, extra: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(["rclone", "sync", f"src:{bucket}", str(dest), *extra], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"rclone sync {bucket} failed ({proc.returncode}): "
                           f"{proc.stderr[-2000:]}")
    return elapsed


def busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy so far (Linux), to show other load."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def measured(fn, *args):
    """``fn(*args)`` after flushing dirty pages (the setup writes gigabytes); returns its result
    and the machine's busy cores while it ran (None off Linux)."""
    os.sync()
    before, start = busy_seconds(), time.perf_counter()
    result = fn(*args)
    after, elapsed = busy_seconds(), time.perf_counter() - start
    return result, (None if before is None or after is None else (after - before) / elapsed)


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def check_dir(root: Path, base: bytes, indices, generation: int) -> None:
    for i in indices:
        data = (root / key_of(i)).read_bytes()
        if data != body_of(base, i, generation):
            raise RuntimeError(f"rclone's copy of {key_of(i)} in {root.name} is not generation "
                               f"{generation}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--initial-objects", type=int, default=10_000,
                    help="objects of the initial sync (default 10000)")
    ap.add_argument("--objects", type=int, default=100_000,
                    help="objects of the re-sync, 1%% of them changed (default 100000)")
    ap.add_argument("--size-kib", type=int, default=64, help="object size (default 64 KiB)")
    ap.add_argument("--changed-percent", type=float, default=1.0)
    ap.add_argument("--fill-threads", type=int, default=16)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--logs", type=Path, help="copy the cluster's node logs here at the end")
    args = ap.parse_args()
    if shutil.which("rclone") is None:
        print("bench_sync: rclone is not installed (Debian/Ubuntu: apt-get install -y rclone, "
              "or see https://rclone.org/install/)", file=sys.stderr)
        return 2
    import boto3
    from botocore.config import Config

    work = Path(tempfile.mkdtemp(prefix="aisync-bench-sync-"))
    moto, moto_url = start_moto()
    cluster_dir = work / "cluster"
    aisync = [sys.executable, "-m", "aisync"]
    cluster_started = False
    size = args.size_kib * 1024
    n_init, n_big = args.initial_objects, args.objects
    changed = sorted(random.Random(7).sample(range(n_big),
                                             max(1, round(n_big * args.changed_percent / 100))))
    rows: list[dict] = []
    setup: dict[str, float] = {}
    try:
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench",
                          config=Config(max_pool_connections=args.fill_threads * 2))
        base = os.urandom(size)
        for bucket in ("src1", "src2"):
            s3.create_bucket(Bucket=bucket)
        setup["fill_initial_s"] = fill(s3, "src1", base, range(n_init), 0, args.fill_threads)
        setup["fill_resync_s"] = fill(s3, "src2", base, range(n_big), 0, args.fill_threads)
        print(f"# moto filled: {n_init} objects in {setup['fill_initial_s']:.1f} s, "
              f"{n_big} in {setup['fill_resync_s']:.1f} s ({args.fill_threads} threads)",
              flush=True)

        env = dict(os.environ, AISYNC_BACKENDS__LAB__PROVIDER="s3",
                   AISYNC_BACKENDS__LAB__ENDPOINT_URL=moto_url,
                   AISYNC_BACKENDS__LAB__ACCESS_KEY="bench",
                   AISYNC_BACKENDS__LAB__SECRET_KEY="bench",
                   AISYNC_BACKENDS__LAB__REGION="us-east-1")
        cluster_started = True
        subprocess.run(aisync + ["cluster", "up", "--targets", "3", "--port", "0", "--detach",
                                 "--dir", str(cluster_dir)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = json.loads((cluster_dir / "cluster.json").read_text())["endpoint"]
        for bucket in ("src1", "src2"):
            subprocess.run(aisync + ["--endpoint", endpoint, "bucket", "create",
                                     f"s3://{bucket}", "--profile", "lab"],
                           check=True, stdout=subprocess.DEVNULL)
        rc_env = dict(os.environ, RCLONE_CONFIG_SRC_TYPE="s3", RCLONE_CONFIG_SRC_PROVIDER="Other",
                      RCLONE_CONFIG_SRC_ENDPOINT=moto_url,
                      RCLONE_CONFIG_SRC_ACCESS_KEY_ID="bench",
                      RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY="bench",
                      RCLONE_CONFIG_SRC_REGION="us-east-1",
                      RCLONE_CONFIG_SRC_FORCE_PATH_STYLE="true",
                      RCLONE_CONFIG=str(work / "rclone.conf"))  # no user config read or written
        rc_env.pop("AWS_CA_BUNDLE", None)  # rclone cannot use one for a plain-http endpoint

        def row(scenario: str, tool: str, seconds: float, objects: int, busy: float | None,
                **extra) -> None:
            rows.append({"scenario": scenario, "tool": tool, "seconds": round(seconds, 3),
                         "objects": objects, "objects_per_s": round(objects / seconds, 1),
                         "machine_busy_cores": busy and round(busy, 2), **extra})
            note = f" (machine busy: {busy:.2f} of {os.cpu_count()} cores)" if busy else ""
            print(f"  {scenario}: {tool}: {seconds:.2f} s{note}", flush=True)

        # 1. initial sync
        (secs, job), busy = measured(aisync_sync, endpoint, "s3://src1")
        check_job(job, added=n_init, failed=0)
        row("initial", "aisync sync job", secs, n_init, busy, job=job["progress"])
        for i, (label, extra) in enumerate({**RCLONE_CONFIGS, **RCLONE_TUNED}.items()):
            dest = work / f"rclone-initial-{i}"
            secs, busy = measured(rclone_sync, "src1", dest, extra, rc_env)
            if (got := count_files(dest)) != n_init:
                raise RuntimeError(f"rclone copied {got} of {n_init} objects")
            check_dir(dest, base, random.Random(i).sample(range(n_init), min(SAMPLE, n_init)), 0)
            row("initial", label, secs, n_init, busy)
            shutil.rmtree(dest)

        # 2. re-sync: setup (not measured)
        secs, job = aisync_sync(endpoint, "s3://src2")
        check_job(job, added=n_big, failed=0)
        setup["resync_setup_aisync_s"] = round(secs, 1)
        configs = {**RCLONE_CONFIGS, **RCLONE_TUNED}
        dirs = [work / f"rclone-resync-{i}" for i in range(len(configs))]
        start = time.perf_counter()
        rclone_sync("src2", dirs[0], RCLONE_CONFIGS["rclone (16 transfers, 16 checkers)"],
                    rc_env)
        setup["resync_setup_rclone_s"] = round(time.perf_counter() - start, 1)
        for d in dirs[1:]:
            subprocess.run(["cp", "-a", str(dirs[0]), str(d)], check=True)
        setup["change_s"] = fill(s3, "src2", base, changed, 1, args.fill_threads)
        print(f"# re-sync setup: aisync {setup['resync_setup_aisync_s']} s, rclone "
              f"{setup['resync_setup_rclone_s']} s; changed {len(changed)} objects in "
              f"{setup['change_s']:.1f} s", flush=True)

        # 2. re-sync: measured
        (secs, job), busy = measured(aisync_sync, endpoint, "s3://src2")
        check_job(job, updated=len(changed), added=0, failed=0)
        row("re-sync", "aisync sync job", secs, n_big, busy, job=job["progress"])
        sample = random.Random(11).sample(changed, min(SAMPLE, len(changed)))
        for (label, extra), dest in zip(configs.items(), dirs, strict=True):
            secs, busy = measured(rclone_sync, "src2", dest, extra, rc_env)
            check_dir(dest, base, sample, 1)
            row("re-sync", label, secs, n_big, busy)
        # not compared: the same job once more, nothing changed (listing and diff alone)
        (secs, job), busy = measured(aisync_sync, endpoint, "s3://src2")
        check_job(job, unchanged=n_big, updated=0, added=0, failed=0)
        row("no-op", "aisync sync job (nothing changed)", secs, n_big, busy, job=job["progress"])

        print(f"\n# {args.size_kib} KiB objects from a moto S3 server; re-sync: {len(changed)} "
              f"of {n_big} changed; ratio: on aisync's row the faster counted rclone's s / aisync's "
              f"s (> 1: aisync faster), on rclone's rows its s / aisync's s")
        print(f"{'scenario':<9} {'tool':<44} {'seconds':>8} {'objects/s':>10} {'ratio':>6}")
        summary = {}
        for scenario in ("initial", "re-sync"):
            mine = [r for r in rows if r["scenario"] == scenario]
            ais = next(r for r in mine if r["tool"].startswith("aisync"))
            best = min(r["seconds"] for r in mine if r["tool"] in RCLONE_CONFIGS)
            tuned = min(r["seconds"] for r in mine if r["tool"] in RCLONE_TUNED)
            ratio = best / ais["seconds"]
            summary[scenario] = {"ratio": round(ratio, 2), "target": TARGETS[scenario],
                                 "met": ratio >= TARGETS[scenario],
                                 "ratio_vs_tuned": round(tuned / ais["seconds"], 2)}
            for r in mine:
                shown = ratio if r is ais else r["seconds"] / ais["seconds"]
                print(f"{scenario:<9} {r['tool']:<44} {r['seconds']:>8.2f} "
                      f"{r['objects_per_s']:>10.0f} {shown:>6.2f}")
        for r in rows:
            if r["scenario"] == "no-op":
                print(f"{'no-op':<9} {r['tool']:<44} {r['seconds']:>8.2f} "
                      f"{r['objects_per_s']:>10.0f}")
        for scenario, s in summary.items():
            print(f"# {scenario}: aisync {s['ratio']}x the faster counted rclone, target "
                  f"{s['target']}x: {'met' if s['met'] else 'NOT met'}; vs rclone "
                  f"--use-server-modtime: {s['ratio_vs_tuned']}x")
        if args.json:
            args.json.write_text(json.dumps({
                "size_kib": args.size_kib, "initial_objects": n_init, "objects": n_big,
                "changed": len(changed), "setup": setup, "results": rows,
                "summary": summary}, indent=2))
        return 0
    finally:
        if cluster_started:
            if args.logs is not None:
                for log in cluster_dir.glob("*/node.log"):
                    dest = args.logs / log.parent.name
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(log, dest / "node.log")
            subprocess.run(aisync + ["cluster", "down", "--dir", str(cluster_dir), "--purge"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
