"""Warm GET throughput: aisync vs nginx, same bytes, same machine, same load generator, one run.

    python benchmarks/bench_get.py [--duration 5] [--small-objects 600] [--json out.json]

What it does:
1. ``aisync cluster up`` (1 proxy + 3 targets) in a temp dir; one 64 MiB object and N 4 KiB
   objects are PUT through the SDK.
2. nginx (``sendfile on``, 2 workers, access log off) serves the same bytes from disk.
3. wrk (keep-alive, 1 thread, a Lua script rotating paths for the 4 KiB case) runs against
   each server at concurrency 1 and 16, after a warm-up.

aisync is measured on two paths:
* ``data path``: GETs to the owning target, i.e. what a native client does after the proxy's
  307 (wrk cannot follow redirects). The 4 KiB set is the objects that one target owns, and nginx
  gets the same set, so the comparison is per node.
* ``via proxy``: ``?mode=reverse``, the whole request streamed through the proxy; what a client
  that cannot follow redirects gets.

Targets run with ``--read-workers`` read workers each (default 1: two processes per target, as
nginx runs two worker processes here).

Prints every figure and the aisync/nginx ratio; ``--json`` also writes them to a file.
Needs nginx and wrk (Debian: ``apt-get install -y nginx wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_cold import free_port  # noqa: E402  (one free-port helper for the benchmarks)

BIG = 64 * 1024 * 1024
SMALL = 4096


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}")
                                  else None)
    if not path:
        sys.exit(f"{tool} is not installed (Debian: apt-get install -y nginx wrk)")
    return path


def wrk(url: str, connections: int, duration: float, paths_file: Path | None = None,
        token: str | None = None) -> dict:
    cmd = [need("wrk"), "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    env = dict(os.environ)
    if paths_file is not None:
        cmd += ["-s", str(HERE / "rotate.lua")]
        env["WRK_PATHS"] = str(paths_file)
    out = subprocess.run(cmd + [url], capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None}


def start_nginx(root: Path, work: Path, *, writable: bool = False) -> tuple[subprocess.Popen, int]:
    """nginx serving ``root`` on a free port (``sendfile on``, 2 workers, no access log);
    ``writable`` also accepts WebDAV PUT and DELETE (the S3 benchmark's PUT reference)."""
    port = free_port()
    conf = work / "nginx.conf"
    dav = ("location / { dav_methods PUT DELETE; create_full_put_path on; }"
           if writable else "")
    conf.write_text(f"""
worker_processes 2; daemon off; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  types {{ }} default_type application/octet-stream; client_max_body_size 0;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; {dav} }}
}}
""")
    proc = subprocess.Popen([need("nginx"), "-c", str(conf), "-p", str(work)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    proc.wait(timeout=10)
    raise RuntimeError(f"nginx did not start; see {work}/nginx-error.log")


def signed_location(endpoint: str, bucket: str, name: str, token: str) -> tuple[str, str]:
    """``(owner URL, signed path)``: where the proxy's 307 sends a native client's GET (the
    path carries the proxy's signature, as every client of the data path gets it)."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.request("GET", f"/v1/objects/{bucket}/{name}",
                 headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    location = urlparse(resp.getheader("Location"))
    path = location.path + (f"?{location.query}" if location.query else "")
    return f"{location.scheme}://{location.netloc}", path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--small-objects", type=int, default=600)
    ap.add_argument("--read-workers", type=int, default=1,
                    help="read workers per target (nginx runs 2 worker processes; 1 read worker "
                         "gives each aisync target 2 processes too)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    need("wrk")
    need("nginx")
    from aisync.client import Client

    work = Path(tempfile.mkdtemp(prefix="aisync-bench-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user and must read www/
    cluster_dir = work / "cluster"
    www = work / "www"
    (www / "s").mkdir(parents=True)
    aisync = [sys.executable, "-m", "aisync"]
    nginx = None
    results: dict = {"machine": {"cores": os.cpu_count()}, "runs": []}
    try:
        # Signed redirects stay valid for the whole run (wrk replays the same Locations).
        env = dict(os.environ, AISYNC_HTTP__READ_WORKERS=str(args.read_workers),
                   AISYNC_AUTH__REDIRECT_TTL="2h")
        subprocess.run(aisync + ["cluster", "up", "--targets", "3", "--port", "0", "--detach",
                                 "--dir", str(cluster_dir)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = json.loads((cluster_dir / "cluster.json").read_text())["endpoint"]
        token = (cluster_dir / "admin-token").read_text().strip()
        big = os.urandom(BIG)
        (www / "big").write_bytes(big)
        with Client(endpoint, token=token) as client:
            client.create_bucket("bench")
            client.put_object("bench", "big", big)
            names = [f"s/{i:05d}" for i in range(args.small_objects)]
            for name in names:
                data = os.urandom(SMALL)
                client.put_object("bench", name, data)
                (www / name).write_bytes(data)
        del big
        owners: dict[str, list[tuple[str, str]]] = {}
        for name in names:
            owner, signed = signed_location(endpoint, "bench", name, token)
            owners.setdefault(owner, []).append((name, signed))
        target_url, owned_signed = max(owners.items(), key=lambda kv: len(kv[1]))
        owned = [name for name, _ in owned_signed]
        big_owner, big_signed = signed_location(endpoint, "bench", "big", token)
        aisync_paths = work / "aisync-paths.txt"
        aisync_paths.write_text("".join(f"{signed}\n" for _, signed in owned_signed))
        proxy_paths = work / "proxy-paths.txt"
        proxy_paths.write_text("".join(f"/v1/objects/bench/{n}?mode=reverse\n" for n in owned))
        nginx_paths = work / "nginx-paths.txt"
        nginx_paths.write_text("".join(f"/{n}\n" for n in owned))
        nginx, nport = start_nginx(www, work)
        ng = f"http://127.0.0.1:{nport}"

        cases = [
            ("64 MiB GET", "MiB/s", {
                "nginx": (f"{ng}/big", None),
                "aisync data path": (f"{big_owner}{big_signed}", None),
                "aisync via proxy": (f"{endpoint}/v1/objects/bench/big?mode=reverse", None)}),
            ("4 KiB GET", "ops/s", {
                "nginx": (ng, nginx_paths),
                "aisync data path": (target_url, aisync_paths),
                "aisync via proxy": (endpoint, proxy_paths)}),
        ]
        print(f"# warm GET, {os.cpu_count()} cores, wrk -t1, {args.duration:g}s per run, "
              f"{len(owned)} distinct 4 KiB objects, {args.read_workers} read worker(s) "
              "per target")
        results["read_workers"] = args.read_workers
        print(f"{'case':<12} {'conc':>4} {'server':<18} {'value':>14} {'p99 ms':>8} "
              f"{'vs nginx':>8}")
        for case, unit, servers in cases:
            for conc in (1, 16):
                base = None
                for server, (url, paths) in servers.items():
                    auth = token if "via proxy" in server else None
                    wrk(url, conc, 1.0, paths, auth)  # warm-up
                    r = wrk(url, conc, args.duration, paths, auth)
                    value = r["rps"] * BIG / 2**20 if unit == "MiB/s" else r["rps"]
                    base = value if server == "nginx" else base
                    ratio = value / base if base else 1.0
                    results["runs"].append({"case": case, "concurrency": conc, "server": server,
                                            "unit": unit, "value": round(value, 1),
                                            "p99_ms": r["p99_ms"], "ratio": round(ratio, 3)})
                    print(f"{case:<12} {conc:>4} {server:<18} {value:>8.0f} {unit:<6}"
                          f"{r['p99_ms'] or 0:>8.2f} {ratio:>8.2f}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        subprocess.run(aisync + ["cluster", "down", "--dir", str(cluster_dir), "--purge"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
