"""The proxy's job, schedule, freshness and metrics endpoints, and the planner's cluster ports.

Jobs and schedules live on the primary proxy (its catalog holds job records and reports; the
schedule definitions are in the replicated bucket map). Any other proxy forwards these requests
to the primary. Endpoints (JSON, see docs/api.md):

* ``POST /v1/jobs`` (a :class:`~aisync.sync.jobs.JobSpec`) → 201 the job record
* ``GET /v1/jobs[?state=running&limit=N]``, ``GET /v1/jobs/{id}[?wait=SECONDS]``
* ``POST /v1/jobs/{id}/abort``; ``GET /v1/jobs/{id}/report[?action=..&after=..&limit=..]``
* ``POST /v1/schedules``, ``GET /v1/schedules``, ``GET|DELETE /v1/schedules/{name}``
* ``GET /v1/metrics``: Prometheus text (freshness lag per bucket, jobs by state, on-access
  counters of the targets)
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from aisync.auth import Access
from aisync.backends.base import ListEntry, VersionToken
from aisync.cluster.maps import BucketProps
from aisync.node.http import MATCH, json_answer, json_object, page_limit
from aisync.sync.diff import sharded_entries
from aisync.sync.jobs import FINAL_STATES, JobRunner, JobSpec, parse_spec
from aisync.sync.schedules import JobScheduler, parse_schedule
from aisync.util.errors import (
    AisyncError,
    BucketNotFound,
    InvalidArgument,
    NodeUnavailable,
    ScheduleNotFound,
    error_from_dict,
)
from aisync.util.names import parse_uri, validate_prefix

if TYPE_CHECKING:
    from aisync.proxy.node import ProxyNode

PAGE = 1000
log = logging.getLogger("aisync.jobs")


def _xxh3_token(entry: dict[str, Any]) -> VersionToken:
    """A cluster object's token from its listing entry (size + xxh3 checksum as the ETag)."""
    checksum = entry.get("checksum") or ""
    return VersionToken(size=int(entry["size"]), etag=checksum.partition(":")[2] or None)


async def _merge_pages(streams: list[AsyncIterator[list[dict[str, Any]]]]
                       ) -> AsyncIterator[dict[str, Any]]:
    """K-way merge, by UTF-8 name order, of sorted streams of pages; the next page of each
    stream is fetched in the background while the current one is consumed."""
    def key(entry: dict[str, Any]) -> bytes:
        return entry["name"].encode("utf-8", "surrogatepass")

    async def next_page(stream):
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    pending = [asyncio.ensure_future(next_page(s)) for s in streams]
    try:
        current: list[tuple[list[dict[str, Any]], int] | None] = []
        for i, task in enumerate(pending):
            page = await task
            current.append((page, 0) if page else None)
            pending[i] = asyncio.ensure_future(next_page(streams[i])) if page else None
        heap = [(key(c[0][0]), i) for i, c in enumerate(current) if c is not None]
        heapq.heapify(heap)
        while heap:
            _, i = heapq.heappop(heap)
            page, pos = current[i]
            yield page[pos]
            pos += 1
            if pos == len(page):
                task = pending[i]
                page = await task if task is not None else None
                pending[i] = asyncio.ensure_future(next_page(streams[i])) if page else None
                pos = 0
            current[i] = (page, pos) if page else None
            if page:
                heapq.heappush(heap, (key(page[pos]), i))
    finally:
        for task in pending:
            if task is not None and not task.done():
                task.cancel()
        for task in pending:
            if task is not None:
                try:
                    await task
                except BaseException:  # cancelled, or the error the consumer already saw
                    pass


class ProxyJobs:
    """Routes plus :class:`~aisync.sync.jobs.JobPorts` for the planner (primary only)."""

    def __init__(self, node: ProxyNode) -> None:
        self.node = node
        self.runner: JobRunner | None = None
        self.scheduler: JobScheduler | None = None
        r = node.router
        client = Access.CLIENT
        r.add("POST", "/v1/jobs", self.handle_start, access=client, query=(), body="json")
        r.add("GET", "/v1/jobs", self.handle_list, access=client, query=("state", "limit"))
        r.add("GET", "/v1/jobs/{job}", self.handle_get, access=client, query=("wait",))
        r.add("POST", "/v1/jobs/{job}/abort", self.handle_abort, access=client, query=())
        r.add("GET", "/v1/jobs/{job}/report", self.handle_report, access=client,
              query=("action", "after", "limit"))
        r.add("POST", "/v1/schedules", self.handle_add_schedule, access=client, query=(),
              body="json")
        r.add("GET", "/v1/schedules", self.handle_list_schedules, access=client, query=())
        r.add("GET", "/v1/schedules/{name}", self.handle_get_schedule, access=client,
              query=())
        r.add("DELETE", "/v1/schedules/{name}", self.handle_remove_schedule, access=client,
              query=())
        r.add("GET", "/v1/metrics", self.handle_metrics, access=client, query=())

    # -- lifecycle (primary) --
    async def start(self) -> None:
        node = self.node
        cfg = node.config.sync
        self.runner = JobRunner(node.catalog, self, node.run_blocking,
                                Path(node.config.data_dir) / "job-spool",
                                in_flight_per_target=cfg.batches_in_flight)
        pruned = await node.run_blocking(node.catalog.prune_jobs, cfg.keep_jobs)
        if pruned:
            log.info("pruned %d old job records", pruned)
        await self.runner.resume_unfinished()
        self.scheduler = JobScheduler(self.runner, node.run_blocking,
                                      misfire_grace=cfg.misfire_grace)
        bucket_map = node.state.bucket_map
        await self.scheduler.start(dict(bucket_map.schedules) if bucket_map else {})
        node.state.add_listener(self._on_maps)

    async def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.runner is not None:
            await self.runner.close()

    async def _on_maps(self, cluster_map, bucket_map, old_bucket_map) -> None:
        if self.scheduler is not None and bucket_map is not None:
            await self.scheduler.update(dict(bucket_map.schedules))

    def _primary_runner(self) -> JobRunner | None:
        return self.runner if self.node.is_primary else None

    # -- helpers --
    def _bucket(self, uri: str) -> BucketProps:
        try:
            ref, obj = parse_uri(uri)
        except ValueError as exc:
            raise InvalidArgument(f"bad bucket {uri!r}: {exc}") from None
        if obj:
            raise InvalidArgument(f"{uri!r}: give a bucket, and the object prefix with --prefix")
        bucket_map = self.node.state.bucket_map
        props = bucket_map.get(ref) if bucket_map is not None else None
        if props is None:
            raise BucketNotFound(f"bucket {ref} does not exist")
        return props

    def _normalized(self, spec: JobSpec) -> JobSpec:
        src = self._bucket(spec.bucket)
        changes: dict[str, Any] = {"bucket": str(src.ref),
                                   "prefix": validate_prefix(spec.prefix)}
        for alias in spec.peers:
            self.node.remote_urls(alias)  # RemoteNotFound names an unknown --from
        if spec.peers and (spec.kind != "prefetch" and spec.kind != "sync"):
            raise InvalidArgument("--from applies to prefetch and sync jobs")
        if spec.destination is not None:
            dest = self._bucket(spec.destination)
            if dest.ref == src.ref:
                raise InvalidArgument("the destination is the source bucket")
            changes["destination"] = str(dest.ref)
        elif not src.backed and spec.kind != "evict":
            raise InvalidArgument(f"{src.ref} is not a cached bucket: a {spec.kind} job needs "
                                  f"a source (or give a destination)")
        elif not src.backed:
            raise InvalidArgument(f"{src.ref} is not a cached bucket: nothing to evict")
        return spec.model_copy(update=changes)

    async def _register_remote_buckets(self, spec: JobSpec) -> None:
        """``ais://@alias/name`` buckets of attached remotes are registered on first use."""
        for uri in (spec.bucket, spec.destination):
            if uri and "://@" in uri:
                try:
                    ref, _ = parse_uri(uri)
                except ValueError as exc:
                    raise InvalidArgument(f"bad bucket {uri!r}: {exc}") from None
                await self.node.remotes.ensure_bucket(ref)

    # -- JobPorts --
    async def source_listing(self, spec: JobSpec, start_after: str | None
                             ) -> AsyncIterator[ListEntry]:
        src = self._bucket(spec.bucket)
        if src.backed:
            backend, bucket = await self.node.sources.backend_for(src)
            after = start_after.encode("utf-8", "surrogatepass") if start_after else None
            async for entry in sharded_entries(backend, bucket, spec.prefix):
                if after is None or entry.name.encode("utf-8", "surrogatepass") > after:
                    yield entry
            return
        async for entry in self._cluster_entries(src, spec.prefix, start_after):
            yield ListEntry(entry["name"], _xxh3_token(entry))

    async def cached_listing(self, spec: JobSpec, start_after: str | None
                             ) -> AsyncIterator[tuple[str, VersionToken | None]]:
        if spec.destination is None:
            props = self._bucket(spec.bucket)
            async for entry in self._cluster_entries(props, spec.prefix, start_after):
                source = entry.get("source")
                yield entry["name"], VersionToken.from_dict(source) if source else None
            return
        dest = self._bucket(spec.destination)
        src_is_cluster = not self._bucket(spec.bucket).backed
        async for entry in self._cluster_entries(dest, spec.prefix, start_after):
            origin = entry.get("origin") or {}
            if origin.get("bucket") == spec.bucket and isinstance(origin.get("version"), dict):
                yield entry["name"], VersionToken.from_dict(origin["version"])
            elif src_is_cluster:  # both in this cluster: the xxh3 checksums compare directly
                yield entry["name"], _xxh3_token(entry)
            else:
                yield entry["name"], None

    async def _cluster_entries(self, props: BucketProps, prefix: str,
                               after: str | None) -> AsyncIterator[dict[str, Any]]:
        """The cluster's copies in key order: each active target's own pages, read ahead one
        page at a time, merged (k-way) here. Nothing is read twice; memory is a page per
        target."""
        cluster_map, session = self.node.state.cluster_map, self.node.session
        if cluster_map is None or not cluster_map.active_targets or session is None:
            raise NodeUnavailable("no active targets")
        params = {"provider": props.ref.provider, "prefix": prefix, "limit": str(PAGE)}
        if props.ref.namespace:
            params["namespace"] = props.ref.namespace

        async def pages(url: str) -> AsyncIterator[list[dict[str, Any]]]:
            token = after
            while True:
                query = {**params, **({"token": token} if token else {})}
                try:
                    async with session.get(f"{url}/v1/buckets/{props.name}",
                                           params=query) as resp:
                        body = await json_answer(resp, f"target at {url}")
                        if resp.status != 200:
                            raise error_from_dict(resp.status, body)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    raise NodeUnavailable(f"target at {url} did not list: {exc}") from exc
                if body["objects"]:
                    yield body["objects"]
                token = body.get("next_token")
                if not token:
                    return

        streams = [pages(t.url) for t in cluster_map.active_targets]
        merged = _merge_pages(streams)
        try:
            async for entry in merged:
                yield entry
        finally:
            await merged.aclose()  # settles the read-ahead first
            for stream in streams:
                await stream.aclose()

    def owner(self, spec: JobSpec, name: str) -> str:
        cluster_map = self.node.state.cluster_map
        if cluster_map is None:
            raise NodeUnavailable("no cluster map")
        props = self._bucket(spec.destination or spec.bucket)
        return cluster_map.owner(props.ref, name).id

    def target_count(self) -> int:
        cluster_map = self.node.state.cluster_map
        return max(len(cluster_map.active_targets), 1) if cluster_map else 1

    async def execute(self, target: str, job_id: str, spec: JobSpec,
                      actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cluster_map, session = self.node.state.cluster_map, self.node.session
        if cluster_map is None or target not in cluster_map.nodes or session is None:
            raise NodeUnavailable(f"target {target} is not in the cluster map")
        url = f"{cluster_map.nodes[target].url}/v1/jobs/{job_id}/batch"
        body = {"spec": spec.model_dump(mode="json"), "targets": self.target_count(),
                "actions": actions}
        try:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=10)) as resp:
                answer = await json_answer(resp, f"target {target}")
                if resp.status != 200:
                    raise error_from_dict(resp.status, answer)
                return answer["results"]
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise NodeUnavailable(f"target {target} did not run the batch: {exc}") from exc

    async def _tell_targets(self, job_id: str, verb: str, timeout: float) -> None:
        """``POST /v1/jobs/{job}/{verb}`` on every active target; an unreachable one is
        skipped (it runs nothing of the job)."""
        cluster_map, session = self.node.state.cluster_map, self.node.session
        if cluster_map is None or session is None:
            return

        async def one(url: str) -> None:
            try:
                async with session.post(f"{url}/v1/jobs/{job_id}/{verb}",
                                        timeout=aiohttp.ClientTimeout(total=timeout)):
                    pass
            except (aiohttp.ClientError, TimeoutError):
                pass

        await asyncio.gather(*(one(t.url) for t in cluster_map.active_targets))

    async def abort_on_targets(self, job_id: str) -> None:
        await self._tell_targets(job_id, "abort", 5)

    async def settle_on_targets(self, job_id: str) -> None:
        """Wait until no target still runs a batch of ``job_id`` (from before a restart)."""
        await self._tell_targets(job_id, "settle", 600)

    # -- change feeds (a remote ais:// bucket as the source) --
    def _feed_source(self, spec: JobSpec) -> tuple[list[str], str, dict[str, str]] | None:
        """``(the remote's proxy URLs, the bucket's name there, what authenticates us to it)``
        when the job's source is a bucket of an attached remote cluster."""
        src = self._bucket(spec.bucket)
        if src.provider != "ais" or not src.namespace:
            return None
        return (self.node.remote_urls(src.namespace), src.name,
                self.node.remote_headers(src.namespace))

    async def _feed_get(self, spec: JobSpec, query: dict[str, str]) -> dict[str, Any]:
        feed = self._feed_source(spec)
        assert feed is not None and self.node.session is not None
        urls, name, headers = feed
        last: Exception | None = None
        for url in urls:  # failover between the remote's proxies
            try:
                async with self.node.session.get(
                        f"{url}/v1/buckets/{name}/changes", params=query,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=60)) as resp:
                    body = await json_answer(resp, f"the remote proxy at {url}")
                    if resp.status != 200:
                        raise error_from_dict(resp.status, body)
                    return body
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = exc
        raise NodeUnavailable(f"the change feed of {spec.bucket} is unreachable: {last}")

    async def feed_cursor(self, spec: JobSpec) -> int | None:
        if self._feed_source(spec) is None:
            return None
        dest = self._bucket(spec.destination or spec.bucket).ref.uname
        state = await self.node.run_blocking(self.node.catalog.get_sync_state, dest)
        if not state or state.get("feed_source") != spec.bucket:
            return None
        return state.get("feed_cursor")

    async def feed_head(self, spec: JobSpec) -> int | None:
        if self._feed_source(spec) is None:
            return None
        return int((await self._feed_get(spec, {}))["next"])

    async def feed_page(self, spec: JobSpec, since: int
                        ) -> tuple[list[dict[str, Any]], int, bool]:
        page = await self._feed_get(spec, {"since": str(since), "limit": str(PAGE)})
        return page["changes"], int(page["next"]), bool(page["more"])

    async def save_feed_cursor(self, spec: JobSpec, cursor: int) -> None:
        dest = self._bucket(spec.destination or spec.bucket).ref.uname
        await self.node.run_blocking(lambda: self.node.catalog.set_sync_state(
            dest, feed_source=spec.bucket, feed_cursor=cursor))

    async def finished(self, job: dict[str, Any], spec: JobSpec,
                       verified_at: datetime | None) -> None:
        props = self._bucket(spec.destination or spec.bucket)
        if (spec.kind == "evict" and not spec.prefix and not spec.keep_metadata
                and not spec.dry_run and job["state"] == "succeeded"
                and self.node.primary is not None):
            # Like evicting a remote bucket in AIStore: the whole cached view goes, its
            # registration too, unless --keep-metadata. The source is never touched.
            log.info("job %s evicted all of %s: unregistering the bucket", job["id"], props.ref)
            await self.node.primary.destroy_bucket(props.ref)
            return
        bucket = props.ref.uname
        fields: dict[str, Any] = {"last_job_id": job["id"], "last_job_state": job["state"]}
        if spec.kind == "evict" and not spec.prefix and job["state"] == "succeeded":
            fields.update(verified_at=None, job_id=None)  # the copies no longer match
        if verified_at is not None:
            progress = job.get("progress") or {}
            fields.update(verified_at=verified_at, job_id=job["id"],
                          source_objects=progress.get("listed"))
        if spec.dry_run:
            return
        await self.node.run_blocking(lambda: self.node.catalog.set_sync_state(bucket, **fields))

    # -- freshness --
    async def freshness(self, props: BucketProps) -> dict[str, Any] | None:
        """The bucket's freshness watermark (primary only), as the API shows it."""
        if not props.backed and not self.node.is_primary:
            return None
        state = await self.node.run_blocking(self.node.catalog.get_sync_state, props.ref.uname)
        if state is None:
            return {"verified_at": None, "lag_s": None, "job_id": None, "last_job_id": None,
                    "last_job_state": None}
        verified = state.get("verified_at")
        lag = None
        if verified:
            when = datetime.fromisoformat(verified)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            lag = round((datetime.now(UTC) - when).total_seconds(), 1)
        return {"verified_at": verified, "lag_s": lag, "job_id": state.get("job_id"),
                "last_job_id": state.get("last_job_id"),
                "last_job_state": state.get("last_job_state")}

    # -- routes --
    async def _forwarded(self, request: web.BaseRequest) -> web.Response | None:
        if self.node.is_primary:
            return None
        return await self.node._forward_to_primary(request)

    def _runner(self) -> JobRunner:
        if self.runner is None:
            raise NodeUnavailable("the job service is starting")
        return self.runner

    async def handle_start(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        spec = parse_spec(await json_object(request, "job"))
        await self._register_remote_buckets(spec)
        spec = self._normalized(spec)
        if spec.destination is None and spec.kind != "evict":
            await self.node.sources.backend_for(self._bucket(spec.bucket))  # config errors now
        job = await self._runner().submit(spec)
        return web.json_response(job, status=201)

    async def handle_list(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        states = [s for s in request.query.get("state", "").split(",") if s] or None
        limit = page_limit(request)
        jobs = await self.node.run_blocking(
            lambda: self.node.catalog.list_jobs(states=states, limit=limit))
        return web.json_response({"jobs": jobs})

    async def handle_get(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        job_id = request[MATCH]["job"]
        try:
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            raise InvalidArgument("wait must be a number of seconds") from None
        job = await self._runner().wait(job_id, min(max(wait, 0.0), 60.0))
        job["running_here"] = self._runner().running(job_id)
        return web.json_response(job)

    async def handle_abort(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        job = await self._runner().abort(request[MATCH]["job"])
        return web.json_response(job)

    async def handle_report(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        job_id = request[MATCH]["job"]
        await self.node.run_blocking(self.node.catalog.get_job, job_id)  # JobNotFound
        actions = [a for a in request.query.get("action", "").split(",") if a] or None
        after = request.query.get("after") or None
        limit = page_limit(request)
        catalog = self.node.catalog
        rows = await self.node.run_blocking(
            lambda: catalog.report_page(job_id, actions=actions, after=after, limit=limit))
        counts = await self.node.run_blocking(catalog.report_counts, job_id)
        return web.json_response({"entries": rows, "counts": counts,
                                  "next_token": rows[-1]["name"] if len(rows) == limit else None})

    async def handle_add_schedule(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        body = await json_object(request, "schedule")
        replace = body.pop("replace", False)
        if not isinstance(replace, bool):
            raise InvalidArgument("schedule: replace must be true or false")
        spec = parse_schedule(body)
        await self._register_remote_buckets(spec.job)
        spec = spec.model_copy(update={"job": self._normalized(spec.job)})
        assert self.node.primary is not None
        await self.node.primary.put_schedule(spec.name, spec.model_dump(mode="json"),
                                             replace=replace)
        return web.json_response(await self._schedule_view(spec.name), status=201)

    async def _schedule_view(self, name: str) -> dict[str, Any]:
        bucket_map = self.node.state.bucket_map
        definition = bucket_map.schedules.get(name) if bucket_map is not None else None
        if definition is None:
            raise ScheduleNotFound(f"no schedule {name!r}")
        runs = await self.node.run_blocking(self.node.catalog.schedule_runs, name, 10)
        next_run = self.scheduler.next_run(name) if self.scheduler else None
        return {**definition, "next_run": next_run, "runs": runs}

    async def handle_list_schedules(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        bucket_map = self.node.state.bucket_map
        names = sorted(bucket_map.schedules) if bucket_map is not None else []
        return web.json_response({"schedules": [await self._schedule_view(n) for n in names]})

    async def handle_get_schedule(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        return web.json_response(await self._schedule_view(request[MATCH]["name"]))

    async def handle_remove_schedule(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        assert self.node.primary is not None
        await self.node.primary.remove_schedule(request[MATCH]["name"])
        return web.Response(status=204)

    async def handle_metrics(self, request: web.BaseRequest) -> web.Response:
        if (fwd := await self._forwarded(request)) is not None:
            return fwd
        lines = ["# HELP aisync_bucket_freshness_lag_seconds Seconds since the cluster last "
                 "verified the cached bucket matched its source.",
                 "# TYPE aisync_bucket_freshness_lag_seconds gauge"]
        bucket_map = self.node.state.bucket_map
        for _uname, props in sorted((bucket_map.buckets if bucket_map else {}).items()):
            if not props.backed:
                continue
            fresh = await self.freshness(props)
            if fresh and fresh["lag_s"] is not None:
                lines.append(f'aisync_bucket_freshness_lag_seconds{{bucket="{props.ref}"}} '
                             f'{fresh["lag_s"]}')
        jobs = await self.node.run_blocking(lambda: self.node.catalog.list_jobs(limit=10_000))
        by_state: dict[str, int] = {}
        for job in jobs:
            by_state[job["state"]] = by_state.get(job["state"], 0) + 1
        lines += ["# HELP aisync_jobs Jobs in the catalog by state.", "# TYPE aisync_jobs gauge"]
        for state in sorted(set(by_state) | FINAL_STATES | {"pending", "running"}):
            lines.append(f'aisync_jobs{{state="{state}"}} {by_state.get(state, 0)}')
        counters = await self._target_counters()
        lines += ["# HELP aisync_on_access_total On-access consistency events, all targets.",
                  "# TYPE aisync_on_access_total counter"]
        for key, value in sorted(counters.items()):
            if key.startswith("on_access:"):
                lines.append(f'aisync_on_access_total{{event="{key[10:]}"}} {value}')
        lines += ["# HELP aisync_peer_reads_total Peer-first reads and bytes by origin.",
                  "# TYPE aisync_peer_reads_total counter"]
        for key, value in sorted(counters.items()):
            if key.startswith("peers:"):
                lines.append(f'aisync_peer_reads_total{{event="{key[6:]}"}} {value}')
        return web.Response(text="\n".join(lines) + "\n",
                            content_type="text/plain", charset="utf-8")

    async def _target_counters(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        try:
            statuses = await self.node._from_targets("/v1/node/status", {})
        except AisyncError:
            return totals
        for status in statuses:
            for section in ("on_access", "peers"):
                for key, value in (status.get(section) or {}).items():
                    totals[f"{section}:{key}"] = totals.get(f"{section}:{key}", 0) + int(value)
        return totals
