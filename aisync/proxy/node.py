"""The proxy: a stateless gateway. Any proxy serves any client; one of them is the primary.

Object requests go to the owning target: by ``307`` redirect (native clients; a PUT that sends
``Expect: 100-continue`` is redirected before its body moves) or, in reverse mode, streamed
through the proxy. Bucket listings merge the targets' sorted pages (memory bounded by
``limit × targets``). Bucket create/destroy and joins are primary-only: a non-primary proxy
forwards them. The primary also runs the keepalive worker.
"""

from __future__ import annotations

import asyncio
import heapq
import logging

import aiohttp
from aiohttp import web

from aisync.auth import Access
from aisync.cluster.maps import BucketProps, NodeInfo
from aisync.cluster.primary import Primary
from aisync.node import accepts
from aisync.node.http import (
    bool_query,
    bucket_ref,
    int_query,
    json_answer,
    json_object,
    node_server,
    object_name,
    page_limit,
)
from aisync.node.relay import CLIENT_CREDENTIALS, relay
from aisync.node.router import Router
from aisync.node.runtime import NodeRuntime
from aisync.proxy.jobs import ProxyJobs
from aisync.proxy.keys import ProxyKeys
from aisync.proxy.remotes import ProxyRemotes
from aisync.s3.frontend import S3Frontend
from aisync.util.errors import (
    AisyncError,
    BucketAlreadyExists,
    ChangeFeedGap,
    InvalidArgument,
    NodeUnavailable,
    NotPrimary,
)
from aisync.util.names import BucketRef, validate_prefix
from aisync.util.units import parse_duration

log = logging.getLogger("aisync.proxy")


class ProxyNode(NodeRuntime):
    role = "proxy"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.primary: Primary | None = None
        self.mode = config.http.proxy_mode
        r = self.router
        client = Access.CLIENT
        # Object requests go on to the owning target with their query as sent: the target's
        # object routes accept the same parameters (aisync.node.accepts).
        for method, query in (("GET", accepts.OBJECT_READ), ("HEAD", accepts.OBJECT_READ),
                              ("DELETE", accepts.OBJECT_WRITE)):
            r.add(method, "/v1/objects/{bucket}/{name:.+}", self.handle_object, access=client,
                  query=query)
        r.add("PUT", "/v1/objects/{bucket}/{name:.+}", self.handle_object,
              expect=self.expect_put, access=client, query=accepts.OBJECT_WRITE,
              body="stream")
        r.add("GET", "/v1/buckets", self.handle_list_buckets, access=client, query=())
        r.add("PUT", "/v1/buckets/{bucket}", self.handle_create_bucket, access=client,
              query=accepts.BUCKET, body="json")
        r.add("HEAD", "/v1/buckets/{bucket}", self.handle_head_bucket, access=client,
              query=accepts.BUCKET)
        r.add("DELETE", "/v1/buckets/{bucket}", self.handle_destroy_bucket, access=client,
              query=accepts.BUCKET)
        r.add("GET", "/v1/buckets/{bucket}", self.handle_list_objects, access=client,
              query=accepts.LISTING | {"cached"})
        r.add("GET", "/v1/buckets/{bucket}/info", self.handle_bucket_info, access=client,
              query=accepts.BUCKET)
        r.add("GET", "/v1/buckets/{bucket}/changes", self.handle_changes, access=client,
              query=accepts.CHANGES)
        r.add("GET", "/v1/cluster/status", self.handle_cluster_status, access=client, query=())
        r.add("POST", "/v1/cluster/join", self.handle_join, access=Access.MEMBER, query=(),
              body="json")
        r.add("PATCH", "/v1/buckets/{bucket}", self.handle_bucket_props, access=client,
              query=accepts.BUCKET, body="json")
        self.jobs = ProxyJobs(self)
        self.remotes = ProxyRemotes(self)
        self.s3 = S3Frontend(self)
        self.s3_url: str | None = None
        if config.s3.enabled:  # S3 at the root of this port: every path outside /v1/
            r.set_fallback(self.s3, expect=self.s3.expect, reserved="/v1")
        self.keys = ProxyKeys(self)

    @property
    def is_primary(self) -> bool:
        return self.primary is not None

    async def start_role(self) -> None:
        assert self.session is not None
        self._stack.callback(self.s3.local_reads.close)
        if self.config.cluster.primary_url:
            self.spawn(self._join_loop(), "join")
            return
        self.primary = Primary(self.config, self.me, self.state, self.session)
        await self.primary.bootstrap()
        self.joined.set()
        self.workers["keepalive"] = self.primary.keepalive
        self.spawn(self.primary.run_keepalive(), "keepalive")
        await self.jobs.start()
        self._stack.push_async_callback(self.jobs.stop)

    async def after_listen(self, runner: web.BaseRunner) -> None:
        """The dedicated S3-only port (``s3.port``), when configured."""
        port = self.config.s3.port
        if not self.config.s3.enabled or port is None:
            return
        only_s3 = Router()
        only_s3.set_fallback(self.s3, expect=self.s3.expect)
        s3_runner = web.ServerRunner(node_server(only_s3), handle_signals=False,
                                     shutdown_timeout=5.0)
        await s3_runner.setup()
        self._stack.push_async_callback(s3_runner.cleanup)
        site = web.TCPSite(s3_runner, self.config.host, port, backlog=1024, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.s3_url = f"http://{self.config.host}:{bound}"
        log.info("S3 API at %s", self.s3_url, extra={"url": self.s3_url})

    async def node_status(self) -> dict:
        status = await super().node_status()
        status["s3_url"] = self.s3_url or (self.me.url if self.config.s3.enabled else None)
        status["local_reads"] = self.s3.local_reads.stats.as_dict()
        return status

    def is_ready(self) -> bool:
        cluster_map = self.state.cluster_map
        return self.joined.is_set() and cluster_map is not None and bool(cluster_map.active_targets)

    # -- helpers --
    async def _remote_bucket(self, request: web.BaseRequest) -> None:
        """``ais://@alias/name`` of an attached remote is registered on first use."""
        if request.query_string and "namespace" in request.query:
            await self.remotes.ensure_bucket(bucket_ref(request))

    def _owner(self, request: web.BaseRequest) -> NodeInfo:
        ref, _ = self.known_bucket(request)
        name = object_name(request)
        cluster_map = self.state.cluster_map
        if cluster_map is None:
            raise NodeUnavailable("this proxy has no cluster map yet")
        return cluster_map.owner(ref, name)

    def _mode(self, request: web.BaseRequest) -> str:
        mode = request.query.get("mode", self.mode)
        if mode not in ("redirect", "reverse"):
            raise InvalidArgument("mode must be 'redirect' or 'reverse'")
        return mode

    # -- objects --
    async def expect_put(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """Answer ``Expect: 100-continue`` with the redirect itself: the body never comes here.

        In reverse mode it returns None and the router lets the body flow (100 Continue).
        """
        await self._remote_bucket(request)
        owner = self._owner(request)
        if self._mode(request) == "redirect":
            return web.Response(status=307, headers={"Location": self._location(request, owner)})
        return None

    async def handle_object(self, request: web.BaseRequest) -> web.StreamResponse:
        await self._remote_bucket(request)
        owner = self._owner(request)
        if self._mode(request) == "redirect":
            raise web.HTTPTemporaryRedirect(location=self._location(request, owner))
        return await self._reverse(request, owner)

    def _location(self, request: web.BaseRequest, owner: NodeInfo) -> str:
        """The owner's URL for this request, signed so the target knows a proxy sent it."""
        cluster_map = self.state.cluster_map
        return self.gate.signed_redirect(request, owner.url, cluster_map.version if cluster_map else 0)

    async def _reverse(self, request: web.BaseRequest, owner: NodeInfo) -> web.StreamResponse:
        assert self.session is not None
        return await relay(self.session, request, f"{owner.url}{_without_mode(request)}",
                           f"target {owner.id} at {owner.url}", drop=CLIENT_CREDENTIALS)

    # -- buckets --
    async def handle_list_buckets(self, request: web.BaseRequest) -> web.Response:
        bucket_map = self.state.bucket_map
        buckets = [] if bucket_map is None else [p.model_dump() for _, p in sorted(bucket_map.buckets.items())]
        return web.json_response({"buckets": buckets, "version": bucket_map.version if bucket_map else 0})

    async def handle_head_bucket(self, request: web.BaseRequest) -> web.Response:
        await self._remote_bucket(request)
        self.known_bucket(request)
        return web.Response(status=200)

    async def _forward_to_primary(self, request: web.BaseRequest) -> web.Response:
        cluster_map = self.state.cluster_map
        if cluster_map is None or self.session is None:
            raise NotPrimary("this proxy is not the primary and has no cluster map yet")
        url = f"{cluster_map.primary_node.url}{request.path_qs}"
        body = await request.read()
        try:
            # Long polls (?wait=, up to 60 s) ride on this too: allow them their time.
            timeout = aiohttp.ClientTimeout(total=self.config.http.client_timeout + 90)
            async with self.session.request(request.method, url, data=body or None,
                                            headers={"Content-Type": request.content_type},
                                            timeout=timeout) as up:
                payload = await up.read()
                return web.Response(status=up.status, body=payload,
                                    content_type=up.content_type if payload else None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeUnavailable(f"primary proxy at {cluster_map.primary_node.url} is unreachable") \
                from exc

    async def handle_create_bucket(self, request: web.BaseRequest) -> web.Response:
        """Create ``ais://`` buckets, or cached views of a source (body: profile, settings,
        source). A source is checked (reachable, bucket exists, credentials work) first."""
        ref = bucket_ref(request)
        if not self.is_primary:
            return await self._forward_to_primary(request)
        body = await json_object(request, "bucket properties", required=False)
        if ref.namespace:  # a bucket of an attached remote cluster
            if ref.provider != "ais":
                raise InvalidArgument(f"{ref}: only ais:// buckets live in remote clusters")
            if body:
                raise InvalidArgument(f"{ref}: a bucket of a remote cluster takes no "
                                      f"properties")
            if self.state.bucket_map is not None and self.state.bucket_map.get(ref) is not None:
                raise BucketAlreadyExists(f"bucket {ref} already exists")
            props = await self.remotes.ensure_bucket(ref)
            assert props is not None
            return web.json_response(props.model_dump(), status=201)
        assert self.primary is not None
        unknown = set(body) - {"profile", "settings", "source"}
        if unknown:
            raise InvalidArgument(f"unknown bucket properties: {', '.join(sorted(unknown))}")
        if ref.provider == "ais" and body:
            raise InvalidArgument("ais:// buckets take no source properties")
        try:
            props = BucketProps(name=ref.name, provider=ref.provider, **body)
        except ValueError as exc:
            raise InvalidArgument(f"invalid bucket properties: {exc}") from None
        if props.backed:
            backend, source = await self.sources.backend_for(props)
            await backend.list_page(source, limit=1)  # typed errors reach the client
        props = await self.primary.create_bucket(props)
        return web.json_response(props.model_dump(), status=201)

    async def handle_bucket_props(self, request: web.BaseRequest) -> web.Response:
        """Change a bucket's properties: ``consistency``, ``max_staleness`` (seconds or a
        duration like ``"5m"``; null clears it) and ``peers`` (attached remote aliases a cold
        GET asks first)."""
        ref, props = self.known_bucket(request)
        if not self.is_primary:
            return await self._forward_to_primary(request)
        assert self.primary is not None
        body = await json_object(request, "bucket properties")
        unknown = set(body) - {"consistency", "max_staleness", "peers", "anonymous_read"}
        if unknown:
            raise InvalidArgument(f"these bucket properties cannot be changed: "
                                  f"{', '.join(sorted(unknown))} (changeable: consistency, "
                                  f"max_staleness, peers, anonymous_read)")
        if "anonymous_read" in body:
            flag = body["anonymous_read"]
            if isinstance(flag, str) and flag.lower() in ("true", "false"):
                flag = flag.lower() == "true"
            if not isinstance(flag, bool):
                raise InvalidArgument("anonymous_read must be true or false")
            body["anonymous_read"] = flag
        if "peers" in body:
            peers = body["peers"]
            if isinstance(peers, str):
                peers = [p for p in peers.split(",") if p]
            if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
                raise InvalidArgument("peers must be a list of remote cluster aliases")
            for alias in peers:
                self.remote_urls(alias)  # RemoteNotFound names the alias
            body["peers"] = list(dict.fromkeys(peers))
        if not props.backed and set(body) - {"anonymous_read"}:
            raise InvalidArgument(f"{ref} has no source: consistency applies to cached buckets")
        if body.get("max_staleness") is not None:
            body["max_staleness"] = parse_duration(body["max_staleness"])
        props = await self.primary.update_bucket(ref, body)
        return web.json_response(props.model_dump())

    async def handle_destroy_bucket(self, request: web.BaseRequest) -> web.Response:
        ref = bucket_ref(request)
        if not self.is_primary:
            return await self._forward_to_primary(request)
        assert self.primary is not None
        await self.primary.destroy_bucket(ref)
        return web.Response(status=204)

    async def _from_targets(self, path: str, params: dict,
                            targets: list[NodeInfo] | None = None) -> list[dict]:
        cluster_map = self.state.cluster_map
        if cluster_map is None or not cluster_map.active_targets:
            raise NodeUnavailable("no active targets")
        assert self.session is not None

        async def one(target: NodeInfo) -> dict:
            try:
                async with self.session.get(f"{target.url}{path}", params=params) as resp:
                    body = await json_answer(resp, f"target {target.id}")
                    if resp.status != 200:
                        raise AisyncError(body.get("message", "target error"))
                    return body
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise NodeUnavailable(f"target {target.id} did not answer: {exc}") from exc

        nodes = cluster_map.active_targets if targets is None else targets
        return list(await asyncio.gather(*(one(t) for t in nodes)))

    async def handle_list_objects(self, request: web.BaseRequest) -> web.Response:
        """One page in key order. For a cached bucket: what the source has merged with what the
        cluster holds (``cached`` flag, source version token, ``in_source``); ``?cached=true``
        lists only the cluster's copies. Memory is bounded by ``limit`` × (targets + 1)."""
        await self._remote_bucket(request)
        ref, props = self.known_bucket(request)
        prefix = validate_prefix(request.query.get("prefix", ""))
        page, next_token = await self.list_page(ref, props, prefix,
                                                request.query.get("token") or None,
                                                page_limit(request), bool_query(request, "cached"))
        for entry in page:
            entry.pop("attrs", None)
        return web.json_response({"objects": page, "next_token": next_token})

    async def list_page(self, ref: BucketRef, props: BucketProps, prefix: str,
                        token: str | None, limit: int,
                        cached_only: bool = False) -> tuple[list[dict], str | None]:
        """Up to ``limit`` entries after ``token`` in key order, and the next token (None at
        the end). Entries of cached buckets carry ``version`` (the source's token, None when
        the source no longer lists the name), ``in_source``, ``cached``, ``cached_version``."""
        cached_page, cached_more = await self._cached_page(ref, prefix, token, limit)
        if not props.backed or cached_only:
            for entry in cached_page:
                source = entry.pop("source", None)
                if props.backed:
                    entry.update(cached=True, version=source)
            page = cached_page[:limit]
            more = cached_more or len(cached_page) > limit
            return page, page[-1]["name"] if more and page else None
        backend, source = await self.sources.backend_for(props)
        listed = await backend.list_page(source, prefix, token, limit)
        cached = {e["name"]: e for e in cached_page}
        merged: dict[str, dict] = {}
        for entry in listed.entries:
            copy = cached.get(entry.name)
            merged[entry.name] = {
                "name": entry.name, "size": entry.version.size,
                "version": entry.version.to_dict(), "in_source": True, "cached": copy is not None,
                "checksum": copy["checksum"] if copy else "",
                "mtime_ns": copy["mtime_ns"] if copy else 0,
                "cached_version": copy.get("source") if copy else None,
                "attrs": copy.get("attrs") if copy else None}
        for name, copy in cached.items():
            if name not in merged:  # cached, but the source no longer lists it
                merged[name] = {"name": name, "size": copy["size"], "version": None,
                                "in_source": False, "cached": True,
                                "checksum": copy["checksum"], "mtime_ns": copy["mtime_ns"],
                                "cached_version": copy.get("source"),
                                "attrs": copy.get("attrs")}
        names = sorted(merged, key=lambda n: n.encode("utf-8", "surrogatepass"))
        page = [merged[n] for n in names[:limit]]
        more = len(names) > limit or listed.next_token is not None or cached_more
        return page, page[-1]["name"] if more and page else None

    async def _cached_page(self, ref: BucketRef, prefix: str, token: str | None,
                           limit: int) -> tuple[list[dict], bool]:
        """Up to ``limit`` of the cluster's copies after ``token``, merged from every target,
        and whether any target has more."""
        params = {"provider": ref.provider, "prefix": prefix, "limit": str(limit)}
        if ref.namespace:
            params["namespace"] = ref.namespace
        if token:
            params["token"] = token
        pages = await self._from_targets(f"/v1/buckets/{ref.name}", params)
        merged = list(heapq.merge(*(p["objects"] for p in pages),
                                  key=lambda e: e["name"].encode("utf-8", "surrogatepass")))
        return merged, any(p.get("next_token") for p in pages)

    async def handle_bucket_info(self, request: web.BaseRequest) -> web.Response:
        await self._remote_bucket(request)
        ref, props = self.known_bucket(request)
        if not self.is_primary:  # the freshness watermark lives in the primary's catalog
            return await self._forward_to_primary(request)
        params = {"provider": ref.provider}
        if ref.namespace:
            params["namespace"] = ref.namespace
        infos = await self._from_targets(f"/v1/buckets/{ref.name}/info", params)
        return web.json_response({**props.model_dump(),
                                  "objects": sum(i["objects"] for i in infos),
                                  "bytes": sum(i["bytes"] for i in infos),
                                  "freshness": await self.jobs.freshness(props)
                                  if props.backed else None})

    async def handle_changes(self, request: web.BaseRequest) -> web.Response:
        """The bucket's change feed after ``since``: ``{"changes": [{seq, name, op, size,
        checksum}], "next": N, "more": bool}``; follow with ``since=next``. Without ``since``:
        an empty page whose ``next`` is the feed's head (where to start following).

        Each target numbers its own changes with a clock-based sequence and reports a *safe*
        bound (everything at or below it is committed and listed); the merged page stops at
        the lowest bound, so a cursor never passes a change that is still being written. Every
        target of the map must answer (a missing one could hide changes): otherwise 503. When
        ``since`` is older than what some target retains (rebuilt index, retention), the answer
        is 410 ``ChangeFeedGap``: list the bucket instead."""
        ref, _ = self.known_bucket(request)
        head_only = "since" not in request.query  # "where is the feed now?"
        since = int_query(request, "since", 0, 0, 2**63 - 1)
        limit = page_limit(request)
        cluster_map = self.state.cluster_map
        if cluster_map is None:
            raise NodeUnavailable("no cluster map yet")
        params = {"provider": ref.provider, "since": str(since), "limit": str(limit)}
        if ref.namespace:
            params["namespace"] = ref.namespace
        targets = [n for n in cluster_map.nodes.values() if n.role == "target"]
        parts = await self._from_targets(f"/v1/buckets/{ref.name}/changes", params,
                                         targets=targets)
        floor = max((p["floor"] for p in parts), default=0)
        safe = min((p["safe"] for p in parts), default=since)
        if head_only:
            return web.json_response({"changes": [], "next": safe, "more": False})
        if since < floor:
            raise ChangeFeedGap(f"the change feed of {ref} starts after {since} (at {floor}); "
                                f"list the bucket instead", floor=floor)
        merged = sorted((c for p in parts for c in p["changes"] if c["seq"] <= safe),
                        key=lambda c: c["seq"])
        more = len(merged) > limit or any(len(p["changes"]) == limit for p in parts)
        page = merged[:limit]
        cursor = page[-1]["seq"] if len(merged) > limit else max(safe, since)
        return web.json_response({"changes": page, "next": cursor, "more": more})

    # -- cluster --
    async def handle_join(self, request: web.BaseRequest) -> web.Response:
        if not self.is_primary:
            return await self._forward_to_primary(request)
        assert self.primary is not None
        join = accepts.parse_join(await json_object(request, "join"))
        node = NodeInfo(id=join.id, role=join.role, url=join.url, host=join.host,
                        local_socket=join.local_socket)
        cluster_map, bucket_map = await self.primary.join(node, join.map_version)
        return web.json_response({"cluster_map": cluster_map.model_dump(mode="json"),
                                  "bucket_map": bucket_map.model_dump(mode="json")})

    async def handle_cluster_status(self, request: web.BaseRequest) -> web.Response:
        cluster_map, bucket_map = self.state.cluster_map, self.state.bucket_map
        if cluster_map is None:
            raise NodeUnavailable("this proxy has no cluster map yet")
        assert self.session is not None

        async def one(node: NodeInfo) -> dict:
            if node.id == self.node_id:
                return await self.node_status()
            try:
                async with self.session.get(f"{node.url}/v1/node/status",
                                            timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    return await json_answer(resp, f"node {node.id}")
            except (aiohttp.ClientError, TimeoutError, ValueError, NodeUnavailable):
                return {"id": node.id, "role": node.role, "url": node.url,
                        "state": "unreachable", "primary": node.id == cluster_map.primary}

        nodes = await asyncio.gather(*(one(n) for n in sorted(cluster_map.nodes.values(),
                                                                key=lambda n: (n.role, n.id))))
        for status in nodes:
            status["map_state"] = cluster_map.nodes[status["id"]].state
        return web.json_response({"cluster": cluster_map.name, "uuid": cluster_map.uuid,
                                  "map_version": cluster_map.version,
                                  "bucket_map_version": bucket_map.version if bucket_map else 0,
                                  "primary": cluster_map.primary, "nodes": list(nodes)})


def _without_mode(request: web.BaseRequest) -> str:
    """The request's path and query for the target, less ``mode`` (the proxy's own parameter:
    a target has nothing to parse when it was the only one)."""
    path, _, query = request.path_qs.partition("?")
    if not query:
        return path
    kept = [part for part in query.split("&") if not part.startswith("mode=") and part != "mode"]
    return f"{path}?{'&'.join(kept)}" if kept else path
