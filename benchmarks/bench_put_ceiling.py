"""The ceiling of a durable small-object PUT in Python on this machine, beside moto, in one run.

``bench_s3.py`` compares aisync's 4 KiB PUT ops/s with moto's. This probe asks what any Python
S3 server that keeps aisync's durability rule (temp file, fsync, rename, fsync of the directory)
could reach on the same machine with the same boto3 load: a single-process aiohttp + uvloop
server that does *only* that per PUT (no signature check, no checksums, no index, no metadata,
no second hop), once with the fsyncs and once without. Same load generator as ``bench_s3.py``
(2 processes × 8 threads for ``--seconds``), servers in turns, medians.

    python benchmarks/bench_put_ceiling.py [--seconds 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold import free_port, start_moto, wait_http  # noqa: E402
from bench_s3 import BUCKET, client, small_ops  # noqa: E402


def serve(port: int, root: str, durable: bool) -> None:
    """The minimal PUT server: the body to a temp file, (fsync,) rename, (fsync the dir)."""
    from concurrent.futures import ThreadPoolExecutor

    import uvloop
    from aiohttp import web

    pool = ThreadPoolExecutor(8)

    def store(path: str, data: bytes) -> None:
        temp = f"{root}/tmp-{uuid.uuid4().hex}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
        if durable:
            dir_fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    async def handler(request: web.BaseRequest) -> web.Response:
        if request.method != "PUT":
            return web.Response(text="ok")
        if request.headers.get("Expect", "").lower() == "100-continue":
            request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        data = await request.read()
        path = f"{root}/{hashlib.md5(request.path.encode()).hexdigest()}"
        await asyncio.get_running_loop().run_in_executor(pool, store, path, data)
        return web.Response(headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handler), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each run")
    ap.add_argument("--repeat", type=int, default=3, help="turns per server (medians)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aisync-bench-ceiling-"))
    procs: list[subprocess.Popen] = []
    try:
        moto_proc, moto_url = start_moto()
        procs.append(moto_proc)
        servers = {"moto": moto_url}
        for name, durable in (("minimal, durable", "1"), ("minimal, no fsync", "0")):
            port = free_port()
            root = work / name.replace(" ", "").replace(",", "-")
            root.mkdir()
            procs.append(subprocess.Popen([sys.executable, __file__, "--serve", str(port),
                                           str(root), durable]))
            servers[name] = f"http://127.0.0.1:{port}"
        for name, endpoint in servers.items():
            if name != "moto":
                wait_http(f"{endpoint}/up")
        client(servers["moto"]).create_bucket(Bucket=BUCKET)
        samples: dict[str, list[float]] = {name: [] for name in servers}
        for turn in range(args.repeat):
            for name, endpoint in servers.items():
                samples[name].append(small_ops(endpoint, "put", 2, 8, args.seconds))
                print(f"turn {turn + 1} {name}: {samples[name][-1]:.0f} PUT/s", flush=True)
        moto = statistics.median(samples["moto"])
        print(f"\n# 4 KiB PUT, boto3, 2 processes x 8 threads, medians of {args.repeat} turns")
        for name, values in samples.items():
            value = statistics.median(values)
            print(f"{name:<20} {value:>7.0f} ops/s  {value / moto:>5.2f}x moto")
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1")
    else:
        sys.exit(main())
