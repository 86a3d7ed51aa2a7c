"""Schedules (APScheduler 3 behind ``JobScheduler``) and job pacing, without a cluster: a real
SQLite catalog, and a small runner that records submitted jobs in it."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from aisync.catalog import Catalog
from aisync.sync.jobs import JobSpec
from aisync.sync.limits import TokenBucket, backoff_delays, is_transient, with_retries
from aisync.sync.schedules import JobScheduler, ScheduleSpec, parse_schedule
from aisync.util.errors import BackendUnavailable, InvalidArgument, ObjectNotFound, Throttled
from aisync.util.units import parse_duration, parse_size

JOB = {"kind": "sync", "bucket": "s3://data", "delete": True}


class RecordingRunner:
    """Stands in for the JobRunner: every submitted job is 'running' in the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.ids = (f"j-{i:04d}" for i in itertools.count())

    async def submit(self, spec: JobSpec, *, schedule: str | None = None) -> dict:
        job = self.catalog.create_job({"id": next(self.ids), "kind": spec.kind,
                                       "bucket": spec.bucket, "params": spec.model_dump(),
                                       "schedule": schedule})
        return self.catalog.update_job(job["id"], state="running")


async def blocking(fn, *args):
    return await asyncio.to_thread(fn, *args)


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    cat.upgrade()
    yield cat
    cat.close()


def schedule(**extra) -> dict:
    return ScheduleSpec.model_validate({"name": "nightly", "job": JOB, **extra}).model_dump(
        mode="json")


async def test_single_flight_skips_a_run_while_the_previous_one_runs(catalog):
    scheduler = JobScheduler(RecordingRunner(catalog), blocking)
    await scheduler.start({"nightly": schedule(cron="0 2 * * *")})
    first = await scheduler.fire("nightly")
    assert first is not None
    assert await scheduler.fire("nightly") is None
    runs = catalog.schedule_runs("nightly", 10)
    assert [r["outcome"] for r in runs] == ["skipped", "started"]
    assert first in runs[0]["reason"]
    catalog.update_job(first, state="succeeded")
    assert await scheduler.fire("nightly") is not None
    assert scheduler.next_run("nightly") is not None
    scheduler.stop()


@pytest.mark.parametrize("grace, outcome", [(600.0, "skipped"), (3 * 3600.0, "started")])
async def test_runs_missed_while_no_primary_ran(catalog, grace, outcome):
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    catalog.record_schedule_run("nightly", two_hours_ago, "started", None, None)
    scheduler = JobScheduler(RecordingRunner(catalog), blocking, misfire_grace=grace)
    await scheduler.update({"nightly": schedule(every="1h")}, catch_up=True)
    newest = catalog.schedule_runs("nightly", 1)[0]
    assert newest["outcome"] == outcome
    if outcome == "skipped":
        assert "missed" in newest["reason"]
    scheduler.stop()


async def test_removed_and_invalid_definitions(catalog):
    scheduler = JobScheduler(RecordingRunner(catalog), blocking)
    await scheduler.update({"nightly": schedule(every="30m"), "broken": {"name": "broken"}})
    assert set(scheduler.specs) == {"nightly"}
    await scheduler.update({})
    assert scheduler.specs == {} and scheduler.scheduler.get_job("nightly") is None
    assert await scheduler.fire("nightly") is None


@pytest.mark.parametrize("body, words", [
    ({"name": "x", "job": JOB}, "exactly one"),
    ({"name": "x", "cron": "0 2 * * *", "every": "1h", "job": JOB}, "exactly one"),
    ({"name": "x", "cron": "99 * * * *", "job": JOB}, "cron"),
    ({"name": "x", "every": "sometimes", "job": JOB}, "duration"),
    ({"name": "bad name!", "every": "1h", "job": JOB}, "name"),
    ({"name": "x", "every": "1h", "job": {**JOB, "dry_run": True}}, "dry run"),
    ({"name": "x", "every": "1h", "job": {"kind": "copy", "bucket": "s3://a"}}, "destination"),
])
def test_bad_schedules_are_clear_errors(body, words):
    with pytest.raises(InvalidArgument) as err:
        parse_schedule(body)
    assert words in str(err.value)


def test_units():
    assert parse_duration("5m") == 300 and parse_duration("1h30m") == 5400
    assert parse_duration(90) == 90 and parse_duration("250ms") == 0.25
    assert parse_size("64KiB") == 65536 and parse_size("100MB") == 100_000_000
    for bad in ("", "5x", "m5", "-1"):
        with pytest.raises(InvalidArgument):
            parse_duration(bad)
    for bad in ("lots", "1.5.2MB", "-3"):
        with pytest.raises(InvalidArgument):
            parse_size(bad)


def test_transient_errors_and_backoff():
    assert is_transient(Throttled("slow down")) and is_transient(BackendUnavailable("down"))
    assert is_transient(ConnectionResetError()) and not is_transient(ObjectNotFound("gone"))
    delays = list(backoff_delays(6, base=0.1, cap=1.0))
    assert len(delays) == 6 and all(0 <= d <= min(1.0, 0.1 * 2 ** i)
                                    for i, d in enumerate(delays))


async def test_with_retries_retries_transient_errors_only():
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise Throttled("slow down")
        return "ok"

    assert await with_retries(flaky, attempts=5, base=0.001) == "ok" and len(calls) == 3

    async def gone():
        calls.append(1)
        raise ObjectNotFound("gone")

    calls.clear()
    with pytest.raises(ObjectNotFound):
        await with_retries(gone, attempts=5, base=0.001)
    assert len(calls) == 1

    async def down():
        calls.append(1)
        raise BackendUnavailable("down")

    calls.clear()
    with pytest.raises(BackendUnavailable):
        await with_retries(down, attempts=3, base=0.001)
    assert len(calls) == 3


async def test_token_bucket_paces_to_its_rate():
    bucket = TokenBucket(rate=1000.0, burst=10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):
        await bucket.take(10)  # 50 tokens at 1000/s after a burst of 10: >= 40 ms of waiting
    assert loop.time() - start >= 0.039
    with pytest.raises(ValueError):
        TokenBucket(0)
