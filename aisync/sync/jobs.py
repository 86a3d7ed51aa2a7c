"""Jobs: prefetch, copy, sync and evict, planned on the primary proxy, executed by the targets.

A job compares two sides, both streamed in key order (:func:`aisync.sync.diff.merge_diff`):

==========  ==========================================  ============================================
kind        compared                                     actions
==========  ==========================================  ============================================
prefetch    source listing vs the cluster's copies      fetch new ones (``--latest``: changed too)
sync        source listing vs the cluster's copies      fetch new and changed; ``--delete``: remove
            (or vs ``destination``'s copies)            copies the source no longer has
copy        source bucket vs ``destination``            copy new and changed; never deletes
evict       the cluster's copies                         remove them (the source is untouched)
==========  ==========================================  ============================================

Each action goes to the target that owns the object (HRW), in batches, so every target works
in parallel on its own objects; results come back per object and are persisted as the job's
report (added / updated / deleted / evicted / skipped / failed, with the reason) in the catalog.

**Fail closed.** Deletes are spooled to disk while listing and applied only after the listing
completed, within ``max_delete``, and without a suspicious shrink (:func:`decide_deletes`); a
listing error fails the job and deletes nothing. A sync whose deletes were refused ends in its
own final state, ``deletes-refused`` (not ``succeeded``), with the reason in ``error``.

Final states: ``succeeded``; ``deletes-refused``; ``failed`` (an error, or any object failed,
which wins over refused deletes); ``aborted``.

**Resume.** The job's ``checkpoint`` is the last name such that every change up to it is done;
it is saved with the progress about once a second. A restarted primary re-runs unfinished jobs
from their checkpoint; objects finished before the crash compare equal and are not copied again.

**Change feeds.** A sync whose source is a bucket of a remote aisync cluster
(``ais://@alias/name``) follows that bucket's change feed from the cursor its previous run saved,
instead of listing; a gap in the feed (the peer lost history) falls back to the listing diff,
which saves the feed head taken before it listed.

**Version pinning and retries** happen on the targets (:mod:`aisync.sync.executor`): each action
carries the version the planner compared, and a target reads exactly that version or retries.

The planner reaches the cluster through :class:`JobPorts` (implemented by the proxy), so this
module knows nothing of HTTP or of the cluster map.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aisync.backends.base import ListEntry, VersionToken
from aisync.catalog import Catalog
from aisync.sync.diff import Change, DeleteSpool, MaxDelete, decide_deletes, merge_diff
from aisync.sync.jobspec import (
    DELETES_REFUSED,
    FINAL_STATES,
    JobKind,
    JobSpec,
    Progress,
    new_job_id,
    parse_spec,
)
from aisync.sync.limits import backoff_delays, is_transient
from aisync.util.errors import AisyncError, ChangeFeedGap

log = logging.getLogger("aisync.jobs")



def _now() -> datetime:
    return datetime.now(UTC)


__all__ = ["DELETES_REFUSED", "FINAL_STATES", "JobKind", "JobPorts", "JobRunner", "JobSpec",
           "Progress", "new_job_id", "parse_spec"]

class JobPorts(Protocol):
    """What the planner needs from the cluster (the proxy implements it)."""

    def source_listing(self, spec: JobSpec, start_after: str | None
                       ) -> AsyncIterator[ListEntry]: ...

    def cached_listing(self, spec: JobSpec, start_after: str | None
                       ) -> AsyncIterator[tuple[str, VersionToken | None]]: ...

    def owner(self, spec: JobSpec, name: str) -> str: ...

    def target_count(self) -> int: ...

    async def execute(self, target: str, job_id: str, spec: JobSpec,
                      actions: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    async def abort_on_targets(self, job_id: str) -> None: ...

    async def settle_on_targets(self, job_id: str) -> None: ...

    async def feed_cursor(self, spec: JobSpec) -> int | None:
        """Where the last feed-driven sync of this source into this destination stopped, or
        None when the source has no change feed (or no sync ran yet)."""

    async def feed_head(self, spec: JobSpec) -> int | None:
        """The source feed's current head (None: the source has no change feed)."""

    async def feed_page(self, spec: JobSpec, since: int
                        ) -> tuple[list[dict[str, Any]], int, bool]:
        """Changes after ``since``: (changes, next cursor, more); ``ChangeFeedGap`` when the
        feed no longer reaches back to ``since``."""

    async def save_feed_cursor(self, spec: JobSpec, cursor: int) -> None: ...

    async def finished(self, job: dict[str, Any], spec: JobSpec, verified_at: datetime | None
                       ) -> None: ...


_ACTION_OF = {  # (job kind, change kind) -> executor op; None: nothing to do
    ("prefetch", "new"): "fetch", ("sync", "new"): "fetch", ("copy", "new"): "copy",
    ("sync", "changed"): "fetch", ("copy", "changed"): "copy",
}


class JobRunner:
    """Runs jobs on the primary: one asyncio task per running job."""

    def __init__(self, catalog: Catalog, ports: JobPorts, run_blocking,
                 spool_dir: Path, *, in_flight_per_target: int = 2) -> None:
        self.catalog, self.ports, self.run_blocking = catalog, ports, run_blocking
        self.spool_dir = Path(spool_dir)
        self.in_flight_per_target = in_flight_per_target
        self.tasks: dict[str, asyncio.Task] = {}
        self._aborting: set[str] = set()
        self._finished = asyncio.Condition()

    # -- control --
    async def submit(self, spec: JobSpec, *, schedule: str | None = None) -> dict[str, Any]:
        job = await self.run_blocking(self.catalog.create_job, {
            "id": new_job_id(), "kind": spec.kind, "bucket": spec.bucket,
            "destination": spec.destination, "params": spec.model_dump(mode="json"),
            "dry_run": spec.dry_run, "schedule": schedule})
        self._start(job)
        return job

    def _start(self, job: dict[str, Any]) -> None:
        task = asyncio.create_task(self._run(job), name=f"job {job['id']}")
        self.tasks[job["id"]] = task
        task.add_done_callback(lambda _t, jid=job["id"]: self.tasks.pop(jid, None))

    async def resume_unfinished(self) -> list[str]:
        """Restart every job the catalog says is pending or running (after a restart)."""
        jobs = await self.run_blocking(
            lambda: self.catalog.list_jobs(states=["pending", "running"], limit=10_000))
        for job in jobs:
            if job["id"] not in self.tasks:
                log.info("resuming job %s (%s %s) from %r", job["id"], job["kind"],
                         job["bucket"], job.get("checkpoint"))
                self._start(job)
        return [j["id"] for j in jobs]

    async def abort(self, job_id: str) -> dict[str, Any]:
        job = await self.run_blocking(self.catalog.get_job, job_id)
        if job["state"] in FINAL_STATES:
            return job
        self._aborting.add(job_id)
        task = self.tasks.get(job_id)
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        else:
            await self.run_blocking(lambda: self.catalog.update_job(
                job_id, state="aborted", finished_at=_now(), error="aborted by request"))
        await self.ports.abort_on_targets(job_id)
        return await self.run_blocking(self.catalog.get_job, job_id)

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once it finished, or as it is after ``timeout`` seconds."""
        task = self.tasks.get(job_id)
        if task is not None and timeout > 0:
            await asyncio.wait([task], timeout=timeout)
        return await self.run_blocking(self.catalog.get_job, job_id)

    async def close(self) -> None:
        """Stop running jobs without marking them finished: they resume at the next start."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def running(self, job_id: str) -> bool:
        return job_id in self.tasks

    # -- one job --
    async def _run(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        spec = JobSpec.model_validate(job["params"])
        run = _JobRun(self, job, spec)
        try:
            await self.run_blocking(lambda: self.catalog.update_job(
                job_id, state="running", started_at=job.get("started_at") or _now()))
            verified_at = await run.execute()
            if run.progress.counts["failed"] and not spec.dry_run:
                state = "failed"
            elif run.deletes_refused:
                state = DELETES_REFUSED
            else:
                state = "succeeded"
            await self._finish(job_id, state, run, run.error)
            final = await self.run_blocking(self.catalog.get_job, job_id)
            try:
                await self.ports.finished(final, spec, verified_at if state == "succeeded"
                                          else None)
            except Exception:
                log.exception("job %s: post-job bookkeeping failed", job_id)
        except asyncio.CancelledError:
            if job_id in self._aborting:
                self._aborting.discard(job_id)
                await asyncio.shield(self._finish(job_id, "aborted", run, "aborted by request"))
                await asyncio.shield(self.ports.abort_on_targets(job_id))
            else:  # node shutting down: keep "running" so the next start resumes it
                await asyncio.shield(run.save())
            raise
        except Exception as exc:
            log.warning("job %s failed: %s", job_id, exc)
            message = exc.message if isinstance(exc, AisyncError) else f"{type(exc).__name__}: {exc}"
            await self._finish(job_id, "failed", run, message)
            try:
                final = await self.run_blocking(self.catalog.get_job, job_id)
                await self.ports.finished(final, spec, None)
            except Exception:
                log.exception("job %s: post-job bookkeeping failed", job_id)

    async def _finish(self, job_id: str, state: str, run: _JobRun, error: str | None) -> None:
        await run.flush_reports()
        await self.run_blocking(lambda: self.catalog.update_job(
            job_id, state=state, finished_at=_now(), progress=run.progress.as_dict(),
            checkpoint=run.checkpoint, error=error))
        log.info("job %s %s: %s", job_id, state, run.progress.as_dict(),
                 extra={"job": job_id})


class _JobRun:
    """The state of one execution of one job (fresh or resumed)."""

    SAVE_EVERY = 1.0
    WINDOW = 4096  # changes listed but not yet known done, at most

    def __init__(self, runner: JobRunner, job: dict[str, Any], spec: JobSpec) -> None:
        self.runner, self.job, self.spec = runner, job, spec
        self.job_id = job["id"]
        self.ports = runner.ports
        self.progress = Progress(job.get("progress"))
        self.checkpoint: str | None = job.get("checkpoint")
        self.error: str | None = None
        self.deletes_refused = False  # decide_deletes said no: the job ends DELETES_REFUSED
        self._order: collections.deque[list] = collections.deque()  # [name, done] in key order
        self._batches: dict[str, list[tuple[list, dict[str, Any]]]] = {}
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._room = asyncio.Condition()
        self._reports: list[dict[str, Any]] = []
        self._saved_at = time.monotonic()
        self._stale = 0  # copies the source no longer has, or has in another version
        self._source_count = int((job.get("progress") or {}).get("source_objects", 0))
        self._cached_count = int((job.get("progress") or {}).get("cached_objects", 0))
        # Where the diff starts. A resumed sync that propagates deletes diffs from the top again:
        # deletes are planned from a complete listing only, and objects copied before the
        # interruption now compare equal, so nothing is copied twice.
        self.start_after = self.checkpoint
        if spec.kind == "sync" and spec.delete and self.checkpoint is not None:
            self.start_after = None
            self._source_count = self._cached_count = 0
            self.progress.counts["listed"] = self.progress.counts["unchanged"] = 0

    # -- bookkeeping --
    async def save(self) -> None:
        await self.flush_reports()
        progress = self.progress.as_dict()
        progress.update(source_objects=self._source_count, cached_objects=self._cached_count)
        await self.runner.run_blocking(lambda: self.runner.catalog.update_job(
            self.job_id, progress=progress, checkpoint=self.checkpoint))
        self._saved_at = time.monotonic()

    async def flush_reports(self) -> None:
        if self._reports:
            rows, self._reports = self._reports, []
            await self.runner.run_blocking(self.runner.catalog.record_reports, self.job_id, rows)

    def _advance(self) -> None:
        while self._order and self._order[0][1]:
            self.checkpoint = self._order.popleft()[0]

    async def _maybe_save(self) -> None:
        self._advance()
        if time.monotonic() - self._saved_at >= self.SAVE_EVERY or len(self._reports) >= 1000:
            await self.save()

    def _report(self, name: str, action: str, reason: str | None = None,
                size: int | None = None, version: dict | None = None) -> None:
        self._reports.append({"name": name, "action": action, "reason": reason, "size": size,
                              "version": version})

    # -- the plan --
    async def execute(self) -> datetime | None:
        """Run the job to its end; returns when the source was verified (a whole-bucket sync
        that left the cluster matching the listing) or None."""
        try:
            return await self._execute()
        except BaseException:
            await self._cancel_batches()
            raise

    async def _execute(self) -> datetime | None:
        spec = self.spec
        if self.job.get("started_at"):  # resumed: let batches of the interrupted run finish
            await self.ports.settle_on_targets(self.job_id)
        if spec.kind == "evict":
            await self._evict()
            return None
        if spec.kind == "sync" and not spec.dry_run:
            cursor = await self.ports.feed_cursor(spec)
            if cursor is not None:
                try:
                    return await self._follow_feed(cursor)
                except ChangeFeedGap as gap:
                    self.progress.note = f"change feed gap ({gap.message}): listed instead"
                    log.info("job %s: %s", self.job_id, self.progress.note)
            head = await self.ports.feed_head(spec)  # before listing: replayed changes are
            verified = await self._list_and_diff()    # idempotent, missed ones are not
            if head is not None and not self.progress.counts["failed"] and not spec.prefix:
                await self.ports.save_feed_cursor(spec, head)
            return verified
        return await self._list_and_diff()

    async def _follow_feed(self, cursor: int) -> datetime | None:
        """Apply the source's changes after ``cursor``, page by page (each page drained before
        the next, so a name's later change never overtakes an earlier one); the cursor is saved
        after every page, so an interrupted job resumes where it stopped."""
        spec, counts = self.spec, self.progress.counts
        self.progress.note = "following the source's change feed"
        while True:
            changes, cursor_next, more = await self.ports.feed_page(spec, cursor)
            last: dict[str, dict[str, Any]] = {}
            for change in changes:  # the newest change of each name wins
                if change["name"].startswith(spec.prefix):
                    last[change["name"]] = change
            for name, change in last.items():
                counts["listed"] += 1
                counts["planned"] += 1
                if change["op"] == "delete":
                    await self._queue({"op": "delete", "name": name, "outcome": "deleted",
                                       "reason": f"deleted at the source (feed {change['seq']})"},
                                      ordered=False)
                else:
                    checksum = change.get("checksum") or ""
                    version = {"size": change.get("size") or 0,
                               "etag": checksum.partition(":")[2] or None}
                    op = "copy" if spec.destination else "fetch"
                    await self._queue({"op": op, "name": name, "version": version,
                                       "outcome": "copied",
                                       "reason": f"changed at the source (feed {change['seq']})"},
                                      ordered=False)
            await self._drain()
            cursor = cursor_next
            if not self.progress.counts["failed"]:
                await self.ports.save_feed_cursor(spec, cursor)
            await self.save()
            if not more:
                break
        if self.progress.counts["failed"] or spec.prefix:
            return None
        return datetime.fromtimestamp(cursor / 1e9, UTC)

    async def _list_and_diff(self) -> datetime | None:
        spec = self.spec
        listing_started = _now()
        spool_dir = self.runner.spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)
        with DeleteSpool(spool_dir) as spool:
            source = self._counted_source(self.ports.source_listing(spec, self.start_after))
            cached = self._counted_cached(self.ports.cached_listing(spec, self.start_after))
            async for change in merge_diff(source, cached, start_after=self.start_after):
                await self._plan(change, spool)
                await self._maybe_save()
            await self._drain()
            self._advance()
            matches = await self._deletes(spool)
        verifying = spec.kind == "sync" or (spec.kind == "prefetch" and spec.latest)
        if (not verifying or spec.prefix or spec.dry_run or self.progress.counts["failed"]
                or not matches):
            return None
        return listing_started

    async def _counted_source(self, entries: AsyncIterator[ListEntry]):
        async for entry in entries:
            self._source_count += 1
            yield entry

    async def _counted_cached(self, entries):
        async for entry in entries:
            self._cached_count += 1
            yield entry

    async def _plan(self, change: Change, spool: DeleteSpool) -> None:
        spec, counts = self.spec, self.progress.counts
        counts["listed"] += 1
        if change.kind == "deleted":
            self._stale += 1
            if spec.kind == "sync" and spec.delete:
                spool.append(change)
                counts["planned"] += 1
            await self._done(change.name)
            return
        op = _ACTION_OF.get((spec.kind, change.kind))
        if change.kind == "changed" and spec.kind == "prefetch" and spec.latest:
            op = "fetch"
        if op is None:
            counts["unchanged"] += 1
            if change.kind == "changed":
                self._stale += 1
            await self._done(change.name)
            return
        counts["planned"] += 1
        outcome = "added" if change.kind == "new" else "updated"
        assert change.source is not None
        if spec.dry_run:
            self._report(change.name, f"would-{'add' if outcome == 'added' else 'update'}",
                         change.reason, change.source.size, change.source.to_dict())
            counts["skipped"] += 1
            await self._done(change.name)
            return
        await self._queue({"op": op, "name": change.name, "version": change.source.to_dict(),
                           "outcome": outcome, "reason": change.reason})

    async def _evict(self) -> None:
        spec = self.spec
        async for name, token in self.ports.cached_listing(spec, self.checkpoint):
            self.progress.counts["listed"] += 1
            self.progress.counts["planned"] += 1
            if spec.dry_run:
                self._report(name, "would-evict", None, token.size if token else None)
                self.progress.counts["skipped"] += 1
                await self._done(name)
            else:
                await self._queue({"op": "evict", "name": name, "outcome": "evicted"})
            await self._maybe_save()
        await self._drain()
        self._advance()

    async def _deletes(self, spool: DeleteSpool) -> bool:
        """Apply spooled deletes if :func:`decide_deletes` allows (the listing completed: this
        runs only after it); True when the destination now matches the listing."""
        spec = self.spec
        if not (spec.kind == "sync" and spec.delete) or not len(spool):
            return self._stale == 0
        decision = decide_deletes(len(spool), self._cached_count, self._source_count,
                                  listing_complete=True,
                                  max_delete=MaxDelete.parse(spec.max_delete),
                                  shrink_limit=spec.shrink_limit)
        if not decision.allowed:
            self.progress.note = f"deletes refused: {decision.reason}"
            self.error = self.progress.note
            self.deletes_refused = True
            for change in spool:
                self._report(change.name, "skipped", f"delete refused: {decision.reason}",
                             change.cached.size if change.cached else None)
                self.progress.counts["skipped"] += 1
            return False
        for change in spool:
            if spec.dry_run:
                self._report(change.name, "would-delete", change.reason,
                             change.cached.size if change.cached else None)
                self.progress.counts["skipped"] += 1
                continue
            await self._queue({"op": "delete", "name": change.name, "outcome": "deleted",
                               "reason": change.reason}, ordered=False)
            await self._maybe_save()
        await self._drain()
        return self.progress.counts["failed"] == 0

    # -- dispatch --
    async def _wait_room(self) -> None:
        """Bound the changes held between the listing and the checkpoint: when the window is
        full, send the partial batches (they hold the oldest undone names) and wait."""
        if len(self._order) < self.WINDOW:
            return
        for target in list(self._batches):
            await self._dispatch(target)
        async with self._room:
            await self._room.wait_for(lambda: len(self._order) < self.WINDOW)

    async def _done(self, name: str) -> None:
        await self._wait_room()
        self._order.append([name, True])

    async def _queue(self, action: dict[str, Any], *, ordered: bool = True) -> None:
        if ordered:
            await self._wait_room()
        marker = [action["name"], False]
        if ordered:
            self._order.append(marker)
        target = self.ports.owner(self.spec, action["name"])
        batch = self._batches.setdefault(target, [])
        batch.append((marker, action))
        if len(batch) >= self.spec.batch:
            await self._dispatch(target)

    async def _dispatch(self, target: str) -> None:
        batch = self._batches.pop(target, [])
        if not batch:
            return
        async with self._room:
            await self._room.wait_for(
                lambda: self._in_flight.get(target, 0) < self.runner.in_flight_per_target)
            self._in_flight[target] = self._in_flight.get(target, 0) + 1
        task = asyncio.create_task(self._send(target, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        for target in list(self._batches):
            await self._dispatch(target)
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _cancel_batches(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _send(self, target: str, batch: list[tuple[list, dict[str, Any]]]) -> None:
        try:
            results = await self._execute_with_retries(target, batch)
        finally:
            async with self._room:
                self._in_flight[target] -= 1
                self._room.notify_all()
        for (marker, action), result in zip(batch, results, strict=True):
            self._record(action, result)
            marker[1] = True
        async with self._room:
            self._advance()
            self._room.notify_all()
        await self._maybe_save()  # progress visible while batches complete

    async def _execute_with_retries(self, target: str, batch) -> list[dict[str, Any]]:
        """Send a batch; when its target is unreachable, retry with backoff, re-resolving each
        object's owner (the cluster map may have moved it). Gives up with per-object failures."""
        actions = [a for _, a in batch]
        delays = backoff_delays(8, base=0.5, cap=10.0)
        while True:
            try:
                groups: dict[str, list[int]] = {}
                for i, action in enumerate(actions):
                    groups.setdefault(self.ports.owner(self.spec, action["name"]), []).append(i)
                results: list[dict[str, Any] | None] = [None] * len(actions)
                answers = await asyncio.gather(*(
                    self.ports.execute(t, self.job_id, self.spec, [actions[i] for i in idx])
                    for t, idx in groups.items()))
                for (_, idx), answer in zip(groups.items(), answers, strict=True):
                    for i, result in zip(idx, answer, strict=True):
                        results[i] = result
                return [r for r in results if r is not None]
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = next(delays, None)
                if delay is None:
                    reason = f"no target could run it: {exc}"
                    return [{"status": "failed", "reason": reason} for _ in actions]
                log.info("job %s: batch for %s failed (%s); retrying", self.job_id, target, exc)
                await asyncio.sleep(delay)

    def _record(self, action: dict[str, Any], result: dict[str, Any]) -> None:
        counts = self.progress.counts
        status = result.get("status", "failed")
        name = action["name"]
        if status == "done":
            outcome = result.get("outcome") or action["outcome"]
            counts[outcome] = counts.get(outcome, 0) + 1
            counts["bytes"] += int(result.get("bytes", 0))
            self._report(name, outcome, result.get("reason") or action.get("reason"),
                         result.get("size"), result.get("version"))
        elif status == "skipped":
            counts["skipped"] += 1
            self._report(name, "skipped", result.get("reason"), None, None)
        else:
            counts["failed"] += 1
            self._report(name, "failed", result.get("reason", "unknown error"), None, None)
