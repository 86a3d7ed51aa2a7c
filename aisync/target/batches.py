"""The target's job endpoints: run a batch of a job's actions, abort a job.

``POST /v1/jobs/{job}/batch`` with ``{"spec": JobSpec, "targets": N, "actions": [...]}``
answers ``{"results": [...]}``, one per action (see :mod:`aisync.sync.executor`). The target
resolves where to read and write from its bucket map: a cached bucket's source through its
backend; an ``ais://`` bucket of this cluster through the cluster's own API (so a copy reads
objects wherever they live, pinned to the planned version).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from aisync.backends.ais import AisBackend
from aisync.cluster.maps import BucketProps
from aisync.node.accepts import check_fields
from aisync.node.http import MATCH, json_object
from aisync.sync.executor import BatchContext, JobExecutor
from aisync.sync.jobs import parse_spec
from aisync.util.errors import BucketNotFound, InvalidArgument, NodeUnavailable
from aisync.util.names import parse_uri

if TYPE_CHECKING:
    from aisync.target.node import TargetNode

#: What ``POST /v1/jobs/{job}/batch`` carries: the job's spec, how many targets share its
#: limits, and this target's actions.
BATCH_FIELDS = frozenset({"spec", "targets", "actions"})


class TargetJobs:
    def __init__(self, node: TargetNode) -> None:
        self.node = node
        self.executor = JobExecutor(node.store)
        self._cluster: AisBackend | None = None
        self._cluster_urls: tuple[str, ...] = ()
        node.router.add("POST", "/v1/jobs/{job}/batch", self.handle_batch, query=(),
                        body="json")
        node.router.add("POST", "/v1/jobs/{job}/abort", self.handle_abort, query=())
        node.router.add("POST", "/v1/jobs/{job}/settle", self.handle_settle, query=())

    async def close(self) -> None:
        if self._cluster is not None:
            await self._cluster.close()

    def _props(self, uri: str) -> BucketProps:
        try:
            ref, _ = parse_uri(uri)
        except ValueError as exc:
            raise InvalidArgument(f"bad bucket {uri!r}: {exc}") from None
        bucket_map = self.node.state.bucket_map
        props = bucket_map.get(ref) if bucket_map is not None else None
        if props is None:
            raise BucketNotFound(f"bucket {uri} does not exist")
        return props

    async def _this_cluster(self) -> AisBackend:
        """This cluster's own API as a backend (to read ``ais://`` objects of a copy's source)."""
        cluster_map = self.node.state.cluster_map
        urls = tuple(p.url for p in cluster_map.proxies) if cluster_map is not None else ()
        if not urls:
            raise NodeUnavailable("no proxy in the cluster map")
        if self._cluster is None or urls != self._cluster_urls:
            if self._cluster is not None:
                await self._cluster.close()
            token = self.node.config.auth.admin_token  # this cluster's own client routes
            self._cluster = AisBackend(list(urls),
                                       token=token.get_secret_value() if token else "")
            self._cluster_urls = urls
        return self._cluster

    async def _context(self, body: dict) -> tuple[str, BatchContext]:
        if not isinstance(body.get("spec"), dict):
            raise InvalidArgument("job batch: spec must be a job specification (an object)")
        spec = parse_spec(body["spec"])
        targets = body.get("targets", 1)
        if type(targets) is not int or targets < 1:
            raise InvalidArgument("targets must be a positive integer")
        src = self._props(spec.bucket)
        share = {"bandwidth": spec.bandwidth / targets if spec.bandwidth else None,
                 "rate": spec.rate / targets if spec.rate else None, "retries": spec.retries}
        sources = self.node.sources
        if spec.destination is None:  # the bucket's own cache
            source = await sources.backend_for(src) if src.backed else None
            peers = spec.peers or src.peers
            if source is not None and peers and not src.namespace:  # peer-first (--from)
                source = (self.node._peer_first(source[0], src, peers), source[1])
            return src.ref.uname, BatchContext(dest_bucket=src.ref.uname, source=source,
                                               source_uri=spec.bucket, **share)
        dest = self._props(spec.destination)
        if src.backed:
            source = await sources.backend_for(src)
        else:
            source = (await self._this_cluster(), src.name)
        write_through = await sources.backend_for(dest) if dest.backed else None
        return dest.ref.uname, BatchContext(dest_bucket=dest.ref.uname, source=source,
                                            source_uri=spec.bucket, write_through=write_through,
                                            **share)

    async def handle_batch(self, request: web.BaseRequest) -> web.Response:
        job_id = request[MATCH]["job"]
        body = check_fields(await json_object(request, "job batch"), BATCH_FIELDS, "job batch")
        actions = body.get("actions")
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            raise InvalidArgument("actions must be a list of objects")
        _, ctx = await self._context(body)
        results = await self.executor.run_batch(job_id, actions, ctx)
        return web.json_response({"results": results})

    async def handle_abort(self, request: web.BaseRequest) -> web.Response:
        self.executor.abort(request[MATCH]["job"])
        return web.json_response({"aborted": True})

    async def handle_settle(self, request: web.BaseRequest) -> web.Response:
        await self.executor.settle(request[MATCH]["job"])
        return web.json_response({"settled": True})
