"""S3 front end throughput: boto3 against aisync, a moto server and nginx, in one run.

The same boto3 client code (path-style, SigV4) drives three servers on this machine:

* **aisync**: a local cluster (1 proxy + 1 target, `aisync cluster up`), S3 at the root of the
  proxy's port, requests verified against an access key made with `aisync auth key create`;
* **moto**: `python -m moto.server` (the S3 emulator the tests use);
* **nginx**: `sendfile on`, 2 workers, WebDAV PUT on; it ignores the signature (the ceiling of
  an HTTP file server here, not an S3 implementation).

Workloads: 64 MiB GET and PUT (one client, sequential: MiB/s) and 4 KiB GET and PUT (several
client processes × threads for a fixed time: ops/s). Prints each figure and its ratio to moto
and to nginx; ``--json FILE`` writes them too. Needs nginx (Debian: ``apt-get install -y
nginx``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold import start_moto  # noqa: E402
from bench_get import start_nginx  # noqa: E402

MiB = 1 << 20
AK, SK = "AKBENCHS3FRONTEND01", "bench-s3-front-end-secret-0123456789"
BUCKET = "bench"


def client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=AK, aws_secret_access_key=SK,
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      max_pool_connections=64, retries={"max_attempts": 1}))


def big_get(endpoint: str, rounds: int) -> float:
    s3 = client(endpoint)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        body = s3.get_object(Bucket=BUCKET, Key="big-0")["Body"]
        while body.read(MiB):
            pass
        times.append(time.perf_counter() - start)
    return 64 / statistics.median(times)


def big_put(endpoint: str, rounds: int, data: bytes) -> float:
    s3 = client(endpoint)
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        s3.put_object(Bucket=BUCKET, Key=f"big-put-{i}", Body=data)
        times.append(time.perf_counter() - start)
    return 64 / statistics.median(times)


def _small_worker(args: tuple[str, str, int, float, int]) -> int:
    endpoint, op, threads, seconds, seed = args
    s3 = client(endpoint)
    body = os.urandom(4096)
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def run(slot: int) -> None:
        rng = random.Random(seed * 100 + slot)
        n = 0
        while time.perf_counter() < deadline:
            if op == "get":
                s3.get_object(Bucket=BUCKET, Key=f"small/{rng.randrange(256)}")["Body"].read()
            else:
                s3.put_object(Bucket=BUCKET, Key=f"small-put/{seed}-{slot}-{n}", Body=body)
            n += 1
        counts[slot] = n

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts)


def small_ops(endpoint: str, op: str, procs: int, threads: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        start = time.perf_counter()
        total = sum(pool.map(_small_worker, [(endpoint, op, threads, seconds, p)
                                             for p in range(procs)]))
        elapsed = time.perf_counter() - start
    return total / max(elapsed, seconds)


def seed_server(endpoint: str, data: bytes, nginx_root: Path | None) -> None:
    small = os.urandom(4096)
    if nginx_root is not None:  # nginx serves files: write them where it looks
        (nginx_root / BUCKET / "small").mkdir(parents=True, exist_ok=True)
        (nginx_root / BUCKET / "big-0").write_bytes(data)
        for i in range(256):
            (nginx_root / BUCKET / "small" / str(i)).write_bytes(small)
        for path in (nginx_root / BUCKET, nginx_root / BUCKET / "small"):
            path.chmod(0o777)  # nginx's workers (an unprivileged user) write PUTs here
        return
    s3 = client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="big-0", Body=data)
    for i in range(256):
        s3.put_object(Bucket=BUCKET, Key=f"small/{i}", Body=small)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="64 MiB transfers per server")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each 4 KiB run")
    ap.add_argument("--procs", type=int, default=2, help="client processes for 4 KiB runs")
    ap.add_argument("--threads", type=int, default=8, help="threads per client process")
    ap.add_argument("--repeat", type=int, default=3,
                    help="turns per server (figures are medians of the turns)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if shutil.which("nginx") is None:
        sys.exit("nginx is not installed (Debian: apt-get install -y nginx)")
    work = Path(tempfile.mkdtemp(prefix="aisync-bench-s3-"))
    work.chmod(0o755)
    www = work / "www"
    www.mkdir()
    www.chmod(0o777)
    aisync = [sys.executable, "-m", "aisync"]
    cluster_dir = work / "cluster"
    moto, moto_url = start_moto()
    nginx = None
    try:
        servers: dict[str, str] = {"moto": moto_url}
        subprocess.run(aisync + ["cluster", "up", "--targets", "1", "--port", "0", "--detach",
                                 "--dir", str(cluster_dir)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers["aisync"] = json.loads((cluster_dir / "cluster.json").read_text())["endpoint"]
        token = (cluster_dir / "admin-token").read_text().strip()
        subprocess.run(aisync + ["--endpoint", servers["aisync"], "--token", token,
                                 "auth", "key", "create",
                                 "--access-key", AK, "--secret-key", SK], check=True,
                       stdout=subprocess.DEVNULL)
        nginx, nginx_port = start_nginx(www, work, writable=True)
        servers["nginx"] = f"http://127.0.0.1:{nginx_port}"
        data = os.urandom(64 * MiB)
        for name, endpoint in servers.items():
            seed_server(endpoint, data, www if name == "nginx" else None)
        # Servers take turns, `--repeat` times, and each figure is the median of its turns:
        # the machine drifts (other load, CPU frequency) less within a turn than across a run.
        samples: dict[str, dict[str, list[float]]] = {n: {} for n in servers}
        for turn in range(args.repeat):
            for name, endpoint in servers.items():
                figures = {
                    "get_64mib_mibps": big_get(endpoint, args.rounds),
                    "put_64mib_mibps": big_put(endpoint, max(2, args.rounds // 2), data),
                    "get_4kib_ops": small_ops(endpoint, "get", args.procs, args.threads,
                                              args.seconds),
                    "put_4kib_ops": small_ops(endpoint, "put", args.procs, args.threads,
                                              args.seconds),
                }
                for key, value in figures.items():
                    samples[name].setdefault(key, []).append(value)
                print(f"turn {turn + 1} {name}: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()), flush=True)
        results = {name: {k: statistics.median(v) for k, v in figs.items()}
                   for name, figs in samples.items()}
        print(f"\n# boto3 through each server, medians of {args.repeat} turns; 4 KiB with "
              f"{args.procs} processes x {args.threads} threads for {args.seconds:.0f} s")
        print(f"{'workload':<18} {'aisync':>9} {'moto':>9} {'nginx':>9} {'vs moto':>8} "
              f"{'vs nginx':>9}")
        for key in results["aisync"]:
            a, m, n = (results[s][key] for s in ("aisync", "moto", "nginx"))
            print(f"{key:<18} {a:>9.0f} {m:>9.0f} {n:>9.0f} {a / m:>8.2f} {a / n:>9.2f}")
        if args.json:
            args.json.write_text(json.dumps({"medians": results, "samples": samples}, indent=2))
        return 0
    finally:
        subprocess.run(aisync + ["cluster", "down", "--dir", str(cluster_dir), "--purge"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
