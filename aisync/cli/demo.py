"""``aisync demo``: the end-to-end scenarios on embedded defaults, no cloud account needed.

By default the two-zone scenario (:mod:`aisync.cli.demo_zones`): an ``fs://`` source of truth,
zone-a and zone-b on loopback, scheduled sync, an out-of-band change, a cross-zone read served
by the peer, a checkpoint carried from zone-a to zone-b, and each bucket's freshness.

``--single-cluster``: the round trip on one local cluster (1 proxy + 3 targets) in a temporary
directory: generates a small dataset (image-sized files plus a few large shards), uploads it,
lists it, reads every object back and verifies it byte for byte (xxh3), checks a range read,
prints a report, then tears the cluster down. Exit status 0 means every check passed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import xxhash

from aisync.cli.common import CliError, UsageFailure, count_bar, human_bytes, print_table
from aisync.cli.demo_zones import run_two_zones
from aisync.cli.state import read_state
from aisync.client import AsyncClient
from aisync.client.aio import TOKEN_FILE


def _generate(root: Path, files: int, shards: int, shard_mib: int) -> dict[str, str]:
    """Write the dataset; returns {relative name: xxh3 hex}."""
    rng = os.urandom
    sums: dict[str, str] = {}
    for i in range(files):
        rel = f"images/{i // 100:03d}/{i:06d}.jpg"
        data = rng(8192 + (i * 7919) % (256 * 1024))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sums[rel] = xxhash.xxh3_64_hexdigest(data)
    for i in range(shards):
        rel = f"shards/train-{i:04d}.tar"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        hasher = xxhash.xxh3_64()
        with open(path, "wb") as f:
            for _ in range(shard_mib):
                block = rng(1 << 20)
                hasher.update(block)
                f.write(block)
        sums[rel] = hasher.hexdigest()
    return sums


async def _scenario(endpoint: str, token: str, dataset: Path, sums: dict[str, str], jobs: int,
                    progress: bool) -> tuple[list[list[str]], int]:
    failures = 0
    rows: list[list[str]] = []
    total = sum((dataset / rel).stat().st_size for rel in sums)
    sem = asyncio.Semaphore(jobs)
    async with AsyncClient(endpoint, token=token) as client:
        await client.create_bucket("ais://train")

        async def put(rel: str) -> None:
            async with sem:
                await client.put_object("ais://train", rel, dataset / rel)
                bar.update(1)

        bar = count_bar(len(sums), progress, "upload", unit="obj")
        start = time.perf_counter()
        await asyncio.gather(*(put(rel) for rel in sums))
        up_s = time.perf_counter() - start
        bar.close()
        rows.append(["upload", f"{len(sums)} objects", human_bytes(total),
                     f"{total / up_s / 2**20:.0f} MiB/s"])

        listed = [e async for e in client.iter_objects("ais://train", page_size=100)]
        ok = sorted(e.name for e in listed) == sorted(sums)
        failures += not ok
        rows.append(["list (100/page)", f"{len(listed)} objects", "in key order",
                     "ok" if ok else "MISMATCH"])

        async def check(rel: str) -> bool:
            async with sem:
                hasher = xxhash.xxh3_64()
                async with client.open_object("ais://train", rel) as reader:
                    async for chunk in reader.iter_chunks():
                        hasher.update(chunk)
                bar.update(1)
                return hasher.hexdigest() == sums[rel]

        bar = count_bar(len(sums), progress, "verify", unit="obj")
        start = time.perf_counter()
        results = await asyncio.gather(*(check(rel) for rel in sums))
        down_s = time.perf_counter() - start
        bar.close()
        bad = results.count(False)
        failures += bad
        rows.append(["read back + verify", f"{len(sums) - bad}/{len(sums)} identical",
                     human_bytes(total), f"{total / down_s / 2**20:.0f} MiB/s"])

        shard = next(rel for rel in sums if rel.startswith("shards/"))
        want = (dataset / shard).read_bytes()[1000:1000 + 4096]
        got = await client.get_object("ais://train", shard, byte_range=(1000, 1000 + 4095))
        failures += got != want
        rows.append(["range read", "4 KiB at offset 1000", shard, "ok" if got == want else "BAD"])

        status = await client.cluster_status()
        spread = ", ".join(f"{n['id']}: {n.get('objects', 0)}" for n in status["nodes"]
                           if n["role"] == "target")
        rows.append(["placement (HRW)", spread, f"map v{status['map_version']}", ""])
    return rows, failures


@click.command()
@click.option("--single-cluster", is_flag=True,
              help="Run the single-cluster round trip instead of the two-zone scenario.")
@click.option("--files", default=300, show_default=True, type=click.IntRange(1),
              help="Small files: 4-68 KiB each (two zones), 8-264 KiB (--single-cluster).")
@click.option("--shards", default=4, show_default=True, type=click.IntRange(0),
              help="Large shard files.")
@click.option("--shard-mib", type=click.IntRange(1),
              help="Size of each shard in MiB.  [default: 4; 16 with --single-cluster]")
@click.option("--targets", default=2, show_default=True, type=click.IntRange(1, 8),
              help="Targets per zone (two zones; --single-cluster always starts 3).")
@click.option("--every", default=3.0, show_default=True, type=click.FloatRange(1),
              help="Seconds between scheduled runs (two zones).")
@click.option("--timeout", default=90.0, show_default=True, type=click.FloatRange(5),
              help="Seconds to wait for any one step (two zones).")
@click.option("--jobs", default=16, show_default=True, type=click.IntRange(1),
              help="Concurrent requests (--single-cluster).")
@click.option("--keep", is_flag=True, help="Leave the cluster(s) running and print how to stop "
                                           "them.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars (--single-cluster; default: when stderr is a terminal).")
def demo(single_cluster: bool, files: int, shards: int, shard_mib: int | None, targets: int,
         every: float, timeout: float, jobs: int, keep: bool, progress: bool | None) -> None:
    """Run the end-to-end scenario on this machine (no cloud account needed).

    \b
    Default, two zones: an fs:// directory as the source of truth, zone-a and zone-b
    (1 proxy + 2 targets each) on loopback. A schedule in zone-a syncs the dataset; files
    change behind its back and the next run syncs exactly those; zone-b reads the dataset
    from zone-a's cache (peer-first); a checkpoint written in zone-a reaches zone-b by a
    scheduled feed-following sync; then each bucket's freshness. About half a minute.

    \b
    --single-cluster: 1 proxy + 3 targets; uploads a generated dataset, lists it, reads every
    object back and verifies it byte for byte, checks a range read.

    Prints a report and stops everything. Exit status 0 means every check passed.

    \b
    Example:
      aisync demo
      aisync demo --single-cluster --files 1000 --shards 8
    """
    if not single_cluster:
        if files < 10:
            raise UsageFailure("the two-zone demo needs --files 10 or more")
        run_two_zones(files=files, shards=shards, shard_mib=shard_mib or 4, targets=targets,
                      every=every, timeout=timeout, keep=keep)
        return
    shard_mib = shard_mib or 16
    progress = sys.stderr.isatty() if progress is None else progress
    work = Path(tempfile.mkdtemp(prefix="aisync-demo-"))
    cluster_dir = work / "cluster"
    cmd = [sys.executable, "-m", "aisync", "cluster"]
    try:
        click.echo(f"starting a local cluster in {cluster_dir} ...")
        up = subprocess.run(cmd + ["up", "--targets", "3", "--port", "0", "--detach",
                                   "--dir", str(cluster_dir)], capture_output=True, text=True)
        if up.returncode != 0:
            raise CliError(f"cluster up failed:\n{up.stderr.strip()}")
        endpoint = (read_state(cluster_dir) or {}).get("endpoint")
        if not endpoint:
            raise CliError(f"cluster up left no endpoint in {cluster_dir}")
        click.echo(f"cluster is up at {endpoint}; generating the dataset ...")
        dataset = work / "dataset"
        sums = _generate(dataset, files, shards, shard_mib)
        token = (cluster_dir / TOKEN_FILE).read_text().strip()
        rows, failures = asyncio.run(_scenario(endpoint, token, dataset, sums, jobs, progress))
        click.echo("")
        print_table(rows, ["step", "what", "size", "result"])
        click.echo("")
        if failures:
            raise CliError(f"demo FAILED: {failures} check(s) did not pass")
        click.echo("demo passed: every object round-tripped byte for byte")
        if keep:
            click.echo(f"cluster left running: --endpoint {endpoint}; stop it with "
                       f"`aisync cluster down --dir {cluster_dir}`")
    finally:
        if not keep:
            subprocess.run(cmd + ["down", "--dir", str(cluster_dir), "--purge"],
                           capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
