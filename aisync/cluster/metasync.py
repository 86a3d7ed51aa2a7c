"""Metasync: the primary pushes every new map version to every node.

A push sends both maps (so a node that missed versions catches up in one message) to all nodes
concurrently and waits for each answer or its timeout. Unreachable nodes are reported, not
retried here: keepalive marks them inactive, and a node that comes back receives the current maps
when it is re-admitted or re-joins.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from aisync.cluster.maps import BucketMap, ClusterMap, NodeInfo

log = logging.getLogger("aisync.metasync")


def payload(cluster_map: ClusterMap | None, bucket_map: BucketMap | None) -> dict:
    body: dict = {}
    if cluster_map is not None:
        body["cluster_map"] = cluster_map.model_dump(mode="json")
    if bucket_map is not None:
        body["bucket_map"] = bucket_map.model_dump(mode="json")
    return body


async def push(session: aiohttp.ClientSession, nodes: list[NodeInfo], cluster_map: ClusterMap,
               bucket_map: BucketMap | None, timeout: float) -> dict[str, str]:
    """Push both maps to ``nodes``; returns ``{node_id: error}`` for nodes that did not accept."""
    body = payload(cluster_map, bucket_map)

    async def one(node: NodeInfo) -> tuple[str, str | None]:
        try:
            async with session.put(f"{node.url}/v1/metasync", json=body,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status == 200:
                    return node.id, None
                text = await resp.text()
                return node.id, f"HTTP {resp.status}: {text[:200]}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return node.id, f"{type(exc).__name__}: {exc}"

    results = await asyncio.gather(*(one(n) for n in nodes))
    failures = {node_id: err for node_id, err in results if err is not None}
    for node_id, err in failures.items():
        log.warning("metasync to %s failed: %s", node_id, err,
                    extra={"node": node_id, "map_version": cluster_map.version})
    return failures
