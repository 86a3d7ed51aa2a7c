"""Schedules: jobs started by cron or interval triggers, on the primary proxy only.

Definitions are cluster metadata (kept in the replicated bucket map, so every node persists them
and whichever proxy is primary finds them); this module turns them into APScheduler 3.x jobs on
an ``AsyncIOScheduler`` and records every fire in the catalog (``schedule_runs``).

* **Single flight.** When a schedule fires while the job it started last is still pending or
  running, the new run is *skipped* and recorded with that job's id as the reason.
* **Misfires.** APScheduler coalesces fire times missed while the loop was busy into one run,
  if it is at most ``misfire_grace`` seconds late (default 10 minutes). Fire times missed while
  no primary was running are handled at start: if the first fire time after the schedule's last
  recorded run has passed, one catch-up run starts when it is within the grace period, and a
  ``skipped`` run ("missed: no primary was running") is recorded otherwise.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aisync.sync.jobs import JobRunner, JobSpec
from aisync.util.errors import describe_validation
from aisync.util.units import parse_duration

log = logging.getLogger("aisync.schedules")

DEFAULT_MISFIRE_GRACE = 600.0


class ScheduleSpec(BaseModel):
    """One schedule: a name, exactly one of ``cron`` (5 fields, UTC) or ``every``, and a job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    cron: str | None = None
    every: float | None = Field(None, gt=0, description="seconds between runs")
    job: JobSpec
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @model_validator(mode="before")
    @classmethod
    def _every(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("every"), str):
            data = {**data, "every": parse_duration(data["every"])}
        return data

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron or every")
        if self.job.dry_run:
            raise ValueError("a scheduled job cannot be a dry run")
        self.trigger()  # a bad cron expression fails here
        return self

    def trigger(self) -> CronTrigger | IntervalTrigger:
        if self.cron is not None:
            try:
                return CronTrigger.from_crontab(self.cron, timezone=UTC)
            except ValueError as exc:
                raise ValueError(f"bad cron expression {self.cron!r}: {exc}") from None
        assert self.every is not None
        return IntervalTrigger(seconds=self.every, timezone=UTC)


def parse_schedule(body: dict[str, Any]) -> ScheduleSpec:
    try:
        return ScheduleSpec.model_validate(body)
    except ValueError as exc:
        raise describe_validation(exc, "invalid schedule") from None


class JobScheduler:
    """Keeps an ``AsyncIOScheduler`` in step with the schedule definitions."""

    def __init__(self, runner: JobRunner, run_blocking, *,
                 misfire_grace: float = DEFAULT_MISFIRE_GRACE) -> None:
        self.runner = runner
        self.catalog = runner.catalog
        self.run_blocking = run_blocking
        self.misfire_grace = misfire_grace
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.specs: dict[str, ScheduleSpec] = {}

    async def start(self, definitions: dict[str, dict[str, Any]]) -> None:
        self.scheduler.start()
        await self.update(definitions, catch_up=True)

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def update(self, definitions: dict[str, dict[str, Any]], *,
                     catch_up: bool = False) -> None:
        """Add, replace and remove APScheduler jobs to match ``definitions``."""
        wanted: dict[str, ScheduleSpec] = {}
        for name, body in definitions.items():
            try:
                wanted[name] = ScheduleSpec.model_validate(body)
            except ValueError as exc:
                log.error("schedule %s is invalid and will not run: %s", name, exc)
        for name in set(self.specs) - set(wanted):
            self._remove(name)
        for name, spec in wanted.items():
            if self.specs.get(name) == spec:
                continue
            self._remove(name)
            self.scheduler.add_job(self.fire, spec.trigger(), args=[name], id=name,
                                   coalesce=True, max_instances=1,
                                   misfire_grace_time=int(self.misfire_grace))
            self.specs[name] = spec
            if catch_up:
                await self._catch_up(spec)

    def _remove(self, name: str) -> None:
        self.specs.pop(name, None)
        if self.scheduler.get_job(name) is not None:
            self.scheduler.remove_job(name)

    def next_run(self, name: str) -> str | None:
        job = self.scheduler.get_job(name)
        when = getattr(job, "next_run_time", None) if job is not None else None
        return when.isoformat() if when else None

    async def _catch_up(self, spec: ScheduleSpec) -> None:
        runs = await self.run_blocking(self.catalog.schedule_runs, spec.name, 1)
        if not runs:
            return
        last = datetime.fromisoformat(runs[0]["fired_at"])
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        if spec.every is not None:
            due = last + timedelta(seconds=spec.every)
        else:
            due = spec.trigger().get_next_fire_time(None, last + timedelta(microseconds=1))
        if due is None or due > now:
            return
        if (now - due).total_seconds() <= self.misfire_grace:
            log.info("schedule %s missed %s while no primary ran: catching up", spec.name, due)
            await self.fire(spec.name)
        else:
            await self.run_blocking(lambda: self.catalog.record_schedule_run(
                spec.name, now, "skipped", None,
                f"missed {due.isoformat()}: no primary was running, beyond the "
                f"{self.misfire_grace:.0f}s misfire grace"))

    async def fire(self, name: str) -> str | None:
        """Start the schedule's job unless its previous one still runs; returns the job id."""
        spec = self.specs.get(name)
        if spec is None:
            return None
        now = datetime.now(UTC)
        active = await self.run_blocking(
            lambda: self.catalog.list_jobs(states=["pending", "running"], limit=10_000))
        busy = [j for j in active if j.get("schedule") == name]
        if busy:
            reason = f"previous run {busy[0]['id']} is still {busy[0]['state']}"
            log.info("schedule %s: skipped, %s", name, reason)
            await self.run_blocking(lambda: self.catalog.record_schedule_run(
                name, now, "skipped", None, reason))
            return None
        try:
            job = await self.runner.submit(spec.job, schedule=name)
        except Exception as exc:
            log.warning("schedule %s could not start its job: %s", name, exc)
            reason = str(exc)
            await self.run_blocking(lambda: self.catalog.record_schedule_run(
                name, now, "failed", None, reason))
            return None
        await self.run_blocking(lambda: self.catalog.record_schedule_run(
            name, now, "started", job["id"], None))
        return job["id"]
