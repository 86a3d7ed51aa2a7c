"""``aisync demo``: the two-zone scenario on one machine, no cloud account needed.

A source of truth (an ``fs://`` directory), then zone-a and zone-b, two clusters on loopback
started with ``aisync cluster up``. Both cache the source as the same bucket; zone-b attaches
zone-a as a remote and reads peer-first. The scenario, through the SDK:

1. a schedule in zone-a syncs the bucket; its first run caches the dataset;
2. files change behind aisync's back (same-size rewrites, additions, deletions); the next
   scheduled run detects and syncs exactly those;
3. zone-b reads the dataset: zone-a's cache serves it (bytes from the peer vs the source);
4. a checkpoint written in zone-a reaches zone-b by a scheduled feed-following sync;
5. the freshness of each bucket, and a verdict.

Exit status 0 means every check passed. Both clusters are always stopped (also on failure,
Ctrl-C or SIGTERM) unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import xxhash

from aisync.cli.bucket import describe_freshness, format_duration, format_time
from aisync.cli.cluster import child_env
from aisync.cli.common import CliError, human_bytes, print_table
from aisync.cli.state import read_state
from aisync.client import AsyncClient
from aisync.client.aio import TOKEN_FILE
from aisync.client.types import JOB_FINAL_STATES

T = TypeVar("T")
DATASET = "fs://datasets"
CKPT = "ais://checkpoints"
CKPT_NAME = "step-100.pt"
CKPT_MIB = 8
SYNC_SCHEDULE = "datasets-sync"
CKPT_SCHEDULE = "ckpt-from-a"
ZONES = ("zone-a", "zone-b")
POLL = 0.2


# -- the source of truth ---------------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically (temp file + rename), as well-behaved writers do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _generate(root: Path, files: int, shards: int, shard_mib: int) -> dict[str, str]:
    """Write the dataset; returns {relative name: xxh3 hex}."""
    sums: dict[str, str] = {}
    for i in range(files):
        rel = f"images/{i // 100:03d}/{i:06d}.jpg"
        data = os.urandom(4096 + (i * 7919) % (64 * 1024))
        _write(root / rel, data)
        sums[rel] = xxhash.xxh3_64_hexdigest(data)
    for i in range(shards):
        rel = f"shards/train-{i:04d}.tar"
        data = os.urandom(shard_mib << 20)
        _write(root / rel, data)
        sums[rel] = xxhash.xxh3_64_hexdigest(data)
    return sums


def _change(root: Path, sums: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """The out-of-band change: 3 same-size rewrites, 5 new files, 4 deletions."""
    images = sorted(n for n in sums if n.startswith("images/"))
    rewritten, deleted = images[1:4], images[-4:]
    added = [f"images/new/{i:06d}.jpg" for i in range(5)]
    for rel in rewritten:
        data = os.urandom((root / rel).stat().st_size)
        _write(root / rel, data)
        sums[rel] = xxhash.xxh3_64_hexdigest(data)
    for rel in added:
        data = os.urandom(20_000 + 1000 * len(rel))
        _write(root / rel, data)
        sums[rel] = xxhash.xxh3_64_hexdigest(data)
    for rel in deleted:
        (root / rel).unlink()
        del sums[rel]
    return rewritten, added, deleted


# -- the clusters ----------------------------------------------------------------------------


def _aisync(*args: str) -> list[str]:
    return [sys.executable, "-m", "aisync", *args]


def _start_zones(work: Path, targets: int, source: Path) -> dict[str, str]:
    """``aisync cluster up`` for zone-a, then for zone-b, which names zone-a as a remote it may
    attach (its URL and its admin token); both may serve fs:// buckets under ``source``.
    Returns {zone: endpoint}."""
    endpoints: dict[str, str] = {}
    for zone in ZONES:
        args = ["cluster", "up", "--name", zone, "--targets", str(targets), "--port", "0",
                "--detach", "--dir", str(work / zone), "--fs-root", str(source)]
        if zone == "zone-b":
            args += ["--remote", f"zone-a={endpoints['zone-a']}",
                     "--remote-token-file", f"zone-a={work / 'zone-a' / TOKEN_FILE}"]
        proc = subprocess.Popen(_aisync(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=child_env())
        try:
            err = proc.communicate()[1]
        except BaseException:  # Ctrl-C, SIGTERM: `cluster up` stops the nodes it started
            if proc.poll() is None:
                proc.terminate()
            proc.wait()
            raise
        endpoint = (read_state(work / zone) or {}).get("endpoint")
        if proc.returncode != 0 or not endpoint:
            raise CliError(f"{zone}: cluster up failed:\n{err.strip()}")
        endpoints[zone] = endpoint
    return endpoints


def _token_of(work: Path, zone: str) -> str:
    return (work / zone / TOKEN_FILE).read_text().strip()


def _stop_zones(work: Path) -> None:
    """``aisync cluster down --purge`` for both zones, immune to a second Ctrl-C."""
    previous = _set_signal(signal.SIGINT, signal.SIG_IGN)
    try:
        procs = [subprocess.Popen(_aisync("cluster", "down", "--dir", str(work / zone), "--purge"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=child_env(), start_new_session=True)
                 for zone in ZONES if (work / zone).exists()]
        for proc in procs:
            proc.wait()
    finally:
        _set_signal(signal.SIGINT, previous)


def _set_signal(signum: int, handler: Any) -> Any:
    """Install a handler where Python allows it (the main thread); returns the previous one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


# -- polling ---------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    async def until(self, probe: Callable[[], Awaitable[T | None]], what: str) -> T:
        """Poll ``probe`` until it returns something other than None (or time is up)."""
        while True:
            value = await probe()
            if value is not None:
                return value
            if time.monotonic() >= self.end:
                raise CliError(f"demo FAILED: timed out after {self.seconds:.0f}s waiting for "
                               f"{what}")
            await asyncio.sleep(POLL)


async def _scheduled_jobs(client: AsyncClient, schedule: str) -> list[dict]:
    """The jobs a schedule started, newest first."""
    return [j for j in await client.list_jobs(limit=200) if j.get("schedule") == schedule]


async def _run_after(client: AsyncClient, schedule: str, before: set[str],
                     deadline: Deadline, what: str) -> dict:
    """The first run of ``schedule`` not in ``before``, once finished."""
    async def probe() -> dict | None:
        jobs = [j for j in await _scheduled_jobs(client, schedule) if j["id"] not in before]
        done = [j for j in jobs if j["state"] in JOB_FINAL_STATES]
        return done[-1] if done else None
    return await deadline.until(probe, what)


async def _counts(client: AsyncClient, job_id: str) -> dict[str, int]:
    return (await client.get_job_report(job_id, limit=1)).get("counts") or {}


def _seconds(job: dict) -> float:
    try:
        start, end = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
        return (end - start).total_seconds()
    except (KeyError, TypeError, ValueError):
        return 0.0


def _peer_bytes(metrics: str) -> dict[str, int]:
    found = re.findall(r'^aisync_peer_reads_total\{event="(\w+)"\} (\d+)', metrics, re.M)
    return {event: int(value) for event, value in found}


# -- the scenario ----------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed: list[str] = []

    def check(self, label: str, ok: bool, *lines: str) -> None:
        (self.passed if ok else self.failed).append(label)
        click.echo(f"{'ok' if ok else 'FAILED':<7}{label}")
        for line in lines:
            click.echo(f"{'':<7}  {line}")


async def _scenario(zones: dict[str, str], tokens: dict[str, str], source: Path,
                    sums: dict[str, str], every: float,
                    targets: int, timeout: float, report: Report) -> None:
    a_url, b_url = zones["zone-a"], zones["zone-b"]
    async with AsyncClient(a_url, token=tokens["zone-a"]) as a, \
            AsyncClient(b_url, token=tokens["zone-b"]) as b:
        # -- setup: the same bucket in both zones, the peer, the schedules
        for client in (a, b):
            await client.create_bucket(DATASET, settings={"path": str(source)})
            await client.create_bucket(CKPT)
        await b.attach_remote("zone-a")  # as zone-b's configuration names it
        await b.set_bucket_props(DATASET, peers=["zone-a"])
        await a.add_schedule(SYNC_SCHEDULE, every=every,
                             job={"kind": "sync", "bucket": DATASET, "delete": True})
        await b.add_schedule(CKPT_SCHEDULE, every=every,
                             job={"kind": "sync", "bucket": f"ais://@zone-a/{CKPT[6:]}",
                                  "destination": CKPT, "delete": True})
        total = sum((source / n).stat().st_size for n in sums)
        nodes = f"1 proxy + {targets} target{'s' if targets > 1 else ''}"
        for line in (f"source  {DATASET} = {source} ({len(sums)} files, {human_bytes(total)})",
                     f"zone-a  {a_url}  {nodes}",
                     f"        schedule {SYNC_SCHEDULE}: every {every:g}s sync {DATASET} --delete",
                     f"zone-b  {b_url}  {nodes}",
                     f"        remote attach zone-a (remotes.zone-a: {a_url}); "
                     f"bucket props {DATASET} peers=zone-a",
                     f"        schedule {CKPT_SCHEDULE}: every {every:g}s sync "
                     f"ais://@zone-a/{CKPT[6:]} {CKPT} --delete", ""):
            click.echo(line)

        # 1. the first scheduled run caches the dataset in zone-a
        click.echo(f"... waiting for the first run of {SYNC_SCHEDULE}", err=True)
        first = await _run_after(a, SYNC_SCHEDULE, set(), Deadline(timeout),
                                 f"the first run of {SYNC_SCHEDULE}")
        progress = first.get("progress") or {}
        report.check("initial scheduled sync (zone-a)",
                     first["state"] == "succeeded" and progress.get("added") == len(sums)
                     and not progress.get("failed"),
                     f"job {first['id']} {first['state']}: {progress.get('added', 0)} objects "
                     f"added, {human_bytes(progress.get('bytes', 0))} in "
                     f"{format_duration(_seconds(first))}")

        # 2. out-of-band change in the source, detected by the next scheduled run
        settled = {j["id"] for j in await _scheduled_jobs(a, SYNC_SCHEDULE)
                   if j["state"] in JOB_FINAL_STATES}
        rewritten, added, deleted = _change(source, sums)
        seen = {j["id"] for j in await _scheduled_jobs(a, SYNC_SCHEDULE)}
        click.echo("... source changed; waiting for the next scheduled run", err=True)
        await _run_after(a, SYNC_SCHEDULE, seen, Deadline(timeout),
                         f"a run of {SYNC_SCHEDULE} after the change")
        runs = [j for j in await _scheduled_jobs(a, SYNC_SCHEDULE)
                if j["id"] not in settled and j["state"] in JOB_FINAL_STATES]
        got = {"added": 0, "updated": 0, "deleted": 0, "failed": 0}
        for job in runs:
            for action, n in (await _counts(a, job["id"])).items():
                got[action] = got.get(action, 0) + n
        want = {"added": len(added), "updated": len(rewritten), "deleted": len(deleted),
                "failed": 0}
        changed = next((j for j in reversed(runs) if any(
            (j.get("progress") or {}).get(k) for k in ("added", "updated", "deleted"))),
            runs[-1])
        report.check("out-of-band change detected and synced (zone-a)",
                     {k: got.get(k, 0) for k in want} == want
                     and all(j["state"] == "succeeded" for j in runs),
                     f"in the source: {len(rewritten)} rewritten (same size, temp+rename), "
                     f"{len(added)} added, {len(deleted)} deleted",
                     f"job {changed['id']} report: {got['added']} added, {got['updated']} "
                     f"updated, {got['deleted']} deleted, {got['failed']} failed, "
                     f"{(changed.get('progress') or {}).get('unchanged', 0)} unchanged"
                     + (f" (over {len(runs)} runs)" if len(runs) > 1 else ""))

        # 3. zone-b reads the dataset; zone-a's cache serves it
        click.echo("... reading the dataset in zone-b", err=True)
        before = _peer_bytes(await b.metrics())
        sem = asyncio.Semaphore(8)

        async def read(name: str) -> tuple[bool, int]:
            async with sem:
                hasher, size = xxhash.xxh3_64(), 0
                async with b.open_object(DATASET, name) as reader:
                    async for chunk in reader.iter_chunks():
                        hasher.update(chunk)
                        size += len(chunk)
                return hasher.hexdigest() == sums[name], size

        start = time.perf_counter()
        results = await asyncio.gather(*(read(n) for n in sorted(sums)))
        took = time.perf_counter() - start
        after = _peer_bytes(await b.metrics())
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        same = sum(ok for ok, _ in results)
        read_bytes = sum(size for _, size in results)
        report.check("cross-zone read (zone-b, peers=zone-a)",
                     same == len(sums) and delta.get("bytes_from_peers", 0) > 0,
                     f"{same}/{len(sums)} objects identical to the source, "
                     f"{human_bytes(read_bytes)} in {format_duration(took)}",
                     f"bytes from peer (zone-a) {human_bytes(delta.get('bytes_from_peers', 0))}"
                     f", from source {human_bytes(delta.get('bytes_from_sources', 0))}; "
                     f"peer hits {delta.get('peer_hits', 0)}, misses "
                     f"{delta.get('peer_misses', 0)}, errors {delta.get('peer_errors', 0)}")

        # 4. a checkpoint written in zone-a reaches zone-b by the feed-following schedule
        ckpt = os.urandom(CKPT_MIB << 20)
        seen = {j["id"] for j in await _scheduled_jobs(b, CKPT_SCHEDULE)}
        written = time.monotonic()
        await a.put_object(CKPT, CKPT_NAME, ckpt)
        click.echo(f"... {CKPT}/{CKPT_NAME} written in zone-a; waiting for zone-b", err=True)

        async def brought() -> dict | None:
            for job in await _scheduled_jobs(b, CKPT_SCHEDULE):
                if job["id"] in seen or job["state"] not in JOB_FINAL_STATES:
                    continue
                seen.add(job["id"])
                page = await b.get_job_report(job["id"], actions=("added", "updated", "copied"))
                if any(e["name"] == CKPT_NAME for e in page.get("entries") or []):
                    return job
            return None

        job = await Deadline(timeout).until(brought, f"{CKPT_NAME} to reach zone-b")
        lag = time.monotonic() - written
        copy = await b.get_object(CKPT, CKPT_NAME)
        note = (job.get("progress") or {}).get("note") or "listed"
        report.check("checkpoint written in zone-a found in zone-b",
                     copy == ckpt and job["state"] == "succeeded",
                     f"{CKPT}/{CKPT_NAME} ({human_bytes(len(ckpt))}): in zone-b "
                     f"{format_duration(lag)} after the write, bytes "
                     f"{'equal' if copy == ckpt else 'DIFFER'}",
                     f"brought by job {job['id']} of {CKPT_SCHEDULE} ({note})")

        # 5. freshness, in the words of `aisync bucket show`
        click.echo("")
        rows = []
        for zone, client in (("zone-a", a), ("zone-b", b)):
            for bucket in (DATASET, CKPT):
                info = await client.bucket_info(bucket)
                rows.append([zone, bucket, str(info.get("objects", "?")),
                             human_bytes(info.get("bytes", 0)),
                             await _freshness(zone, bucket, info, b)])
        print_table(rows, ["ZONE", "BUCKET", "OBJECTS", "SIZE", "FRESHNESS"])


async def _freshness(zone: str, bucket: str, info: dict, b: AsyncClient) -> str:
    fresh = info.get("freshness")
    if fresh is not None:
        if fresh.get("last_job_id") == fresh.get("job_id"):
            fresh = {**fresh, "last_job_id": None}  # said once is enough
        text = describe_freshness(fresh)
        return text if fresh.get("verified_at") else f"{text} (read peer-first; no sync here)"
    if zone == "zone-a":
        return "local bucket: where the checkpoints are written"
    last = next((j for j in await _scheduled_jobs(b, CKPT_SCHEDULE)
                 if j["state"] == "succeeded"), None)
    if last is None:
        return "never synced"
    started = datetime.fromisoformat(last["started_at"])
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    lag = (datetime.now(UTC) - started).total_seconds()
    return (f"synced from ais://@zone-a/{CKPT[6:]} as of {format_time(last['started_at'])} "
            f"(lag {format_duration(lag)}), job {last['id']}")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_two_zones(*, files: int = 300, shards: int = 4, shard_mib: int = 4, targets: int = 2,
                  every: float = 3.0, timeout: float = 90.0, keep: bool = False) -> None:
    """The whole demo; raises CliError when a check fails. Always tears down unless ``keep``."""
    work = Path(tempfile.mkdtemp(prefix="aisync-demo-"))
    previous = _set_signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    report = Report()
    try:
        click.echo("aisync demo: a source of truth and two zones on this machine "
                   "(no cloud account)")
        source = work / "source"
        sums = _generate(source, files, shards, shard_mib)
        click.echo(f"... starting zone-a and zone-b (1 proxy + {targets} targets each) "
                   f"in {work}", err=True)
        zones = _start_zones(work, targets, source)
        tokens = {zone: _token_of(work, zone) for zone in ZONES}
        asyncio.run(_scenario(zones, tokens, source, sums, every, targets, timeout, report))
        click.echo("")
        checks = len(report.passed) + len(report.failed)
        if report.failed:
            raise CliError(f"demo FAILED: {len(report.failed)} of {checks} checks did not "
                           f"pass: {', '.join(report.failed)}")
        click.echo(f"demo passed: {checks}/{checks} checks in "
                   f"{format_duration(time.monotonic() - started)}")
    finally:
        _set_signal(signal.SIGTERM, previous)
        if keep:
            click.echo("clusters left running; stop them with " + " and ".join(
                f"`aisync cluster down --dir {work / z} --purge`" for z in ZONES), err=True)
        else:
            click.echo("... stopping both zones", err=True)
            _stop_zones(work)
            shutil.rmtree(work, ignore_errors=True)
