"""How fast can the moto source serve an initial sync at all? Its GET ceiling beside rclone's rate.

``bench_sync.py`` asks an initial sync of 10,000 objects of 64 KiB from a moto S3 server to be
≥ 1.5× faster than ``rclone sync`` from the same server. A sync must GET every object once, so
no tool can beat the rate at which moto serves those GETs. This probe measures, in one run on
one moto server holding ``--objects`` objects of 64 KiB:

* **the ceiling**: every object fetched once by the cheapest client there is (``http.client``,
  keep-alive, ``--threads`` threads, URLs presigned beforehand), so that moto, not the
  client, is the limit;
* **rclone sync** of the same objects into an empty directory, with its defaults and with 16
  transfers / 16 checkers (what ``bench_sync.py`` counts).

It prints objects/s of each and ceiling / rclone: the largest speedup over rclone that any tool
could reach from this source on this machine.

    python benchmarks/bench_source_ceiling.py [--objects 2000] [--threads 16]
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold import start_moto  # noqa: E402
from bench_sync import RCLONE_CONFIGS, fill, key_of, rclone_sync  # noqa: E402

BUCKET = "source"


def ceiling(s3, port: int, count: int, threads: int) -> float:
    """Objects/s when every object is fetched once by ``threads`` keep-alive clients (with
    presigned URLs made beforehand: moto refuses anonymous GETs)."""
    work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    for i in range(count):
        url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET,
                                                              "Key": key_of(i)})
        work.put(url.split(str(port), 1)[1])
    for _ in range(threads):
        work.put(None)
    failures: list[str] = []

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while (path := work.get()) is not None:
            conn.request("GET", path)
            resp = conn.getresponse()
            if len(resp.read()) != 64 * 1024 or resp.status != 200:
                failures.append(path)
        conn.close()

    start = time.perf_counter()
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} GETs failed, e.g. {failures[0]}")
    return count / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    if shutil.which("rclone") is None:
        sys.exit("rclone is not installed (Debian: apt-get install -y rclone)")
    import boto3

    work = Path(tempfile.mkdtemp(prefix="aisync-bench-source-"))
    moto, moto_url = start_moto()
    port = int(moto_url.rpartition(":")[2])
    try:
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket=BUCKET)
        fill(s3, BUCKET, os.urandom(64 * 1024), range(args.objects), 0, 16)
        env = dict(os.environ, RCLONE_CONFIG_SRC_TYPE="s3", RCLONE_CONFIG_SRC_PROVIDER="Other",
                   RCLONE_CONFIG_SRC_ENDPOINT=moto_url, RCLONE_CONFIG_SRC_ACCESS_KEY_ID="bench",
                   RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY="bench",
                   RCLONE_CONFIG_SRC_REGION="us-east-1", RCLONE_CONFIG_SRC_FORCE_PATH_STYLE="true",
                   RCLONE_CONFIG=str(work / "rclone.conf"))
        env.pop("AWS_CA_BUNDLE", None)  # rclone cannot use one for a plain-http endpoint
        rates: dict[str, float] = {"ceiling (every object GET once)": ceiling(
            s3, port, args.objects, args.threads)}
        for n, (label, extra) in enumerate(RCLONE_CONFIGS.items()):
            dest = work / f"rclone-{n}"
            rates[label] = args.objects / rclone_sync(BUCKET, dest, extra, env)
            shutil.rmtree(dest)
        top = rates["ceiling (every object GET once)"]
        best = max(v for k, v in rates.items() if k.startswith("rclone"))
        print(f"# {args.objects} objects of 64 KiB from moto")
        for label, rate in rates.items():
            print(f"{label:<45} {rate:>7.0f} objects/s")
        print(f"largest speedup over the faster rclone any tool could reach: {top / best:.2f}x")
        return 0
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
