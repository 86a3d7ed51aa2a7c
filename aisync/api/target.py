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
from pathlib import Path

from aiohttp import web

from aisync.api.common import (
    bool_query,
    bucket_ref,
    content_range,
    int_query,
    object_headers,
    object_name,
    parse_range,
)
from aisync.api.runtime import NodeRuntime
from aisync.cluster.maps import BucketMap, ClusterMap
from aisync.storage.objects import ObjectStore, OpenObject
from aisync.util.errors import BucketNotFound, ObjectNotFound
from aisync.util.names import BucketRef, validate_prefix

log = logging.getLogger("aisync.target")
MAX_PAGE = 10000


class FdResponse(web.StreamResponse):
    """Send ``count`` bytes of an already-open file from ``offset`` with ``loop.sendfile``.

    The file stays the one the metadata headers were read from, even if the object is
    overwritten meanwhile (the rename swaps the directory entry, not this inode).
    """

    def __init__(self, obj: OpenObject, offset: int, count: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._obj, self._offset, self._count = obj, offset, count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest):
        if self.prepared:  # aiohttp calls prepare again when the handler returns
            return await super().prepare(request)
        writer = await super().prepare(request)
        if request.method == "HEAD" or self._count == 0:
            await super().write_eof()
            return writer
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        with open(self._obj.fd, "rb", closefd=False) as fobj:
            try:
                await request._loop.sendfile(transport, fobj, self._offset, self._count)
            except NotImplementedError:
                await self._fallback(writer, request._loop, fobj)
        await super().write_eof()
        return writer

    async def _fallback(self, writer, loop: asyncio.AbstractEventLoop, fobj) -> None:
        remaining, offset = self._count, self._offset
        while remaining:
            chunk = await loop.run_in_executor(None, _pread, self._obj.fd,
                                               min(remaining, 1 << 20), offset)
            if not chunk:
                raise ConnectionResetError("object shrank while sending")
            await writer.write(chunk)
            offset += len(chunk)
            remaining -= len(chunk)


def _pread(fd: int, n: int, offset: int) -> bytes:
    return os.pread(fd, n, offset)


class TargetNode(NodeRuntime):
    role = "target"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.store = ObjectStore(config.resolved_mountpaths(),
                                 Path(config.data_dir) / "index.db", fsync=config.storage.fsync,
                                 hot_cache_bytes=config.storage.hot_cache_bytes)
        self.small = config.storage.small_object_bytes
        r = self.app.router
        r.add_route("GET", "/v1/objects/{bucket}/{name:.+}", self.handle_get)
        r.add_route("HEAD", "/v1/objects/{bucket}/{name:.+}", self.handle_get)
        r.add_route("PUT", "/v1/objects/{bucket}/{name:.+}", self.handle_put)
        r.add_route("DELETE", "/v1/objects/{bucket}/{name:.+}", self.handle_delete)
        r.add_get("/v1/buckets/{bucket}", self.handle_list, allow_head=False)
        r.add_get("/v1/buckets/{bucket}/info", self.handle_bucket_info)
        self.state.add_listener(self._on_maps)

    async def start_role(self) -> None:
        await self.store.start()
        self._stack.push_async_callback(self.store.stop)
        if self.store.rebuilt_objects is not None:
            log.info("object index rebuilt from files: %d objects", self.store.rebuilt_objects)
        self.spawn(self._join_loop(), "join")

    def is_ready(self) -> bool:
        cmap = self.state.cmap
        return (self.joined.is_set() and cmap is not None
                and self.node_id in cmap.nodes and cmap.nodes[self.node_id].state == "active")

    async def _on_maps(self, cmap: ClusterMap | None, bmap: BucketMap | None,
                       old_bmap: BucketMap | None) -> None:
        if bmap is None or old_bmap is None:
            return
        for uname, props in old_bmap.buckets.items():
            current = bmap.buckets.get(uname)
            if current is None or current.created != props.created:
                log.info("bucket %s destroyed: removing its objects", uname)
                await self.store.destroy_bucket(uname)

    # -- helpers --
    def _bucket(self, request: web.Request) -> BucketRef:
        ref = bucket_ref(request)
        bmap = self.state.bmap
        if bmap is None or bmap.get(ref) is None:
            raise BucketNotFound(f"bucket {ref} does not exist")
        return ref

    def _redirect_to_owner(self, request: web.Request, ref: BucketRef, name: str) -> None:
        cmap = self.state.cmap
        if cmap is None:
            return
        owner = cmap.owner(ref, name)
        if owner.id != self.node_id:
            raise web.HTTPTemporaryRedirect(location=f"{owner.url}{request.path_qs}")

    # -- objects --
    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        ref = self._bucket(request)
        name = object_name(request)
        uname = ref.uname
        hit = self.store.cached(uname, name)
        if hit is not None:
            return self._small_response(request, hit[0], hit[1])
        epoch = self.store.write_epoch(uname, name)
        try:
            obj = self.store.open(uname, name)
        except ObjectNotFound:
            self._redirect_to_owner(request, ref, name)
            raise ObjectNotFound(f"{ref}/{name}: no such object") from None
        try:
            if obj.size <= self.small and request.method == "GET":
                data = await self.store.read_verified(obj, epoch)
                return self._small_response(request, obj.meta, data)
            headers = object_headers(obj.meta)
            status, offset, count = self._range(request, obj.size, headers)
            if request.method == "HEAD":
                headers["Content-Length"] = str(count)
                return web.Response(status=status, headers=headers)
            if self.config.storage.verify_on_get or bool_query(request, "verify"):
                await self.store.verify(obj)
            response = FdResponse(obj, offset, count, status=status, headers=headers)
            await response.prepare(request)
            return response
        finally:
            obj.close()

    @staticmethod
    def _range(request: web.Request, size: int, headers: dict) -> tuple[int, int, int]:
        """(status, offset, count) for the request's Range header; adds Content-Range."""
        rng = parse_range(request.headers.get("Range"), size)
        if rng is None:
            return 200, 0, size
        headers["Content-Range"] = content_range(rng[0], rng[1], size)
        return 206, rng[0], rng[1]

    def _small_response(self, request: web.Request, meta, data: bytes) -> web.Response:
        headers = object_headers(meta)
        status, offset, count = self._range(request, meta.size, headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(count)
            return web.Response(status=status, headers=headers)
        body = data if count == meta.size else data[offset:offset + count]
        return web.Response(body=body, status=status, headers=headers)

    async def handle_put(self, request: web.Request) -> web.Response:
        ref = self._bucket(request)
        name = object_name(request)
        self._redirect_to_owner(request, ref, name)
        meta = await self.store.put(
            ref.uname, name, request.content.iter_any(),
            expected_size=request.content_length,
            expected_checksum=request.headers.get("X-Aisync-Checksum"),
            max_size=self.config.http.max_object_bytes)
        return web.json_response({"bucket": ref.name, "provider": ref.provider, "name": name,
                                  "size": meta.size, "checksum": meta.checksum,
                                  "mtime_ns": meta.mtime_ns}, headers=object_headers(meta))

    async def handle_delete(self, request: web.Request) -> web.Response:
        ref = self._bucket(request)
        name = object_name(request)
        try:
            await self.store.delete(ref.uname, name)
        except ObjectNotFound:
            self._redirect_to_owner(request, ref, name)
            raise
        return web.Response(status=204)

    # -- listing --
    async def handle_list(self, request: web.Request) -> web.Response:
        ref = self._bucket(request)
        prefix = validate_prefix(request.query.get("prefix", ""))
        limit = int_query(request, "limit", 1000, 1, MAX_PAGE)
        after = request.query.get("token") or None
        entries = await self.store.list_page(ref.uname, prefix, after, limit)
        return web.json_response({
            "objects": [{"name": e.name, "size": e.size, "checksum": e.checksum,
                         "mtime_ns": e.mtime_ns} for e in entries],
            "next_token": entries[-1].name if len(entries) == limit else None})

    async def handle_bucket_info(self, request: web.Request) -> web.Response:
        ref = self._bucket(request)
        count, total = await self.store.summary(ref.uname)
        return web.json_response({"objects": count, "bytes": total})

    async def node_status(self) -> dict:
        status = await super().node_status()
        disks = await self.run_blocking(self.store.disk_usage)
        count, total = await self.store.summary()
        status.update(disks=[dataclasses.asdict(d) for d in disks], objects=count, bytes=total)
        return status
