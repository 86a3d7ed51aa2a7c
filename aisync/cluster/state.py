"""What one node knows: the newest cluster map and bucket map it has accepted.

Every accepted version is persisted in the node's catalog before it is acknowledged, so a node
that restarts never goes back to an older map, and it rejects (409 ``StaleMapVersion``) any map
older than the one it holds. Listeners run after each change (e.g. a target destroys the data of
a bucket that left the bucket map).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aisync.cluster.maps import BucketMap, ClusterMap, check_newer

log = logging.getLogger("aisync.cluster")

CLUSTER_MAP = "cluster_map"
BUCKET_MAP = "bucket_map"

Listener = Callable[[ClusterMap | None, BucketMap | None, BucketMap | None], Awaitable[None]]


class ClusterState:
    def __init__(self, catalog, run_blocking: Callable[..., Awaitable]) -> None:
        """``catalog``: an ``aisync.catalog.Catalog``; ``run_blocking(fn, *args)`` runs it off-loop."""
        self._catalog = catalog
        self._run = run_blocking
        self.cluster_map: ClusterMap | None = None
        self.bucket_map: BucketMap | None = None
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self.changed = asyncio.Event()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def load(self) -> None:
        doc = await self._run(self._catalog.latest_document, CLUSTER_MAP)
        if doc is not None:
            self.cluster_map = ClusterMap.model_validate(doc[1])
        doc = await self._run(self._catalog.latest_document, BUCKET_MAP)
        if doc is not None:
            self.bucket_map = BucketMap.model_validate(doc[1])

    async def apply(self, cluster_map: ClusterMap | None = None, bucket_map: BucketMap | None = None) -> bool:
        """Accept newer maps (raising on older ones); persist; run listeners. True if changed."""
        async with self._lock:
            new_c = cluster_map if cluster_map is not None and check_newer(self.cluster_map, cluster_map) else None
            new_b = bucket_map if bucket_map is not None and check_newer(self.bucket_map, bucket_map) else None
            if new_c is None and new_b is None:
                return False
            if new_c is not None:
                await self._run(self._catalog.save_document, CLUSTER_MAP, new_c.version,
                                new_c.model_dump(mode="json"))
            if new_b is not None:
                await self._run(self._catalog.save_document, BUCKET_MAP, new_b.version,
                                new_b.model_dump(mode="json"))
            old_b = self.bucket_map
            if new_c is not None:
                self.cluster_map = new_c
                log.info("cluster map v%d accepted", new_c.version,
                         extra={"map_version": new_c.version})
            if new_b is not None:
                self.bucket_map = new_b
                log.info("bucket map v%d accepted", new_b.version,
                         extra={"bucket_map_version": new_b.version})
            for listener in self._listeners:
                await listener(new_c, new_b, old_b)
            self.changed.set()
            self.changed = asyncio.Event()
            return True

    async def prune(self, keep: int = 50) -> None:
        for kind in (CLUSTER_MAP, BUCKET_MAP):
            await self._run(self._catalog.prune_documents, kind, keep)
