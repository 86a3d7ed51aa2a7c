"""Cold GET in zone B over emulated WAN links: from zone A's cache (peer-first) vs the source.

    sudo bash .ci/wan.sh      # once: iproute2, iptables, NetfilterQueue
    python benchmarks/bench_wan.py [--size-mib 16] [--rounds 5] [--json out.json]

Needs root. The topology is the WAN tests' (``tests/wan``): a moto S3 server in namespace
``src``, a zone-a cluster in ``za`` and a zone-b cluster in ``zb`` (1 proxy + 2 targets each),
joined by emulated links: ``--zone-delay-ms`` (5) one way between the zones, and
``--source-delay-ms`` (40) one way with ``--source-loss-pct`` (1) loss each way between each
zone and the source; netem where the kernel has it, else iptables drops and an NFQUEUE delayer.
The client (this process) reaches every namespace over an unimpaired link.

Zone A prefetches one set of objects; zone B caches the same bucket with ``peers=zone-a``. Each
round reads, in zone B, a fresh object of that bucket (cold: peer-first, served by zone A over
the zone link after a HEAD at the source), a fresh object of a second bucket without peers (cold:
read through from the source over the lossy link), and a third object directly from the source
with boto3 from inside ``zb`` (no aisync: what a client in zone B gets from the source). The
order rotates between rounds. Prints the medians and the ratios to the source reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold import aisync_read  # noqa: E402  (one timed aisync read, shared)

CHUNK = 1 << 20
MOTO_PORT = 9000
CREDS = {"access_key": "bench", "secret_key": "bench", "region": "us-east-1"}


def direct_read(url: str, bucket: str, key: str) -> float:
    """Seconds a boto3 GET (streamed, discarded) of the object takes from here."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=url, region_name=CREDS["region"],
                      aws_access_key_id=CREDS["access_key"],
                      aws_secret_access_key=CREDS["secret_key"])
    s3.head_bucket(Bucket=bucket)  # connection and client set up outside the timing
    start = time.perf_counter()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for _ in body.iter_chunks(CHUNK):
        pass
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    import boto3

    from aisync.client import Client
    from tests.harness import api, peer_stats, wait_job
    from tests.wan.netem import Link, NamespaceCluster, Wan, wait_tcp

    links = [Link("za", "zb", args.zone_delay_ms, 0.0, args.zone_rate_mbit),
             Link("src", "za", args.source_delay_ms, args.source_loss_pct),
             Link("src", "zb", args.source_delay_ms, args.source_loss_pct)]
    with Wan(["src", "za", "zb"], links) as wan:
        host = wan.addr("src")
        moto = wan.spawn("src", [sys.executable, "-m", "moto.server", "-H", host,
                                 "-p", str(MOTO_PORT)])
        wait_tcp(host, MOTO_PORT, proc=moto)
        source = f"http://{host}:{MOTO_PORT}"
        s3 = boto3.client("s3", endpoint_url=source, region_name=CREDS["region"],
                          aws_access_key_id=CREDS["access_key"],
                          aws_secret_access_key=CREDS["secret_key"])
        data = os.urandom(args.size_mib * CHUNK)
        rounds = range(args.rounds)
        for bucket in ("peered", "plain"):
            s3.create_bucket(Bucket=bucket)
        for r in rounds:
            s3.put_object(Bucket="peered", Key=f"obj-{r}", Body=data)
            s3.put_object(Bucket="plain", Key=f"obj-{r}", Body=data)
            s3.put_object(Bucket="plain", Key=f"direct-{r}", Body=data)
        del data
        lab = {"provider": "s3", "endpoint_url": source, **CREDS}
        def zone(ns: str, name: str, **more) -> NamespaceCluster:
            return NamespaceCluster(wan, ns, targets=2, extra={
                "cluster": {"name": name}, "backends": {"lab": lab}, **more})

        # zone b's nodes name zone a (started first) as a remote they may attach: URL and token
        with zone("za", "zone-a") as zone_a, zone("zb", "zone-b", remotes={"zone-a": {
                "urls": [zone_a.endpoint], "token": zone_a.token}}) as zone_b:
            with Client(zone_a.endpoint) as a, Client(zone_b.endpoint) as b:
                a.create_bucket("s3://peered", profile="lab")
                b.create_bucket("s3://peered", profile="lab")
                b.create_bucket("s3://plain", profile="lab")
                status, body = api(zone_b, "PUT", "/v1/remotes/zone-a",
                                   {"urls": [zone_a.endpoint]})
                assert status == 201, body
                b.set_bucket_props("s3://peered", peers=["zone-a"])
            started = time.perf_counter()
            status, job = api(zone_a, "POST", "/v1/jobs", {"kind": "prefetch",
                                                           "bucket": "s3://peered"})
            assert status == 201, job
            job = wait_job(zone_a, job["id"], timeout=60 * args.rounds * args.size_mib)
            assert job["state"] == "succeeded", job
            print(f"# zone a prefetched {args.rounds} x {args.size_mib} MiB from the source in "
                  f"{time.perf_counter() - started:.1f} s ({wan.mode})", file=sys.stderr)

            times: dict[str, list[float]] = {"peer": [], "source": [], "direct": []}
            peer_bytes = []
            for r in rounds:
                cases = ["peer", "source", "direct"]
                cases = cases[r % 3:] + cases[:r % 3]
                for case in cases:
                    if case == "peer":
                        before = peer_stats(zone_b)
                        t = asyncio.run(aisync_read(zone_b.endpoint, "s3://peered", f"obj-{r}"))
                        after = peer_stats(zone_b)
                        peer_bytes.append(after["bytes_from_peers"] - before["bytes_from_peers"])
                    elif case == "source":
                        t = asyncio.run(aisync_read(zone_b.endpoint, "s3://plain", f"obj-{r}"))
                    else:
                        out = subprocess.run(
                            [*wan.prefix("zb"), sys.executable, __file__, "--direct-read",
                             source, "plain", f"direct-{r}"],
                            check=True, capture_output=True, text=True)
                        t = float(out.stdout.strip().splitlines()[-1])
                    times[case].append(t)
                    print(f"round {r} {case:<6} {t:7.3f} s", file=sys.stderr)
        return {"size_mib": args.size_mib, "mode": wan.mode, "links": [vars(x) for x in links],
                "seconds": times, "peer_bytes": peer_bytes}


def report(result: dict) -> None:
    mib = result["size_mib"]
    med = {k: statistics.median(v) for k, v in result["seconds"].items()}
    served = sum(b >= mib * CHUNK for b in result["peer_bytes"])
    print(f"# cold GET of {mib} MiB in zone b, {len(result['seconds']['peer'])} rounds, "
          f"medians; links: {result['mode']}")
    print(f"{'read':<44} {'seconds':>8} {'MiB/s':>7} {'vs source':>9}")
    rows = (("zone b, peer-first (zone a's copy)", "peer"),
            ("zone b, read-through from the source", "source"),
            ("boto3 in zone b, straight from the source", "direct"))
    for label, key in rows:
        print(f"{label:<44} {med[key]:>8.3f} {mib / med[key]:>7.1f} "
              f"{med[key] / med['source']:>9.2f}")
    print(f"peer-first / direct source read: {med['peer'] / med['direct']:.2f}; "
          f"served by zone a: {served}/{len(result['peer_bytes'])} reads")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--zone-delay-ms", type=float, default=5)
    ap.add_argument("--zone-rate-mbit", type=float, default=None)
    ap.add_argument("--source-delay-ms", type=float, default=40)
    ap.add_argument("--source-loss-pct", type=float, default=1.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--direct-read", nargs=3, metavar=("URL", "BUCKET", "KEY"),
                    help=argparse.SUPPRESS)  # the boto3 read, run inside zone b's namespace
    args = ap.parse_args()
    if args.direct_read:
        print(direct_read(*args.direct_read))
        return 0
    from tests.wan.netem import environment_problem, fallback_problem, netem_available

    if problem := environment_problem() or (not netem_available() and fallback_problem()):
        print(f"cannot emulate the WAN here: {problem}", file=sys.stderr)
        return 2
    result = run(args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
