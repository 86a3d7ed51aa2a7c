"""Remote clusters (peers in other zones), attached by alias, on the proxy.

* ``PUT /v1/remotes/{alias}`` (body ``{}``, or ``{"urls": [...]}`` to use only some) attaches a
  remote cluster that the nodes' configuration names as ``remotes.<alias>`` (its proxy URLs and
  its token): an alias it does not name, or a URL its profile does not list, is 403
  ``AccessDenied``, so no request makes the cluster fetch from a URL its operator did not
  configure. One of the URLs must answer with its cluster map, whose uuid is recorded (a cluster
  cannot attach itself).
* ``DELETE /v1/remotes/{alias}`` detaches it (refused while buckets of it are registered).
* ``GET /v1/remotes`` lists them with live reachability and the peer's map versions.

Attached remotes are cluster metadata (the replicated bucket map), so every node can resolve
``ais://@alias/bucket``: a bucket of the remote cluster, read through and cached locally like any
other source. Such a bucket is registered on first use (or with ``bucket create``).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from aisync.auth import Access
from aisync.cluster.maps import BucketProps
from aisync.node.accepts import check_fields
from aisync.node.http import MATCH, json_answer, json_object
from aisync.util.errors import (
    AccessDenied,
    BackendUnavailable,
    InvalidArgument,
    NodeUnavailable,
    error_from_dict,
)
from aisync.util.names import BucketRef

if TYPE_CHECKING:
    from aisync.proxy.node import ProxyNode

ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+/?$", value.strip()):
        raise InvalidArgument(f"not a proxy URL: {value!r} (use e.g. http://proxy.zone-a:51080)")
    return value.strip().rstrip("/")


class ProxyRemotes:
    def __init__(self, node: ProxyNode) -> None:
        self.node = node
        r = node.router
        r.add("GET", "/v1/remotes", self.handle_list, access=Access.CLIENT, query=())
        r.add("PUT", "/v1/remotes/{alias}", self.handle_attach, access=Access.CLIENT,
              query=(), body="json")
        r.add("DELETE", "/v1/remotes/{alias}", self.handle_detach, access=Access.CLIENT,
              query=())

    async def _probe(self, alias: str, url: str,
                     timeout: float = 3.0) -> dict[str, Any] | str:
        """The remote's cluster map from ``url``, or why there is none (``"url: reason"``)."""
        session = self.node.session
        assert session is not None
        try:
            headers = self.node.remote_headers(alias)
        except AccessDenied as exc:
            return f"{url}: {exc}"
        try:
            async with session.get(f"{url}/v1/cluster/map", headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status in (401, 403):
                    return (f"{url} refused the token of remotes.{alias} in the nodes' "
                            f"configuration ({resp.status})")
                if resp.status != 200:
                    return f"{url} answered {resp.status}"
                body = await json_answer(resp, f"the remote proxy at {url}")
                if isinstance(body, dict) and "uuid" in body:
                    return body
                return f"{url} is not an aisync proxy"
        except (aiohttp.ClientError, TimeoutError, ValueError, NodeUnavailable) as exc:
            return f"{url} did not answer ({type(exc).__name__})"

    async def handle_attach(self, request: web.BaseRequest) -> web.Response:
        alias = request[MATCH]["alias"]
        if not ALIAS.match(alias):
            raise InvalidArgument(f"bad remote alias {alias!r}: letters, digits, '.', '_', '-'")
        if not self.node.is_primary:
            return await self.node._forward_to_primary(request)
        body = check_fields(await json_object(request, "remote", required=False),
                            frozenset({"urls"}), "remote")
        urls = body.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if urls is not None:  # the shape first: a request we do not understand is a 400
            if not isinstance(urls, list) or not urls:
                raise InvalidArgument("urls must be one or more proxy URLs of the remote "
                                      "cluster")
            urls = list(dict.fromkeys(_url(u) for u in urls))
        profile = self.node.remote_profile(alias)  # AccessDenied: not in this node's config
        if urls is None:
            urls = list(dict.fromkeys(_url(u) for u in profile.urls))
        if not urls:
            raise InvalidArgument(f"the nodes' remotes.{alias}.urls lists no URL")
        unknown = [u for u in urls if u not in profile.urls]
        if unknown:
            raise AccessDenied(f"remote {alias}: {', '.join(unknown)} is not among the URLs of "
                               f"remotes.{alias} in the nodes' configuration")
        probes = await asyncio.gather(*(self._probe(alias, u) for u in urls))
        maps = [p for p in probes if isinstance(p, dict)]
        if not maps:
            raise BackendUnavailable(f"remote {alias}: none of its URLs answered: "
                                     f"{'; '.join(probes)}")
        uuids = {m["uuid"] for m in maps}
        if len(uuids) > 1:
            raise InvalidArgument(f"remote {alias}: the URLs belong to different clusters")
        cluster_map = self.node.state.cluster_map
        if cluster_map is not None and cluster_map.uuid in uuids:
            raise InvalidArgument(f"remote {alias}: that is this cluster")
        definition = {"urls": urls, "uuid": maps[0]["uuid"], "cluster": maps[0].get("name"),
                      "attached": datetime.now(UTC).isoformat(timespec="seconds")}
        assert self.node.primary is not None
        await self.node.primary.attach_remote(alias, definition)
        return web.json_response({"alias": alias, **definition}, status=201)

    async def handle_detach(self, request: web.BaseRequest) -> web.Response:
        if not self.node.is_primary:
            return await self.node._forward_to_primary(request)
        assert self.node.primary is not None
        await self.node.primary.detach_remote(request[MATCH]["alias"])
        return web.Response(status=204)

    async def handle_list(self, request: web.BaseRequest) -> web.Response:
        bucket_map = self.node.state.bucket_map
        remotes = dict(bucket_map.remotes) if bucket_map is not None else {}

        async def view(alias: str, definition: dict[str, Any]) -> dict[str, Any]:
            answered, peer = None, None
            for url in definition.get("urls", []):
                probe = await self._probe(alias, url)
                if isinstance(probe, dict):  # else: why this URL gave no map
                    answered, peer = url, probe
                    break
            return {"alias": alias, **definition, "reachable": answered is not None,
                    "answered": answered,
                    "map_version": peer.get("version") if peer else None,
                    "same_cluster": peer is None or peer.get("uuid") == definition.get("uuid"),
                    "buckets": sorted(str(p.ref) for p in (bucket_map.buckets.values() if bucket_map else [])
                                      if p.namespace == alias)}

        views = await asyncio.gather(*(view(a, d) for a, d in sorted(remotes.items())))
        return web.json_response({"remotes": list(views)})

    async def ensure_bucket(self, ref: BucketRef) -> BucketProps | None:
        """Register ``ais://@alias/name`` on first use when ``alias`` is attached; None when
        ``ref`` is not such a bucket. Non-primary proxies ask the primary."""
        bucket_map = self.node.state.bucket_map
        if not ref.namespace or ref.provider != "ais" or bucket_map is None:
            return None
        props = bucket_map.get(ref)
        if props is not None:
            return props
        self.node.remote_urls(ref.namespace)  # RemoteNotFound for an unknown alias
        if self.node.is_primary:
            props = BucketProps(name=ref.name, provider="ais", namespace=ref.namespace)
            backend, source = await self.node.sources.backend_for(props)
            await backend.list_page(source, limit=1)  # the peer has it: typed errors otherwise
            assert self.node.primary is not None
            try:
                return await self.node.primary.create_bucket(props)
            except Exception:
                current = self.node.state.bucket_map.get(ref) if self.node.state.bucket_map else None
                if current is not None:  # registered concurrently
                    return current
                raise
        cluster_map, session = self.node.state.cluster_map, self.node.session
        if cluster_map is None or session is None:
            raise NodeUnavailable("no cluster map yet")
        url = f"{cluster_map.primary_node.url}/v1/buckets/{ref.name}"
        params = {"provider": "ais", "namespace": ref.namespace}
        async with session.put(url, params=params) as resp:
            if resp.status not in (201, 409):
                raise error_from_dict(resp.status, await json_answer(resp, "the primary"))
        bucket_map = self.node.state.bucket_map
        return bucket_map.get(ref) if bucket_map is not None else None
