"""Object responses shared by targets and their read workers: zero-copy files, small bodies."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from aisync.api.common import content_range, object_headers, parse_range
from aisync.storage.metadata import ObjectMetadata
from aisync.storage.objects import OpenObject


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


def range_of(request: web.BaseRequest, size: int, headers: dict) -> tuple[int, int, int]:
    """(status, offset, count) for the request's Range header; adds Content-Range."""
    rng = parse_range(request.headers.get("Range"), size)
    if rng is None:
        return 200, 0, size
    headers["Content-Range"] = content_range(rng[0], rng[1], size)
    return 206, rng[0], rng[1]


def small_response(request: web.BaseRequest, meta: ObjectMetadata, data: bytes) -> web.Response:
    """A whole small object (already verified) or the requested range of it."""
    headers = object_headers(meta)
    status, offset, count = range_of(request, meta.size, headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(count)
        return web.Response(status=status, headers=headers)
    body = data if count == meta.size else data[offset:offset + count]
    return web.Response(body=body, status=status, headers=headers)
