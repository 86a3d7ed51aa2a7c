"""The primary proxy's duties: the only writer of new map versions.

* **Join**: a node announces ``{id, role, url, map_version}``; the primary adds (or re-activates)
  it in a new cluster map, jumping past any version the node already holds (a primary whose disk
  was wiped must not push versions the cluster has seen), and metasyncs.
* **Keepalive**: a worker pings every node each ``interval``; a node silent for ``dead_after``
  becomes ``inactive`` (it stops owning objects); a node that answers again becomes ``active``.
* **Buckets**: create and destroy produce new bucket-map versions, pushed to every node before the
  client is answered, so read-after-create holds through any proxy.

All mutations run under one lock: one new version at a time, each pushed before the next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from aisync.cluster import metasync
from aisync.cluster.maps import BucketMap, BucketProps, ClusterMap, NodeInfo
from aisync.cluster.state import ClusterState
from aisync.cluster.workers import WorkerStatus
from aisync.config import NodeConfig
from aisync.util.errors import (
    AlreadyExists,
    BucketAlreadyExists,
    BucketNotFound,
    Conflict,
    RemoteNotFound,
    ScheduleNotFound,
    describe_validation,
)
from aisync.util.jsondoc import parse_json
from aisync.util.names import BucketRef

log = logging.getLogger("aisync.primary")


class Primary:
    def __init__(self, config: NodeConfig, me: NodeInfo, state: ClusterState,
                 session: aiohttp.ClientSession) -> None:
        self.config = config
        self.me = me
        self.state = state
        self.session = session
        self._lock = asyncio.Lock()
        self._last_seen: dict[str, float] = {}
        self.keepalive = WorkerStatus("keepalive")

    # -- bootstrap --
    async def bootstrap(self) -> None:
        """Create the first maps, or re-announce the persisted ones after a restart."""
        async with self._lock:
            cluster_map, bucket_map = self.state.cluster_map, self.state.bucket_map
            if cluster_map is None:
                cluster_map = ClusterMap.bootstrap(self.config.cluster.name, self.me)
                bucket_map = BucketMap.bootstrap(cluster_map.uuid)
            else:
                node = self.me.model_copy(update={"state": "active"})
                if cluster_map.nodes.get(self.me.id) != node or cluster_map.primary != self.me.id:
                    cluster_map = cluster_map.with_node(node).model_copy(update={"primary": self.me.id})
                if bucket_map is None:
                    bucket_map = BucketMap.bootstrap(cluster_map.uuid)
            await self.state.apply(cluster_map, bucket_map)
            now = time.monotonic()
            self._last_seen = {node_id: now for node_id in cluster_map.nodes}
            await self._push()

    async def _push(self) -> dict[str, str]:
        cluster_map, bucket_map = self.state.cluster_map, self.state.bucket_map
        assert cluster_map is not None
        others = [n for n in cluster_map.nodes.values() if n.id != self.me.id]
        return await metasync.push(self.session, others, cluster_map, bucket_map,
                                   self.config.http.client_timeout)

    async def _publish(self, cluster_map: ClusterMap | None = None, bucket_map: BucketMap | None = None):
        await self.state.apply(cluster_map, bucket_map)
        failures = await self._push()
        if cluster_map is not None and cluster_map.version % 100 == 0:
            await self.state.prune()
        return failures

    # -- membership --
    async def join(self, node: NodeInfo, held_version: int = 0) -> tuple[ClusterMap, BucketMap]:
        async with self._lock:
            cluster_map = self.state.cluster_map
            assert cluster_map is not None
            known = cluster_map.nodes.get(node.id)
            if known is not None and known.state == "active" and known.url != node.url \
                    and node.id != self.me.id:
                # A stolen or mistyped id must not take over another node's share of the data.
                raise Conflict(f"node {node.id} is active at {known.url}; a node with that id "
                               f"cannot join from {node.url} (stop the other one, or wait until "
                               "the cluster marks it inactive)")
            self._last_seen[node.id] = time.monotonic()
            node = node.model_copy(update={"state": "active"})
            if cluster_map.nodes.get(node.id) != node or held_version >= cluster_map.version:
                new = cluster_map.with_node(node)
                if held_version >= new.version:
                    new = new.bumped_to(held_version + 1)
                log.info("node %s joins as %s at %s", node.id, node.role, node.url,
                         extra={"node": node.id, "map_version": new.version})
                await self._publish(new)
            assert self.state.cluster_map is not None and self.state.bucket_map is not None
            return self.state.cluster_map, self.state.bucket_map

    async def run_keepalive(self) -> None:
        """The keepalive worker: runs until cancelled."""
        cfg = self.config.keepalive
        self.keepalive.state = "running"
        try:
            while True:
                await asyncio.sleep(cfg.interval)
                try:
                    await self._keepalive_round(cfg.request_timeout, cfg.dead_after)
                    self.keepalive.last_error = None
                except Exception as exc:  # a failed round must not end the worker
                    self.keepalive.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("keepalive round failed")
                self.keepalive.runs += 1
                self.keepalive.last_run = time.time()
        finally:
            self.keepalive.state = "stopped"

    async def _ping(self, node: NodeInfo, timeout: float) -> bool:
        try:
            async with self.session.get(f"{node.url}/v1/health",
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status != 200:
                    return False
                body = parse_json(await resp.read(), f"the health of {node.id}")
                return isinstance(body, dict) and body.get("id") == node.id
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False

    async def _keepalive_round(self, timeout: float, dead_after: float) -> None:
        cluster_map = self.state.cluster_map
        assert cluster_map is not None
        others = [n for n in cluster_map.nodes.values() if n.id != self.me.id]
        results = await asyncio.gather(*(self._ping(n, timeout) for n in others))
        now = time.monotonic()
        for node, ok in zip(others, results, strict=True):
            if ok:
                self._last_seen[node.id] = now
        async with self._lock:
            cluster_map = self.state.cluster_map
            assert cluster_map is not None
            new = cluster_map
            for node, ok in zip(others, results, strict=True):
                current = new.nodes.get(node.id)
                if current is None:
                    continue
                silent = now - self._last_seen.get(node.id, now)
                if current.state == "active" and not ok and silent >= dead_after:
                    log.warning("node %s missed keepalives for %.1fs: inactive", node.id, silent,
                                extra={"node": node.id})
                    new = new.with_state(node.id, "inactive")
                elif current.state == "inactive" and ok:
                    log.info("node %s answers again: active", node.id, extra={"node": node.id})
                    new = new.with_state(node.id, "active")
            if new is not cluster_map:
                # Several state changes in one round become a single new version.
                new = new.model_copy(update={"version": cluster_map.version + 1})
                await self._publish(new)

    # -- buckets --
    async def create_bucket(self, props: BucketProps) -> BucketProps:
        async with self._lock:
            bucket_map = self.state.bucket_map
            assert bucket_map is not None
            if bucket_map.get(props.ref) is not None:
                raise BucketAlreadyExists(f"bucket {props.ref} already exists")
            await self._publish(bucket_map=bucket_map.with_bucket(props))
            return props

    async def update_bucket(self, ref: BucketRef, changes: dict[str, Any]) -> BucketProps:
        """New properties for an existing bucket (validated; identity fields stay)."""
        async with self._lock:
            bucket_map = self.state.bucket_map
            assert bucket_map is not None
            props = bucket_map.get(ref)
            if props is None:
                raise BucketNotFound(f"bucket {ref} does not exist")
            try:
                props = BucketProps.model_validate({**props.model_dump(), **changes})
            except ValueError as exc:
                raise describe_validation(exc, "invalid bucket properties") from None
            await self._publish(bucket_map=bucket_map.with_bucket(props))
            return props

    async def put_schedule(self, name: str, definition: dict[str, Any], *,
                           replace: bool = False) -> None:
        async with self._lock:
            bucket_map = self.state.bucket_map
            assert bucket_map is not None
            if name in bucket_map.schedules and not replace:
                raise AlreadyExists(f"schedule {name!r} already exists")
            await self._publish(bucket_map=bucket_map.with_schedule(name, definition))

    async def remove_schedule(self, name: str) -> None:
        async with self._lock:
            bucket_map = self.state.bucket_map
            assert bucket_map is not None
            if name not in bucket_map.schedules:
                raise ScheduleNotFound(f"no schedule {name!r}")
            await self._publish(bucket_map=bucket_map.without_schedule(name))

    async def attach_remote(self, alias: str, definition: dict[str, Any]) -> None:
        """Attach (or re-attach with new URLs) a remote cluster under ``alias``."""
        async with self._lock:
            bucket_map = self.state.bucket_map
            assert bucket_map is not None
            await self._publish(bucket_map=bucket_map.with_remote(alias, definition))

    async def detach_remote(self, alias: str) -> None:
        async with self._lock:
            bucket_map = self.state.bucket_map
            assert bucket_map is not None
            if alias not in bucket_map.remotes:
                raise RemoteNotFound(f"no remote cluster {alias!r} is attached")
            in_use = sorted(str(p.ref) for p in bucket_map.buckets.values() if p.namespace == alias)
            if in_use:
                raise Conflict(f"remote {alias!r} still has buckets in this cluster: "
                               f"{', '.join(in_use)} (remove them first)")
            await self._publish(bucket_map=bucket_map.without_remote(alias))

    async def destroy_bucket(self, ref: BucketRef) -> None:
        async with self._lock:
            bucket_map = self.state.bucket_map
            assert bucket_map is not None
            if bucket_map.get(ref) is None:
                raise BucketNotFound(f"bucket {ref} does not exist")
            await self._publish(bucket_map=bucket_map.without_bucket(ref))
