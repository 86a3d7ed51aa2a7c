"""Cold GET (read-through) vs a direct read from the source, and warm vs cold, in one run.

    python benchmarks/bench_cold.py [--size-mib 64] [--rounds 3]

A moto S3 server (its own process) holds the source objects. Each round reads one fresh
object directly with boto3 and another, same-sized fresh object through aisync (a cold GET:
the owning target streams it from moto to the client while caching it), then reads the
second one again through aisync (warm). Both clients stream and discard the bytes in 1 MiB
chunks. Prints the median seconds of each and the ratios cold/direct and warm/direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server (its own process) on a free loopback port, answering: (process, URL).
    The caller terminates it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/")
    except BaseException:
        proc.terminate()
        proc.wait(timeout=10)
        raise
    return proc, url


def direct_read(s3, bucket: str, key: str) -> float:
    start = time.perf_counter()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for _ in body.iter_chunks(CHUNK):
        pass
    return time.perf_counter() - start


async def aisync_read(endpoint: str, uri: str, key: str) -> float:
    from aisync.client import AsyncClient

    async with AsyncClient(endpoint) as client:
        start = time.perf_counter()
        async with client.open_object(uri, key) as reader:
            async for _ in reader.iter_chunks(CHUNK):
                pass
        return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import boto3

    work = Path(tempfile.mkdtemp(prefix="aisync-bench-cold-"))
    moto, moto_url = start_moto()
    cluster_dir = work / "cluster"
    aisync = [sys.executable, "-m", "aisync"]
    try:
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", **creds)
        s3.create_bucket(Bucket="source")
        keys = [f"obj-{i}" for i in range(2 * args.rounds)]
        data = os.urandom(args.size_mib * CHUNK)
        for key in keys:
            s3.put_object(Bucket="source", Key=key, Body=data)
        del data
        env = dict(os.environ, AISYNC_BACKENDS__LAB__PROVIDER="s3",
                   AISYNC_BACKENDS__LAB__ENDPOINT_URL=moto_url,
                   AISYNC_BACKENDS__LAB__ACCESS_KEY="bench",
                   AISYNC_BACKENDS__LAB__SECRET_KEY="bench",
                   AISYNC_BACKENDS__LAB__REGION="us-east-1")
        subprocess.run(aisync + ["cluster", "up", "--targets", "3", "--port", "0", "--detach",
                                 "--dir", str(cluster_dir)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = json.loads((cluster_dir / "cluster.json").read_text())["endpoint"]
        subprocess.run(aisync + ["--endpoint", endpoint, "bucket", "create", "s3://source",
                                 "--profile", "lab"], check=True, stdout=subprocess.DEVNULL)
        direct, cold, warm = [], [], []
        for r in range(args.rounds):
            direct.append(direct_read(s3, "source", keys[2 * r]))
            cold.append(asyncio.run(aisync_read(endpoint, "s3://source", keys[2 * r + 1])))
            warm.append(asyncio.run(aisync_read(endpoint, "s3://source", keys[2 * r + 1])))
        d, c, w = (statistics.median(x) for x in (direct, cold, warm))
        mib = args.size_mib
        print(f"# {mib} MiB objects from a moto S3 server, {args.rounds} rounds, medians")
        print(f"{'read':<28} {'seconds':>8} {'MiB/s':>8} {'vs direct':>9}")
        for label, t in (("direct boto3 GET (source)", d), ("aisync cold GET", c),
                         ("aisync warm GET", w)):
            print(f"{label:<28} {t:>8.3f} {mib / t:>8.0f} {t / d:>9.2f}")
        if args.json:
            args.json.write_text(json.dumps({"size_mib": mib, "direct_s": direct,
                                             "cold_s": cold, "warm_s": warm}, indent=2))
        return 0
    finally:
        subprocess.run(aisync + ["cluster", "down", "--dir", str(cluster_dir), "--purge"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
