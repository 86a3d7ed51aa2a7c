"""The ceiling of a Python read-through on this machine: a cold GET that does the least possible.

``bench_cold.py`` compares aisync's cold GET of a 64 MiB object (fetched from a moto S3 server,
streamed to the client while it is cached) with a direct boto3 read from moto. This probe asks
how close *any* Python read-through server could come here: a single-process aiohttp server
whose GET reads the object from moto with boto3 (in a thread, 1 MiB chunks, as the direct read
does) and writes each chunk to its client as it arrives, in two variants:

* **relay**: nothing else (no cache at all: the floor of any proxy in Python);
* **cache**: also writes each chunk to a temp file, hashes it (xxh3) and fsyncs and renames the
  file at the end (what a read-through must do at the least).

The client reads each in 1 MiB chunks with aiohttp, as aisync's SDK does; every read is of a
fresh object. Rounds alternate direct / relay / cache; medians.

    python benchmarks/bench_cold_ceiling.py [--size-mib 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold import CHUNK, direct_read, free_port, start_moto, wait_http  # noqa: E402

CREDS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDS)


def serve(port: int, moto: str, root: str) -> None:
    import xxhash
    from aiohttp import web

    s3 = s3_client(moto)

    def fetch(key: str, cache: bool, loop, queue: asyncio.Queue) -> None:
        body = s3.get_object(Bucket="source", Key=key)["Body"]
        fd, hasher, temp = -1, xxhash.xxh3_128(), f"{root}/tmp-{uuid.uuid4().hex}"
        if cache:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for chunk in body.iter_chunks(CHUNK):
                if cache:
                    hasher.update(chunk)
                    os.write(fd, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            if cache:
                os.fsync(fd)
                os.rename(temp, f"{root}/{key}")
        finally:
            if fd >= 0:
                os.close(fd)
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/up":
            return web.Response(text="ok")
        cache = request.query.get("cache") == "1"
        key = request.path.lstrip("/")
        head = await asyncio.to_thread(s3.head_object, Bucket="source", Key=key)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        worker = loop.run_in_executor(None, fetch, key, cache, loop, queue)
        out = web.StreamResponse()
        out.content_length = head["ContentLength"]
        await out.prepare(request)
        while (chunk := await queue.get()) is not None:
            await out.write(chunk)
        await worker
        await out.write_eof()
        return out

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handler), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


async def probe_read(url: str) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        async with session.get(url) as resp:
            resp.raise_for_status()
            async for _ in resp.content.iter_chunked(CHUNK):
                pass
        return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aisync-bench-cold-ceiling-"))
    procs: list[subprocess.Popen] = []
    try:
        probe_port = free_port()
        moto_proc, moto = start_moto()
        procs.append(moto_proc)
        procs.append(subprocess.Popen([sys.executable, __file__, "--serve", str(probe_port),
                                       moto, str(work)]))
        probe = f"http://127.0.0.1:{probe_port}"
        wait_http(f"{probe}/up")
        s3 = s3_client(moto)
        s3.create_bucket(Bucket="source")
        data = os.urandom(args.size_mib * CHUNK)
        keys = [f"obj-{i}" for i in range(3 * args.rounds)]
        for key in keys:
            s3.put_object(Bucket="source", Key=key, Body=data)
        del data
        times: dict[str, list[float]] = {"direct": [], "relay": [], "cache": []}
        for r in range(args.rounds):
            times["direct"].append(direct_read(s3, "source", keys[3 * r]))
            times["relay"].append(asyncio.run(probe_read(f"{probe}/{keys[3 * r + 1]}")))
            times["cache"].append(asyncio.run(probe_read(f"{probe}/{keys[3 * r + 2]}?cache=1")))
        direct = statistics.median(times["direct"])
        print(f"# {args.size_mib} MiB objects from moto, {args.rounds} rounds, medians")
        for label, key in (("direct boto3 GET", "direct"), ("minimal relay", "relay"),
                           ("minimal read-through", "cache")):
            t = statistics.median(times[key])
            print(f"{label:<22} {t:>7.3f} s  {t / direct:>5.2f}x direct")
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(main())
