"""The target's half of a job: run a batch of actions on objects this target owns.

Actions (from :mod:`aisync.sync.jobs`), each ``{"op", "name", "version"?, ...}``:

* ``fetch`` — read the object from the bucket's source at exactly the planned ``version``
  (``if_version``) and cache it with that version token;
* ``copy`` — read it from another bucket (pinned the same way) and store it in the destination,
  writing through to the destination's source first when the destination is a cached bucket;
  the copy records its ``origin`` (source bucket and version) so the next run can compare;
* ``delete`` — remove it from the destination (and from the destination's source when the job
  writes through); ``evict`` — drop the cluster's copy only.

**Version pinning.** A read whose version changed under it fails with ``PreconditionFailed``
before anything is committed; the executor then asks the source for the current version and
copies that one instead (reported with a reason), up to ``PIN_ATTEMPTS`` times. Bytes of two
versions are never mixed: each attempt writes a fresh temp file, committed only when complete
(size and, when the source has one, MD5 checked).

**Retries.** Transient errors (throttling, unavailable source) are retried with jittered
exponential backoff (``retries`` attempts); permanent errors become a ``failed`` result with
the error's message. One result per action, in order: ``{"status": "done"|"skipped"|"failed",
"reason", "bytes", "size", "version"}``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from aisync.backends.base import Backend, VersionToken
from aisync.storage.objects import ObjectStore
from aisync.sync.limits import TokenBucket, with_retries
from aisync.util.errors import (
    AisyncError,
    BackendUnavailable,
    ChecksumMismatch,
    Conflict,
    ObjectNotFound,
    PreconditionFailed,
)

log = logging.getLogger("aisync.executor")

PIN_ATTEMPTS = 3


@dataclass(frozen=True)
class BatchContext:
    """Where a batch reads and writes, resolved by the target from the job's buckets."""

    dest_bucket: str                              # unique name of the bucket written/evicted
    source: tuple[Backend, str] | None = None     # where fetch/copy read from
    source_uri: str = ""                          # recorded in a copy's origin
    write_through: tuple[Backend, str] | None = None  # the destination's own source, if any
    bandwidth: float | None = None                # bytes/s for this target's share of the job
    rate: float | None = None                     # actions/s for this target's share
    retries: int = 5
    concurrency: int = 8


@dataclass
class ExecutorStats:
    actions: int = 0
    transferred: int = 0  # objects fetched or copied and committed
    failed: int = 0
    bytes: int = 0
    repinned: int = 0  # objects that changed mid-copy and were copied at their newer version


class JobExecutor:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.stats = ExecutorStats()
        self._limits: collections.OrderedDict[str, tuple[TokenBucket | None,
                                                         TokenBucket | None]] = \
            collections.OrderedDict()
        self._aborted: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._running: dict[str, int] = {}  # batches in progress per job
        self._settled = asyncio.Condition()

    async def settle(self, job_id: str) -> None:
        """Wait until no batch of ``job_id`` runs here (a resumed job's planner calls this
        first, so it never re-plans an object a batch of the interrupted run is still copying)."""
        async with self._settled:
            await self._settled.wait_for(lambda: not self._running.get(job_id))

    def abort(self, job_id: str) -> None:
        self._aborted[job_id] = None
        while len(self._aborted) > 1000:
            self._aborted.popitem(last=False)

    def _pacers(self, job_id: str, ctx: BatchContext) -> tuple[TokenBucket | None,
                                                                TokenBucket | None]:
        pacers = self._limits.get(job_id)
        if pacers is None:
            pacers = (TokenBucket(ctx.bandwidth) if ctx.bandwidth else None,
                      TokenBucket(ctx.rate) if ctx.rate else None)
            self._limits[job_id] = pacers
            while len(self._limits) > 256:
                self._limits.popitem(last=False)
        return pacers

    async def run_batch(self, job_id: str, actions: list[dict[str, Any]],
                        ctx: BatchContext) -> list[dict[str, Any]]:
        if job_id in self._aborted:
            raise Conflict(f"job {job_id} was aborted")
        bandwidth, rate = self._pacers(job_id, ctx)
        gate = asyncio.Semaphore(ctx.concurrency)

        async def one(action: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                if job_id in self._aborted:
                    return {"status": "skipped", "reason": "job aborted"}
                if rate is not None:
                    await rate.take(1)
                self.stats.actions += 1
                try:
                    result = await self._run(action, ctx, bandwidth)
                except AisyncError as exc:
                    result = {"status": "failed", "reason": f"{exc.code}: {exc.message}"}
                except OSError as exc:
                    result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                if result["status"] == "failed":
                    self.stats.failed += 1
                self.stats.bytes += int(result.get("bytes", 0))
                return result

        self._running[job_id] = self._running.get(job_id, 0) + 1
        try:
            return list(await asyncio.gather(*(one(a) for a in actions)))
        finally:
            async with self._settled:
                self._running[job_id] -= 1
                if not self._running[job_id]:
                    del self._running[job_id]
                self._settled.notify_all()

    async def _run(self, action: dict[str, Any], ctx: BatchContext,
                   bandwidth: TokenBucket | None) -> dict[str, Any]:
        op, name = action.get("op"), action.get("name")
        if not isinstance(name, str) or not name:
            return {"status": "failed", "reason": "action without an object name"}
        if op in ("fetch", "copy"):
            return await self._transfer(op, name, action, ctx, bandwidth)
        if op == "delete":
            if ctx.write_through is not None:
                backend, bucket = ctx.write_through
                try:
                    await with_retries(lambda: backend.delete(bucket, name),
                                       attempts=ctx.retries)
                except ObjectNotFound:
                    pass
            return await self._drop(name, ctx)
        if op == "evict":
            return await self._drop(name, ctx)
        return {"status": "failed", "reason": f"unknown action {op!r}"}

    async def _drop(self, name: str, ctx: BatchContext) -> dict[str, Any]:
        try:
            await self.store.delete(ctx.dest_bucket, name)
        except ObjectNotFound:
            return {"status": "skipped", "reason": "no copy in the cluster"}
        return {"status": "done"}

    async def _transfer(self, op: str, name: str, action: dict[str, Any], ctx: BatchContext,
                        bandwidth: TokenBucket | None) -> dict[str, Any]:
        if ctx.source is None:
            return {"status": "failed", "reason": "the job has no source to read from"}
        backend, bucket = ctx.source
        try:
            token = VersionToken.from_dict(action["version"])
        except (KeyError, TypeError) as exc:
            return {"status": "failed", "reason": f"bad planned version: {exc}"}
        reason = None
        for _ in range(PIN_ATTEMPTS):
            try:
                version, written = await with_retries(
                    lambda t=token: self._copy_version(op, backend, bucket, name, t, ctx,
                                                       bandwidth),
                    attempts=ctx.retries)
                self.stats.transferred += 1
                return {"status": "done", "bytes": written, "size": written,
                        "version": version, "reason": reason}
            except PreconditionFailed:
                try:
                    token = await with_retries(lambda: backend.head(bucket, name),
                                               attempts=ctx.retries)
                except ObjectNotFound:
                    return {"status": "skipped", "reason": "deleted at the source during the job"}
                self.stats.repinned += 1
                reason = "changed at the source during the job: copied the newer version"
            except ObjectNotFound:
                return {"status": "skipped", "reason": "deleted at the source during the job"}
        return {"status": "failed",
                "reason": f"kept changing at the source ({PIN_ATTEMPTS} attempts)"}

    async def _copy_version(self, op: str, backend: Backend, bucket: str, name: str,
                            token: VersionToken, ctx: BatchContext,
                            bandwidth: TokenBucket | None) -> tuple[dict, int]:
        """One pinned attempt: read ``token``'s bytes into a temp file, check, commit."""
        writer = self.store.writer(ctx.dest_bucket, name)
        try:
            stream = await backend.open(bucket, name, if_version=token)
            async with stream:
                version = stream.version
                md5 = hashlib.md5(usedforsecurity=False) \
                    if version.md5 and not stream.self_verifying else None
                received = 0
                async for chunk in stream:
                    if bandwidth is not None:
                        await bandwidth.take(len(chunk))
                    if md5 is not None:
                        await asyncio.to_thread(md5.update, chunk)
                    received += len(chunk)
                    await writer.write(chunk)
            if received != version.size:
                raise BackendUnavailable(f"{name}: short read ({received} of {version.size} bytes)")
            if md5 is not None and md5.hexdigest() != version.md5:
                raise ChecksumMismatch(f"{name}: MD5 of the bytes read differs from the source's")
            await writer.finish(expected_size=version.size)
            if op == "fetch":
                await writer.commit(source=version.to_dict())
                return version.to_dict(), received
            origin = {"bucket": ctx.source_uri, "version": version.to_dict()}
            stored = None
            if ctx.write_through is not None:
                dest_backend, dest_bucket = ctx.write_through
                stored = await dest_backend.put(dest_bucket, name, writer.temp)
            await writer.commit(source=stored.to_dict() if stored else None, origin=origin)
            return version.to_dict(), received
        finally:
            await writer.abort()
