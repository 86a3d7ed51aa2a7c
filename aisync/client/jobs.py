"""Job, schedule and remote-cluster calls of :class:`~aisync.client.aio.AsyncClient` (a mixin).

Owns: the client side of ``/v1/jobs``, ``/v1/schedules`` and ``/v1/remotes``. Relies on the host class's
``_json`` plumbing. May import: ``aisync.util`` and the client's own modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from aisync.client.types import JOB_FINAL_STATES, job_path, job_spec, seconds_param

#: Longest single long poll of a job (seconds): well within the client's read timeout.
LONG_POLL_MAX = 20.0


class JobsMixin:
    """Jobs (prefetch, copy, sync, evict) and schedules; mixed into ``AsyncClient``."""

    _json: Callable[..., Any]
    timeout: float

    # -- jobs --------------------------------------------------------------------------------

    async def start_job(self, spec: Mapping[str, Any] | None = None, **fields: Any) -> dict:
        """Start a job (``POST /v1/jobs``) and return its record (``id``, ``state`` …).

        The spec is a dict and/or keywords: ``kind`` (prefetch|copy|sync|evict), ``bucket``,
        ``destination``, ``prefix``, ``latest``, ``delete``, ``max_delete``, ``dry_run``,
        ``bandwidth`` (bytes/s), ``rate`` (requests/s), ``retries`` …; ``None`` values are left
        out and buckets may be :class:`BucketRef`.
        """
        return await self._json("POST", "/v1/jobs", label="start job",
                                payload=job_spec(spec, **fields)) or {}

    async def list_jobs(self, states: str | Iterable[str] | None = None,
                        limit: int = 100) -> list[dict]:
        """Jobs, newest first, optionally only in ``states`` (``"running"`` or a list)."""
        params: dict[str, object] = {"limit": int(limit)}
        if states:
            params["state"] = states if isinstance(states, str) else ",".join(states)
        doc = await self._json("GET", "/v1/jobs", params, label="jobs")
        return list((doc or {}).get("jobs") or [])

    async def get_job(self, job_id: str, wait: float = 0) -> dict:
        """One job's record; with ``wait`` (seconds, at most 60) the server holds the request
        until the job finished or ``wait`` passed."""
        params = {"wait": seconds_param(wait)} if wait and wait > 0 else None
        return await self._json("GET", job_path(job_id), params, label=f"job {job_id}")

    async def wait_job(self, job_id: str, timeout: float | None = None, poll: float = 20,
                       on_progress: Callable[[dict], Any] | None = None) -> dict:
        """Wait until the job is finished (``succeeded``, ``deletes-refused``, ``failed`` or
        ``aborted``: :data:`JOB_FINAL_STATES`) and return its record, or return it as it is
        once ``timeout`` seconds passed (check ``state``).

        Long-polls with ``?wait=`` of at most ``poll`` seconds; ``on_progress(job)`` is called
        after each answer (a progress bar can update from ``job["progress"]``).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        # a held request must end well within the client's read timeout, and within the
        # timeout of a non-primary proxy that forwards it to the primary (30 s by default)
        longest = max(min(poll, LONG_POLL_MAX, self.timeout - 2), 0.5)
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            wait = longest if remaining is None else max(min(longest, remaining), 0.0)
            asked = loop.time()
            job = await self.get_job(job_id, wait=wait)
            if on_progress is not None:
                on_progress(job)
            if job.get("state") in JOB_FINAL_STATES:
                return job
            if deadline is not None and loop.time() >= deadline:
                return job
            # a server that answers at once (the job is not running on it) is not hammered
            early = wait - (loop.time() - asked)
            if early > 0.05:
                await asyncio.sleep(min(early, 1.0))

    async def abort_job(self, job_id: str) -> dict:
        """Abort a pending or running job; a finished job is returned unchanged."""
        return await self._json("POST", job_path(job_id, "/abort"), label=f"job {job_id}")

    async def get_job_report(self, job_id: str, actions: str | Iterable[str] | None = None,
                             after: str | None = None, limit: int | None = None) -> dict:
        """One page of a job's report: ``{"entries": [...], "counts": {action: n},
        "next_token": NAME|None}``; entries are in name order, after the name ``after``."""
        params: dict[str, object] = {}
        if actions:
            params["action"] = actions if isinstance(actions, str) else ",".join(actions)
        if after:
            params["after"] = after
        if limit is not None:
            params["limit"] = int(limit)
        return await self._json("GET", job_path(job_id, "/report"), params,
                                label=f"job {job_id}") or {}

    async def iter_job_report(self, job_id: str, actions: str | Iterable[str] | None = None,
                              page_size: int = 1000) -> AsyncIterator[dict]:
        """Every report entry of a job (optionally only with ``actions``), one page at a
        time: ``{"name", "action", "reason", "size", "version", "at"}``."""
        after: str | None = None
        while True:
            page = await self.get_job_report(job_id, actions, after, page_size)
            for entry in page.get("entries") or []:
                yield entry
            token = page.get("next_token")
            if not token or token == after:
                return
            after = token

    # -- schedules ---------------------------------------------------------------------------

    async def add_schedule(self, name: str, *, job: Mapping[str, Any],
                           cron: str | None = None, every: str | float | None = None,
                           replace: bool = False) -> dict:
        """Run ``job`` (a job spec) by ``cron`` (5 fields, UTC) or ``every`` (``"1h"`` or
        seconds); ``replace`` overwrites a schedule of the same name."""
        body: dict[str, Any] = {"name": name, "job": job_spec(job)}
        if cron is not None:
            body["cron"] = cron
        if every is not None:
            body["every"] = every
        if replace:
            body["replace"] = True
        return await self._json("POST", "/v1/schedules", label=f"schedule {name}",
                                payload=body) or {}

    async def list_schedules(self) -> list[dict]:
        doc = await self._json("GET", "/v1/schedules", label="schedules")
        return list((doc or {}).get("schedules") or [])

    async def get_schedule(self, name: str) -> dict:
        """A schedule with ``next_run`` and its recent ``runs`` (newest first)."""
        return await self._json("GET", f"/v1/schedules/{quote(name, safe='')}",
                                label=f"schedule {name}")

    async def remove_schedule(self, name: str) -> None:
        await self._json("DELETE", f"/v1/schedules/{quote(name, safe='')}",
                         label=f"schedule {name}")

    # -- remote clusters ---------------------------------------------------------------------

    async def attach_remote(self, alias: str, urls: str | Iterable[str] | None = None) -> dict:
        """Attach the remote cluster (a peer in another zone) that the nodes' configuration
        names ``remotes.<alias>``; ``urls`` (optional) picks some of its profile's URLs."""
        payload: dict = {}
        if urls is not None:
            payload["urls"] = [urls] if isinstance(urls, str) else list(urls)
        return await self._json("PUT", f"/v1/remotes/{quote(alias, safe='')}",
                                label=f"remote {alias}", payload=payload) or {}

    async def list_remotes(self) -> list[dict]:
        """Attached remotes with live reachability and their map versions."""
        return (await self._json("GET", "/v1/remotes", label="remotes") or {}).get("remotes", [])

    async def detach_remote(self, alias: str) -> None:
        await self._json("DELETE", f"/v1/remotes/{quote(alias, safe='')}", label=f"remote {alias}")
