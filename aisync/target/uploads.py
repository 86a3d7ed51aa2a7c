"""The target's multipart-upload routes (S3 semantics) and the worker that expires uploads.

The proxy's S3 front end sends every call for (bucket, key) to the key's HRW owner; the bytes
live in :mod:`aisync.storage.uploads`. Bucket and object are named as on the object routes
(``?provider=&namespace=``), and the bucket must exist (``BucketNotFound``)::

    POST   /v1/uploads/{bucket}/{name}                  create -> 201 {"upload_id"}
           X-Aisync-Attrs: {"type", "meta", "headers"} (as on PUT) kept for the object
    PUT    /v1/uploads/{bucket}/{name}?upload_id=U&part=N         one part (N in 1..10000)
           Content-Length required; X-Aisync-Md5: hex (400 BadDigest on mismatch)
           -> {"part", "etag": MD5 hex, "size"}; a part sent again replaces the old one
    GET    /v1/uploads/{bucket}/{name}?upload_id=U[&part_marker=N&max_parts=M]
           -> {"bucket", "provider", "name", "upload_id", "initiated", "attrs",
               "parts": [{"part", "etag", "size", "last_modified"}], "next_part_marker",
               "truncated"}  (parts after part_marker, at most max_parts (default 1000))
    POST   /v1/uploads/{bucket}/{name}?upload_id=U&complete   {"parts": [{"part", "etag"}]}
           -> {"bucket", "provider", "name", "size", "etag", "checksum", "mtime_ns"}
    DELETE /v1/uploads/{bucket}/{name}?upload_id=U            abort -> 204
    GET    /v1/uploads/{bucket}?prefix=P    this target's uploads in progress:
           {"uploads": [{"name", "upload_id", "initiated"}]} by (name bytes, initiated)

An unknown upload id is 404 ``NoSuchUpload``. Times are seconds since the epoch (floats).

Placement: create is redirected (307) to the object's owner, like a PUT. The other calls are
served where the upload lives; an upload that is not here is redirected to the owner when this
target is not it (a client with an older map), else 404. Complete on a target that holds the
upload but no longer owns the object (the map moved since create) answers 409 ``Conflict``:
committing here would store an object that no GET finds. A cached bucket's complete writes the
object through to its source before committing (as a PUT does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from aisync.cluster.maps import BucketProps
from aisync.cluster.workers import WorkerStatus
from aisync.node import accepts
from aisync.node.http import (
    bucket_ref,
    int_query,
    json_object,
    object_name,
    owner_location,
    put_attrs,
)
from aisync.storage.uploads import MAX_AGE, MAX_PARTS, Uploads, WriteThrough
from aisync.util.errors import Conflict, InvalidArgument, UploadNotFound
from aisync.util.names import BucketRef, validate_prefix

if TYPE_CHECKING:
    from aisync.target.node import TargetNode

log = logging.getLogger("aisync.target")

#: How often the ``uploads-gc`` worker looks for expired uploads.
GC_INTERVAL = 3600.0


class TargetUploads:
    """Registers the upload routes on a target and runs its ``uploads-gc`` worker."""

    def __init__(self, node: TargetNode) -> None:
        self.node = node
        self.uploads = Uploads(node.store)
        self.gc = node.workers["uploads-gc"] = WorkerStatus(
            "uploads-gc", details={"removed": 0, "interval_s": GC_INTERVAL,
                                   "max_age_s": MAX_AGE})
        self._gc_task: asyncio.Task | None = None
        r = node.router
        upload = accepts.BUCKET | {"upload_id"}
        r.add("POST", "/v1/uploads/{bucket}/{name:.+}", self.handle_post,
              query=upload | {"complete"}, body="json")
        r.add("PUT", "/v1/uploads/{bucket}/{name:.+}", self.handle_part, expect=self.expect_part,
              query=upload | {"part"}, body="stream")
        r.add("GET", "/v1/uploads/{bucket}/{name:.+}", self.handle_get,
              query=upload | {"part_marker", "max_parts"})
        r.add("DELETE", "/v1/uploads/{bucket}/{name:.+}", self.handle_abort, query=upload)
        r.add("GET", "/v1/uploads/{bucket}", self.handle_list, query=accepts.BUCKET | {"prefix"})

    # -- lifecycle and the GC worker --
    def start(self) -> None:
        """Start the GC worker (once the store is open)."""
        self._gc_task = self.node.spawn(self._gc_loop(), "uploads-gc")

    async def close(self) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
        self.gc.state = "stopped"

    async def _gc_loop(self) -> None:
        self.gc.state = "running"
        while True:
            await self.sweep()
            await asyncio.sleep(GC_INTERVAL)

    async def sweep(self, now: float | None = None) -> int:
        """One GC pass: remove uploads initiated more than 7 days before ``now``."""
        try:
            removed = len(await self.uploads.sweep(now))
            self.gc.last_error = None
        except Exception as exc:  # a bad disk must not end the worker
            log.warning("uploads GC failed: %s", exc)
            self.gc.last_error, removed = str(exc), 0
        self.gc.runs += 1
        self.gc.last_run = time.time()
        self.gc.details["removed"] += removed
        return removed

    # -- helpers --
    def _owner_location(self, request: web.BaseRequest, ref: BucketRef, name: str) -> str | None:
        return owner_location(request, self.node.state.cluster_map, ref, name, self.node.node_id)

    def _target(self, request: web.BaseRequest) -> tuple[BucketRef, BucketProps, str, str]:
        ref, props = self.node.known_bucket(request)
        upload_id = request.query.get("upload_id", "")
        if not upload_id:
            raise InvalidArgument("upload_id is required")
        return ref, props, object_name(request), upload_id

    async def _here(self, request: web.BaseRequest, ref: BucketRef, name: str,
                    upload_id: str) -> None:
        """Return if the upload is here; else 307 to the owner if that is another target;
        else ``UploadNotFound``."""
        if await self.uploads.find(ref.uname, name, upload_id) is not None:
            return
        location = self._owner_location(request, ref, name)
        if location is not None:
            raise web.HTTPTemporaryRedirect(location=location)
        raise UploadNotFound(f"{ref}/{name}: no upload {upload_id!r} in progress")

    def _write_through(self, props: BucketProps, name: str) -> WriteThrough:
        async def put(temp: Path, attrs: dict) -> dict:
            backend, source = await self.node.sources.backend_for(props)
            version = await backend.put(source, name, temp, content_type=attrs.get("type"))
            return version.to_dict()
        return put

    # -- routes --
    async def handle_post(self, request: web.BaseRequest) -> web.Response:
        if "upload_id" not in request.query:
            return await self._create(request)
        if "complete" not in request.query:
            raise InvalidArgument("POST with an upload_id completes it: add ?complete")
        return await self._complete(request)

    async def _create(self, request: web.BaseRequest) -> web.Response:
        if request.body_exists or "complete" in request.query:
            raise InvalidArgument("create takes no body and no 'complete' (that completes an "
                                  "upload: give its upload_id)")
        ref, _ = self.node.known_bucket(request)
        name = object_name(request)
        location = self._owner_location(request, ref, name)
        if location is not None:
            raise web.HTTPTemporaryRedirect(location=location)
        attrs, _ = put_attrs(request)
        upload = await self.uploads.create(ref.uname, name, attrs)
        return web.json_response({"upload_id": upload.upload_id}, status=201)

    async def expect_part(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """``Expect: 100-continue``: a 307 before the body when the upload is not here and
        another target owns the object; otherwise the body may flow."""
        bucket_map = self.node.state.bucket_map
        ref = bucket_ref(request)
        if bucket_map is None or bucket_map.get(ref) is None:
            return None  # the handler answers BucketNotFound
        name = object_name(request)
        if await self.uploads.find(ref.uname, name, request.query.get("upload_id", "")):
            return None
        location = self._owner_location(request, ref, name)
        return None if location is None else web.Response(status=307,
                                                          headers={"Location": location})

    async def handle_part(self, request: web.BaseRequest) -> web.Response:
        ref, _, name, upload_id = self._target(request)
        number = int_query(request, "part", 0, 1, MAX_PARTS)
        if not number:
            raise InvalidArgument(f"part (1..{MAX_PARTS}) is required")
        size = request.content_length
        if size is None:
            raise InvalidArgument("a part needs a Content-Length")
        await self._here(request, ref, name, upload_id)
        _, md5 = put_attrs(request)
        part = await self.uploads.put_part(
            ref.uname, name, upload_id, number, request.content.iter_any(), size=size,
            md5=md5 or None, checksum=request.headers.get("X-Aisync-Checksum"),
            max_size=self.node.config.http.max_object_bytes)
        return web.json_response({"part": part.number, "etag": part.etag, "size": part.size},
                                 headers={"ETag": f'"{part.etag}"'})

    async def handle_get(self, request: web.BaseRequest) -> web.Response:
        ref, _, name, upload_id = self._target(request)
        marker = int_query(request, "part_marker", 0, 0, MAX_PARTS)
        limit = int_query(request, "max_parts", 1000, 1, MAX_PARTS)
        await self._here(request, ref, name, upload_id)
        upload, parts = await self.uploads.get(ref.uname, name, upload_id)
        after = [p for p in parts if p.number > marker]
        page = after[:limit]
        return web.json_response({
            "bucket": ref.name, "provider": ref.provider, "name": name,
            "upload_id": upload.upload_id, "initiated": upload.initiated, "attrs": upload.attrs,
            "parts": [p.as_dict() for p in page],
            "next_part_marker": page[-1].number if page else None,
            "truncated": len(after) > limit})

    async def _complete(self, request: web.BaseRequest) -> web.Response:
        ref, props, name, upload_id = self._target(request)
        parts = _parse_parts(await json_object(request, "complete"))
        await self._here(request, ref, name, upload_id)
        if self._owner_location(request, ref, name) is not None:
            raise Conflict(f"{ref}/{name} has moved to another target since the upload began; "
                           "start a new upload")
        meta = await self.uploads.complete(
            ref.uname, name, upload_id, parts,
            max_size=self.node.config.http.max_object_bytes,
            write_through=self._write_through(props, name) if props.backed else None)
        etag = (meta.attrs or {})["etag"]
        return web.json_response({"bucket": ref.name, "provider": ref.provider, "name": name,
                                  "size": meta.size, "etag": etag, "checksum": meta.checksum,
                                  "mtime_ns": meta.mtime_ns},
                                 headers={"ETag": f'"{etag}"', "X-Aisync-Checksum": meta.checksum})

    async def handle_abort(self, request: web.BaseRequest) -> web.Response:
        ref, _, name, upload_id = self._target(request)
        await self._here(request, ref, name, upload_id)
        await self.uploads.abort(ref.uname, name, upload_id)
        return web.Response(status=204)

    async def handle_list(self, request: web.BaseRequest) -> web.Response:
        ref, _ = self.node.known_bucket(request)
        prefix = validate_prefix(request.query.get("prefix", ""))
        uploads = await self.uploads.list_bucket(ref.uname, prefix)
        return web.json_response({"uploads": [u.summary() for u in uploads]})


def _parse_parts(body: dict) -> list[tuple[int, str]]:
    parts = accepts.check_fields(body, frozenset({"parts"}), "complete").get("parts")
    if not isinstance(parts, list) or not parts:
        raise InvalidArgument("complete: 'parts' must be a non-empty list")
    out = []
    for p in parts:
        if (not isinstance(p, dict) or set(p) != {"part", "etag"}
                or type(p.get("part")) is not int or not isinstance(p.get("etag"), str)):
            raise InvalidArgument('complete: each part is {"part": int, "etag": str}')
        out.append((p["part"], p["etag"]))
    return out
