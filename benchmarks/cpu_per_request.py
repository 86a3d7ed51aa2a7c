"""CPU time per small GET, per node process: what a change to the request path costs.

    python benchmarks/cpu_per_request.py [--seconds 6] [--objects 200] [--rounds 3]

Throughput ratios (``bench_get.py``) move by ±10-30 % between runs on a small shared VM; the CPU
a node spends per request moves by a few percent. This probe starts a 1 proxy + 1 target
cluster (no read workers, so one process serves), PUTs N 4 KiB objects and drives wrk (16
connections) at two paths, reading each node's user+system CPU from ``/proc/PID/stat`` around
the run:

* ``data path``: the proxy's signed Locations straight at the target (what a native client does
  after the 307);
* ``via proxy``: ``?mode=reverse`` through the proxy (the proxy's and the target's CPU).

Prints microseconds of CPU per request (median of ``--rounds``) and rps. To compare two trees,
run it in each (``PYTHONPATH=<tree> python <tree>/benchmarks/cpu_per_request.py``), alternating.
Needs wrk (Debian: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_get import signed_location, wrk  # noqa: E402  (the benchmarks' wrk and 307 helpers)

SMALL = 4096


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, paths: Path, token: str | None, pids: dict[str, int],
            seconds: int, connections: int) -> dict:
    wrk(url, connections, 2, paths, token)  # warm-up: connections, caches, hot objects
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    result = wrk(url, connections, seconds, paths, token)
    requests = result["rps"] * seconds
    return {"rps": result["rps"],
            **{f"{role}_us": (cpu_seconds(pid) - before[role]) / requests * 1e6
               for role, pid in pids.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=6, help="seconds per measured wrk run")
    ap.add_argument("--objects", type=int, default=200, help="distinct 4 KiB objects")
    ap.add_argument("--rounds", type=int, default=3, help="measured runs per path (median)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections")
    ap.add_argument("--read-workers", type=int, default=0,
                    help="read workers per target (their CPU is not counted: keep 0 for CPU)")
    ap.add_argument("--auth-off", action="store_true",
                    help="run the nodes with auth.enabled: false (the same tree without its "
                         "locks: what they cost, with nothing else changed)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    import aisync.client as client_module
    from aisync.client import Client

    work = Path(tempfile.mkdtemp(prefix="aisync-cpu-"))
    cluster_dir = work / "cluster"
    aisync = [sys.executable, "-m", "aisync"]
    env = dict(os.environ, AISYNC_HTTP__READ_WORKERS=str(args.read_workers))
    if (Path(client_module.__file__).parents[1] / "auth").is_dir():  # (a tree from before
        env["AISYNC_AUTH__REDIRECT_TTL"] = "2h"                        # the locks has none)
    if args.auth_off:
        env["AISYNC_AUTH__ENABLED"] = "false"
    try:
        subprocess.run(aisync + ["cluster", "up", "--targets", "1", "--port", "0", "--detach",
                                 "--dir", str(cluster_dir)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        info = json.loads((cluster_dir / "cluster.json").read_text())
        endpoint = info["endpoint"]
        token_file = cluster_dir / "admin-token"
        token = token_file.read_text().strip() if token_file.exists() else ""
        pids = {n["role"]: n["pid"] for n in info["nodes"]}
        names = [f"s/{i:05d}" for i in range(args.objects)]
        with Client(endpoint, **({"token": token} if token else {})) as client:
            client.create_bucket("bench")
            for name in names:
                client.put_object("bench", name, os.urandom(SMALL))
        located = [signed_location(endpoint, "bench", name, token) for name in names]
        target_url = located[0][0]
        direct = work / "direct.txt"
        direct.write_text("".join(f"{path}\n" for _, path in located))
        relayed = work / "relayed.txt"
        relayed.write_text("".join(f"/v1/objects/bench/{n}?mode=reverse\n" for n in names))
        cases = {"data path": (target_url, direct, None, {"target": pids["target"]}),
                 "via proxy": (endpoint, relayed, token or None, pids)}
        results = {}
        print(f"# 4 KiB GET, wrk -c{args.connections}, {args.seconds}s x {args.rounds}, 1 proxy "
              f"+ 1 target, {args.read_workers} read workers{', auth off' if args.auth_off else ''}; CPU microseconds per request "
              "(median)")
        for case, (url, paths, auth, roles) in cases.items():
            runs = [measure(url, paths, auth, roles, args.seconds, args.connections)
                    for _ in range(args.rounds)]
            results[case] = {key: round(statistics.median(r[key] for r in runs), 1)
                             for key in runs[0]}
            print(f"{case:<10} " + "  ".join(f"{k} {v:g}" for k, v in results[case].items()))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    finally:
        subprocess.run(aisync + ["cluster", "down", "--dir", str(cluster_dir), "--purge"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
