"""The target: a storage node that owns the objects HRW places on it.

Serves object GET (zero-copy ``sendfile`` for large objects, verified in-memory reads for small
ones), HEAD, PUT (acknowledged only once durable), DELETE, and a local listing page that proxies
merge. At start it opens its mountpaths, then joins the primary proxy and keeps trying until it is
admitted; it is ready once the cluster map lists it as active.

A request for an object this target does not own (the map moved on) is redirected (307) to the
owner, so a client with an older view still lands in the right place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

from aiohttp import web

from aisync.auth import Access
from aisync.backends.base import Backend, VersionToken
from aisync.cluster.maps import BucketMap, BucketProps, ClusterMap
from aisync.cluster.workers import WorkerStatus
from aisync.config import dump_with_secrets
from aisync.node import accepts
from aisync.node.files import file_response, range_of, send_file_range, small_response
from aisync.node.http import (
    bool_query,
    int_query,
    misdirected_put,
    object_headers,
    object_name,
    owner_location,
    page_limit,
    put_attrs,
    source_headers,
)
from aisync.node.runtime import NodeRuntime
from aisync.storage.metadata import ObjectMetadata
from aisync.storage.objects import ObjectStore
from aisync.sync.onaccess import Decision, OnAccess
from aisync.sync.peers import Peer, PeerFirst, PeerStats
from aisync.sync.readthrough import ColdFetch, ReadThrough
from aisync.target.batches import TargetJobs
from aisync.target.localread import LocalReadServer
from aisync.target.read_worker import control_socket
from aisync.target.uploads import TargetUploads
from aisync.util.errors import (
    AccessDenied,
    ChecksumMismatch,
    IncompleteBody,
    ObjectNotFound,
    PayloadTooLarge,
    RemoteNotFound,
)
from aisync.util.names import BucketRef, validate_prefix

log = logging.getLogger("aisync.target")


class ColdResponse(web.StreamResponse):
    """A cold GET's answer: bytes go out (``sendfile``) as the read-through fetch lands them.

    Prepared by aiohttp after the handler returns, so a client that goes away is a quiet
    ``ConnectionError``. If the fetch fails after the headers went out, the connection is cut:
    the client sees a body shorter than its Content-Length, never a complete-looking object.
    """

    def __init__(self, fetch: ColdFetch, offset: int, count: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._fetch, self._offset, self._count = fetch, offset, count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest):
        if self.prepared:
            return await super().prepare(request)
        fetch = self._fetch
        async with fetch.reader() as fd:
            writer = await super().prepare(request)
            position, end = self._offset, self._offset + self._count
            try:
                with open(fd, "rb", closefd=False) as fobj:
                    while position < end:
                        available = await fetch.wait_sendable(position, end)
                        if available <= position:
                            raise IncompleteBody("the source ended early")
                        data = fetch.from_window(position, available)
                        if data is None:  # already on disk: zero-copy
                            n = min(available, fetch.durable) - position
                            await send_file_range(request, writer, fobj, position, n)
                        else:
                            n = len(data)
                            await writer.write(data)
                        position += n
            except ConnectionError:
                raise
            except Exception as exc:
                log.warning("cold GET of %s/%s cut short: %s", fetch.bucket, fetch.name, exc)
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError(str(exc)) from exc
            await super().write_eof()
            return writer


def _put_headers(meta: ObjectMetadata) -> dict[str, str]:
    """The stored object's headers on a PUT's JSON answer (its own Content-Type stays, and no
    stored Content-Encoding claims to apply to the JSON)."""
    headers = object_headers(meta)
    headers.pop("Content-Type", None)
    headers.pop("Content-Encoding", None)
    return headers


class TargetNode(NodeRuntime):
    role = "target"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.store = ObjectStore(config.resolved_mountpaths(),
                                 Path(config.data_dir) / "index.db", fsync=config.storage.fsync,
                                 hot_cache_bytes=config.storage.hot_cache_bytes)
        self.small = config.storage.small_object_bytes
        self.readthrough = ReadThrough(self.store, config.storage.cold_window_bytes)
        self.on_access = OnAccess()
        self.peer_stats = PeerStats()
        self.jobs = TargetJobs(self)
        self.uploads = TargetUploads(self)  # multipart uploads: /v1/uploads/...
        self.local_reads: LocalReadServer | None = None  # short-circuit reads for local proxies
        r = self.router
        obj = Access.OBJECT  # members, and clients a proxy redirected here
        # The query a proxy's object route accepted comes here as is (aisync.node.accepts).
        r.add("GET", "/v1/objects/{bucket}/{name:.+}", self.handle_get, access=obj,
              query=accepts.OBJECT_READ)
        r.add("HEAD", "/v1/objects/{bucket}/{name:.+}", self.handle_get, access=obj,
              query=accepts.OBJECT_READ)
        r.add("PUT", "/v1/objects/{bucket}/{name:.+}", self.handle_put, expect=self.expect_put,
              access=obj, query=accepts.OBJECT_WRITE, body="stream")
        r.add("DELETE", "/v1/objects/{bucket}/{name:.+}", self.handle_delete, access=obj,
              query=accepts.OBJECT_WRITE)
        r.add("GET", "/v1/buckets/{bucket}", self.handle_list, query=accepts.LISTING)
        r.add("GET", "/v1/buckets/{bucket}/info", self.handle_bucket_info,
              query=accepts.BUCKET)
        r.add("GET", "/v1/buckets/{bucket}/changes", self.handle_changes,
              query=accepts.CHANGES)
        self.state.add_listener(self._on_maps)

    async def start_role(self) -> None:
        await self.store.start()
        self._stack.push_async_callback(self.store.stop)
        if self.config.http.local_reads:  # before joining: the map carries the socket
            self.local_reads = LocalReadServer(self, Path(self.config.data_dir) / "local.sock")
            self.me = self.me.model_copy(update={"local_socket": self.local_reads.start()})
            self._stack.push_async_callback(self.local_reads.stop)
        self._stack.push_async_callback(self.readthrough.close)
        self._stack.push_async_callback(self.jobs.close)
        self._stack.push_async_callback(self.uploads.close)
        self.uploads.start()
        if self.store.rebuilt_objects is not None:
            log.info("object index rebuilt from files: %d objects", self.store.rebuilt_objects)
        self.spawn(self._join_loop(), "join")

    # -- read workers (see aisync.target.read_worker) --
    async def after_listen(self, runner: web.BaseRunner) -> None:
        count = self.config.http.read_workers
        if not count:
            return
        sock_path = control_socket(self.config)
        sock_path.unlink(missing_ok=True)
        await web.UnixSite(runner, str(sock_path)).start()
        config_path = Path(self.config.data_dir) / "read-worker.json"
        text = dump_with_secrets(self.config.model_copy(update={"node_id": self.node_id}))
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        read_end, self._worker_pipe = os.pipe()  # workers exit when this write end closes
        status = self.workers["read-workers"] = WorkerStatus("read-workers", state="running")
        for slot in range(count):
            self.spawn(self._supervise(slot, config_path, read_end, status), f"reader-{slot}")
        self._stack.callback(os.close, self._worker_pipe)

    async def _supervise(self, slot: int, config_path: Path, read_end: int,
                         status: WorkerStatus) -> None:
        """Keep one read worker running; restart it (with backoff) if it dies."""
        delay = 0.5
        while True:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aisync.target.read_worker", str(config_path), str(read_end),
                pass_fds=(read_end,), stdin=asyncio.subprocess.DEVNULL)
            status.details.setdefault("pids", {})[str(slot)] = proc.pid
            try:
                code = await proc.wait()
            except asyncio.CancelledError:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                raise
            status.runs += 1
            status.last_error = f"read worker {slot} exited with {code}; restarting"
            log.warning(status.last_error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def is_ready(self) -> bool:
        cluster_map = self.state.cluster_map
        return (self.joined.is_set() and cluster_map is not None
                and self.node_id in cluster_map.nodes and cluster_map.nodes[self.node_id].state == "active")

    async def _on_maps(self, cluster_map: ClusterMap | None, bucket_map: BucketMap | None,
                       old_bucket_map: BucketMap | None) -> None:
        if bucket_map is not None:  # build new cached buckets' backends before their first cold GET
            for uname, props in bucket_map.buckets.items():
                if props.backed and (old_bucket_map is None or uname not in old_bucket_map.buckets):
                    self.spawn(self.sources.warm(props), f"warm {uname}")
        if bucket_map is None or old_bucket_map is None:
            return
        for uname, props in old_bucket_map.buckets.items():
            current = bucket_map.buckets.get(uname)
            if current is None or current.created != props.created:
                log.info("bucket %s destroyed: removing its objects", uname)
                await self.store.destroy_bucket(uname)

    # -- helpers --
    def _redirect_to_owner(self, request: web.BaseRequest, ref: BucketRef, name: str) -> None:
        location = owner_location(request, self.state.cluster_map, ref, name, self.node_id)
        if location is not None:
            raise web.HTTPTemporaryRedirect(location=location)

    # -- objects --
    async def handle_get(self, request: web.BaseRequest) -> web.StreamResponse:
        ref, props = self.known_bucket(request)
        name = object_name(request)
        uname = ref.uname
        latest = props.backed and bool_query(request, "latest")
        check = props.backed and OnAccess.wanted(props.consistency, latest)
        if not check:
            hit = self.store.cached(uname, name)
            if hit is not None:
                return small_response(request, hit[0], hit[1], hot=True)
        arrived = time.monotonic()  # what a re-validated or fetched copy must be fresher than
        cached_only = bool_query(request, "cached")  # a peer asking: never read through
        epoch = self.store.write_epoch(uname, name)
        try:
            obj = self.store.open(uname, name)
        except ObjectNotFound:
            self._redirect_to_owner(request, ref, name)
            if props.backed and not cached_only:
                return await self._cold_get(request, props, name,
                                            fresh_after=arrived if check else None)
            raise ObjectNotFound(f"{ref}/{name}: no such object") from None
        if check:
            try:
                decision = await self._on_access(props, obj.meta, latest)
            except BaseException:
                obj.close()
                raise
            if decision is not Decision.SERVE:
                obj.close()
                if decision is Decision.REFETCH and cached_only:
                    raise ObjectNotFound(f"{ref}/{name}: the copy here is not current")
                if decision is Decision.REFETCH:
                    return await self._cold_get(request, props, name, fresh_after=arrived)
                raise ObjectNotFound(f"{ref}/{name}: deleted at the source")
        try:
            if obj.size <= self.small and request.method == "GET":
                data = await self.store.read_verified(obj, epoch)
                return small_response(request, obj.meta, data)
            if request.method == "GET" and (self.config.storage.verify_on_get
                                            or bool_query(request, "verify")):
                await self.store.verify(obj)
            response = file_response(request, obj)
            obj = None  # the response owns it now
            return response
        finally:
            if obj is not None:
                obj.close()

    async def _on_access(self, props: BucketProps, meta: ObjectMetadata,
                         latest: bool) -> Decision:
        """Validate a warm copy against its source (see :mod:`aisync.sync.onaccess`)."""
        backend, source = await self.sources.backend_for(props)
        cached = VersionToken.from_dict(meta.source) if meta.source else None
        decision = await self.on_access.check(
            backend, source, meta.bucket, meta.name, cached=cached,
            cached_at=meta.mtime_ns / 1e9, consistency=props.consistency,
            max_staleness=props.max_staleness, latest=latest)
        if decision is Decision.GONE and props.consistency == "synchronize":
            try:
                await self.store.delete(meta.bucket, meta.name)
                self.on_access.stats.removed_copies += 1
            except ObjectNotFound:
                pass
        return decision

    async def _cold_get(self, request: web.BaseRequest, props: BucketProps, name: str, *,
                        fresh_after: float | None = None) -> web.StreamResponse:
        """Read through: fetch from the source once, stream to this client as bytes land."""
        backend, source = await self.sources.backend_for(props)
        if props.peers and not props.namespace:
            backend = self._peer_first(backend, props)
        if request.method == "HEAD":
            version = await backend.head(source, name)
            headers = source_headers(version)
            status, _, count = range_of(request, version.size, headers)
            headers["Content-Length"] = str(count)
            return web.Response(status=status, headers=headers)
        fetch = self.readthrough.fetch(backend, source, props.ref.uname, name,
                                       fresh_after=fresh_after)
        try:
            version = await fetch.started()
            headers = source_headers(version)
            status, offset, count = range_of(request, version.size, headers)
        except BaseException:
            fetch.abandon()
            raise
        return ColdResponse(fetch, offset, count, status=status, headers=headers)

    def _peer_first(self, backend: Backend, props: BucketProps,
                    aliases: list[str] | None = None) -> PeerFirst:
        peers = []
        for alias in aliases or props.peers:
            try:
                peers.append(Peer(alias, tuple(self.remote_urls(alias)),
                                  tuple(self.remote_headers(alias).items())))
            except (RemoteNotFound, AccessDenied) as exc:
                log.warning("bucket %s lists peer %s, which cannot be used: %s", props.ref,
                            alias, exc)
        query = {"provider": props.provider}
        assert self.session is not None
        return PeerFirst(backend, peers, provider=props.provider, bucket_path=props.name,
                         bucket_query=query, session=self.session, stats=self.peer_stats)

    async def expect_put(self, request: web.BaseRequest) -> web.StreamResponse | None:
        return misdirected_put(request, self.state.cluster_map, self.state.bucket_map, self.node_id)

    async def handle_put(self, request: web.BaseRequest) -> web.Response:
        ref, props = self.known_bucket(request)
        name = object_name(request)
        self._redirect_to_owner(request, ref, name)
        limit = self.config.http.max_object_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"object of {request.content_length} bytes exceeds {limit}")
        attrs, md5 = put_attrs(request)
        writer = self.store.writer(ref.uname, name, max_size=limit, md5=md5 is not None)
        try:
            async for chunk in request.content.iter_any():
                await writer.write(chunk)
            await writer.finish(request.content_length,
                                request.headers.get("X-Aisync-Checksum"))
            if writer.md5 is not None:
                if md5 and md5 != writer.md5:
                    raise ChecksumMismatch("the Content-MD5 you specified did not match what we "
                                    "received")
                attrs["etag"] = writer.md5
            source = None
            if props.backed:  # the source's write succeeds before anything is cached or acked
                backend, bucket = await self.sources.backend_for(props)
                version = await backend.put(bucket, name, writer.temp,
                                            content_type=attrs.get("type") or
                                            request.headers.get("Content-Type"))
                source = version.to_dict()
            meta = await writer.commit(source=source, attrs=attrs)
        finally:
            await writer.abort()
        return web.json_response({"bucket": ref.name, "provider": ref.provider, "name": name,
                                  "size": meta.size, "checksum": meta.checksum,
                                  "mtime_ns": meta.mtime_ns}, headers=_put_headers(meta))

    async def handle_delete(self, request: web.BaseRequest) -> web.Response:
        ref, props = self.known_bucket(request)
        name = object_name(request)
        self._redirect_to_owner(request, ref, name)
        if props.backed:  # the source first: a failed delete there keeps the cached copy
            backend, source = await self.sources.backend_for(props)
            try:
                await backend.delete(source, name)
            except ObjectNotFound:
                try:
                    await self.store.delete(ref.uname, name)
                except ObjectNotFound:
                    pass
                raise
            try:
                await self.store.delete(ref.uname, name)
            except ObjectNotFound:
                pass
            return web.Response(status=204)
        await self.store.delete(ref.uname, name)
        return web.Response(status=204)

    # -- listing --
    async def handle_list(self, request: web.BaseRequest) -> web.Response:
        ref, _ = self.known_bucket(request)
        prefix = validate_prefix(request.query.get("prefix", ""))
        limit = page_limit(request)
        after = request.query.get("token") or None
        entries = await self.store.list_page(ref.uname, prefix, after, limit)
        return web.json_response({
            "objects": [{"name": e.name, "size": e.size, "checksum": e.checksum,
                         "mtime_ns": e.mtime_ns, "source": e.source, "origin": e.origin,
                         "attrs": e.attrs}
                        for e in entries],
            "next_token": entries[-1].name if len(entries) == limit else None})

    async def handle_changes(self, request: web.BaseRequest) -> web.Response:
        """This target's part of the bucket's change feed after ``since`` (see the proxy)."""
        ref, _ = self.known_bucket(request)
        since = int_query(request, "since", 0, 0, 2**63 - 1)
        page, floor, safe = await self.store.changes_page(ref.uname, since, page_limit(request))
        return web.json_response({"changes": page, "floor": floor, "safe": safe})

    async def handle_bucket_info(self, request: web.BaseRequest) -> web.Response:
        ref, _ = self.known_bucket(request)
        count, total = await self.store.summary(ref.uname)
        return web.json_response({"objects": count, "bytes": total})

    async def node_status(self) -> dict:
        status = await super().node_status()
        disks = await self.run_blocking(self.store.disk_usage)
        count, total = await self.store.summary()
        status.update(disks=[dataclasses.asdict(d) for d in disks], objects=count, bytes=total,
                      readthrough=dataclasses.asdict(self.readthrough.stats),
                      on_access=self.on_access.stats.as_dict(),
                      peers=self.peer_stats.as_dict(),
                      jobs=dataclasses.asdict(self.jobs.executor.stats),
                      local_reads=self.local_reads.stats.as_dict() if self.local_reads else None)
        return status
