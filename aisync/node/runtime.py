"""The part every node shares: identity, catalog, cluster state, HTTP session, common routes.

A node's lifecycle is explicit: ``start()`` enters every resource into one ``AsyncExitStack``
(catalog, client session, role-specific parts, background workers) and ``stop()`` unwinds it in
reverse order. Common routes: health, readiness, the maps, metasync, node status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
from aiohttp import web

from aisync.auth import Access, Gate
from aisync.catalog import Catalog
from aisync.cluster.maps import BucketMap, BucketProps, ClusterMap, NodeInfo
from aisync.cluster.state import ClusterState
from aisync.cluster.workers import WorkerStatus
from aisync.config import NodeConfig, RemoteProfile
from aisync.node.accepts import check_fields
from aisync.node.http import bucket_ref, json_answer, json_object
from aisync.node.localread import host_identity
from aisync.node.router import Router
from aisync.node.sources import SourcePool
from aisync.util.errors import (
    AccessDenied,
    BucketNotFound,
    InvalidArgument,
    NodeUnavailable,
    RemoteNotFound,
)
from aisync.util.names import BucketRef

log = logging.getLogger("aisync.node")

#: What ``PUT /v1/metasync`` carries (either or both).
METASYNC_FIELDS = frozenset({"cluster_map", "bucket_map"})


def load_node_id(config: NodeConfig) -> str:
    """The configured id, or one generated at first start and kept in ``data_dir/node_id``."""
    if config.node_id:
        return config.node_id
    path = Path(config.data_dir) / "node_id"
    if path.exists():
        return path.read_text().strip()
    node_id = f"{config.role[0]}-{uuid.uuid4().hex[:8]}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id + "\n")
    os.replace(tmp, path)
    return node_id


class NodeRuntime:
    role: str = "node"

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)
        self.node_id = load_node_id(config)
        self.me = NodeInfo(id=self.node_id, role=config.role, url=config.url,
                           host=host_identity())
        self.started = time.time()
        self._blocking = ThreadPoolExecutor(4, thread_name_prefix="aisync-ctl")
        self.catalog = Catalog(config.resolved_catalog_url())
        self.state = ClusterState(self.catalog, self.run_blocking)
        #: The peers this node may reach (its ``remotes`` profiles, URLs without a trailing /).
        self._remote_profiles = {
            alias: profile.model_copy(update={"urls": [u.rstrip("/") for u in profile.urls]})
            for alias, profile in config.remotes.items()}
        self.sources = SourcePool(config.backends, remotes=self._remote_settings)
        self.session: aiohttp.ClientSession | None = None
        self.workers: dict[str, WorkerStatus] = {}
        self._tasks: list[asyncio.Task] = []
        self._stack = contextlib.AsyncExitStack()
        self.joined = asyncio.Event()
        self.gate = Gate(config.auth, self.node_id, self.is_member_origin)
        self._member_origins: tuple[int, frozenset[str]] = (-1, frozenset())
        self.router = r = Router(gate=self.gate)
        for method in ("GET", "HEAD"):
            r.add(method, "/v1/health", self.handle_health, access=Access.PUBLIC, query=())
            r.add(method, "/v1/health/ready", self.handle_ready, access=Access.PUBLIC,
                  query=())
        r.add("GET", "/v1/cluster/map", self.handle_cluster_map, access=Access.CLIENT,
              query=())
        r.add("GET", "/v1/cluster/bucket-map", self.handle_bucket_map, access=Access.CLIENT,
              query=())
        r.add("PUT", "/v1/metasync", self.handle_metasync, access=Access.MEMBER, query=(),
              body="json")
        r.add("GET", "/v1/node/status", self.handle_node_status, access=Access.CLIENT,
              query=())

    async def run_blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._blocking, fn, *args)

    # -- lifecycle --
    async def start(self) -> None:
        await self.run_blocking(self.catalog.upgrade)
        self._stack.callback(self.catalog.close)
        self._stack.callback(self._blocking.shutdown, wait=False)
        await self.state.load()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.http.client_timeout),
            connector=aiohttp.TCPConnector(limit=256),
            **self.gate.client_session_options())
        self._stack.push_async_callback(self.session.close)
        self._stack.push_async_callback(self.sources.close)
        self._stack.push_async_callback(self._cancel_tasks)
        await self.start_role()

    async def stop(self) -> None:
        await self._stack.aclose()

    async def start_role(self) -> None:  # overridden
        pass

    async def after_listen(self, runner) -> None:  # overridden: runs once the port is open
        pass

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _join_loop(self) -> None:
        primary = self.config.cluster.primary_url
        if not primary:
            log.error("cluster.primary_url is not set: nothing to join")
            return
        delay = 0.1
        while True:
            body = {"id": self.node_id, "role": self.role, "url": self.me.url,
                    "host": self.me.host, "local_socket": self.me.local_socket,
                    "map_version": self.state.cluster_map.version if self.state.cluster_map else 0}
            try:
                assert self.session is not None
                async with self.session.post(f"{primary}/v1/cluster/join", json=body) as resp:
                    answer = await json_answer(resp, f"the primary at {primary}")
                    if resp.status == 200:
                        await self.state.apply(ClusterMap.model_validate(answer["cluster_map"]),
                                               BucketMap.model_validate(answer["bucket_map"]))
                        self.joined.set()
                        log.info("joined cluster %s via %s", answer["cluster_map"]["name"],
                                 primary)
                        return
                    log.warning("join refused: HTTP %d %s", resp.status, answer)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.info("primary %s not reachable yet (%s); retrying", primary, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _remote_settings(self, alias: str) -> dict:
        token = self.remote_profile(alias).token
        return {"endpoints": self.remote_urls(alias),
                "token": token.get_secret_value() if token else ""}

    def is_member_origin(self, origin: str) -> bool:
        """Whether ``scheme://host:port`` is a node of this cluster (or the configured primary
        being joined): the node's session signs requests to those origins, and only to those."""
        cluster_map = self.state.cluster_map
        version = cluster_map.version if cluster_map is not None else 0
        cached_version, origins = self._member_origins
        if cached_version != version:
            urls = [n.url for n in cluster_map.nodes.values()] if cluster_map is not None else []
            if self.config.cluster.primary_url:
                urls.append(self.config.cluster.primary_url)
            origins = frozenset(u.rstrip("/") for u in urls)
            self._member_origins = (version, origins)
        return origin in origins

    def is_ready(self) -> bool:  # overridden
        return self.state.cluster_map is not None

    # -- common routes --
    async def handle_health(self, request: web.BaseRequest) -> web.Response:
        return web.json_response({"status": "ok", "id": self.node_id, "role": self.role,
                                  "cluster": self.config.cluster.name})

    async def handle_ready(self, request: web.BaseRequest) -> web.Response:
        ready = self.is_ready()
        return web.json_response({"ready": ready, "id": self.node_id}, status=200 if ready else 503)

    @staticmethod
    def _document(doc: ClusterMap | BucketMap | None, what: str) -> web.Response:
        if doc is None:
            raise NodeUnavailable(f"this node holds no {what} yet")
        return web.json_response(doc.model_dump(mode="json"))

    async def handle_cluster_map(self, request: web.BaseRequest) -> web.Response:
        return self._document(self.state.cluster_map, "cluster map")

    async def handle_bucket_map(self, request: web.BaseRequest) -> web.Response:
        return self._document(self.state.bucket_map, "bucket map")

    def remote_urls(self, alias: str) -> list[str]:
        """The proxy URLs of the remote cluster attached as ``alias`` that this node's own
        ``remotes.<alias>`` profile also lists: a forged or stale bucket map cannot point this
        node at a URL its operator did not configure."""
        bucket_map = self.state.bucket_map
        remote = bucket_map.remotes.get(alias) if bucket_map is not None else None
        if remote is None:
            raise RemoteNotFound(f"no remote cluster {alias!r} is attached "
                                 f"(aisync remote attach {alias})")
        allowed = set(self.remote_profile(alias).urls)
        urls = [u for u in remote["urls"] if u.rstrip("/") in allowed]
        if not urls:
            raise AccessDenied(f"none of remote {alias!r}'s URLs is in this node's "
                               f"remotes.{alias}.urls")
        return urls

    def remote_profile(self, alias: str) -> RemoteProfile:
        """This node's configuration of peer ``alias`` (normalized URLs, its token)."""
        profile = self._remote_profiles.get(alias)
        if profile is None:
            raise AccessDenied(f"remote {alias!r} is not configured on this node: add "
                               f"remotes.{alias} (urls and token) to the nodes' configuration")
        return profile

    def remote_headers(self, alias: str) -> dict[str, str]:
        """What authenticates this node to peer ``alias``: its profile's bearer token."""
        token = self.remote_profile(alias).token
        return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}

    def known_bucket(self, request: web.BaseRequest) -> tuple[BucketRef, BucketProps]:
        """The request's bucket and its properties; ``BucketNotFound`` if the map lacks it."""
        ref = bucket_ref(request)
        props = self.state.bucket_map.get(ref) if self.state.bucket_map else None
        if props is None:
            raise BucketNotFound(f"bucket {ref} does not exist")
        return ref, props

    async def handle_metasync(self, request: web.BaseRequest) -> web.Response:
        body = check_fields(await json_object(request, "metasync"), METASYNC_FIELDS,
                            "metasync")
        if not body:
            raise InvalidArgument("metasync: give cluster_map, bucket_map or both")
        try:
            cluster_map = ClusterMap.model_validate(body["cluster_map"]) if "cluster_map" in body \
                else None
            bucket_map = BucketMap.model_validate(body["bucket_map"]) if "bucket_map" in body else None
        except ValueError as exc:
            raise InvalidArgument(f"invalid map document: {exc}") from None
        changed = await self.state.apply(cluster_map, bucket_map)
        return web.json_response({"accepted": changed, "id": self.node_id})

    async def node_status(self) -> dict:
        cluster_map, bucket_map = self.state.cluster_map, self.state.bucket_map
        return {
            "id": self.node_id, "role": self.role, "url": self.me.url,
            "state": cluster_map.nodes[self.node_id].state if cluster_map and self.node_id in cluster_map.nodes
            else "unknown",
            "primary": bool(cluster_map and cluster_map.primary == self.node_id),
            "map_version": cluster_map.version if cluster_map else 0,
            "bucket_map_version": bucket_map.version if bucket_map else 0,
            "uptime_s": round(time.time() - self.started, 1), "pid": os.getpid(),
            "workers": [w.as_dict() for w in self.workers.values()],
        }

    async def handle_node_status(self, request: web.BaseRequest) -> web.Response:
        return web.json_response(await self.node_status())
