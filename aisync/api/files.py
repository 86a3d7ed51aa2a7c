"""Object responses shared by targets and their read workers: zero-copy files, small bodies."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from aisync.api.common import content_range, object_headers, parse_range
from aisync.storage.metadata import ObjectMetadata
from aisync.storage.objects import OpenObject


class FdResponse(web.StreamResponse):
    """Send ``count`` bytes of an open object from ``offset`` with zero-copy ``sendfile``.

    It owns the :class:`OpenObject` and closes it once sent. The bytes are the inode whose
    metadata produced the headers, even if the object is overwritten meanwhile (a rename swaps
    the directory entry, not this inode). Handlers return it *unprepared*: aiohttp's
    ``finish_response`` prepares it and treats a client that went away (``ConnectionError``) as
    the normal event it is.
    """

    def __init__(self, obj: OpenObject, offset: int, count: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._obj, self._offset, self._count = obj, offset, count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest):
        if self.prepared:
            return await super().prepare(request)
        try:
            writer = await super().prepare(request)
            if request.method != "HEAD" and self._count:
                with open(self._obj.fd, "rb", closefd=False) as fobj:
                    await send_file_range(request, writer, fobj, self._offset, self._count)
            await super().write_eof()
            return writer
        finally:
            self._obj.close()


async def send_file_range(request: web.BaseRequest, writer, fobj, offset: int,
                          count: int) -> None:
    """``count`` bytes of ``fobj`` from ``offset`` to the client: ``sendfile`` where the event
    loop supports it, else reads in the default executor."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    loop = asyncio.get_running_loop()
    try:
        await loop.sendfile(transport, fobj, offset, count)
        return
    except NotImplementedError:
        pass
    while count:
        chunk = await loop.run_in_executor(None, os.pread, fobj.fileno(), min(count, 1 << 20),
                                           offset)
        if not chunk:
            raise ConnectionResetError("the file shrank while being sent")
        await writer.write(chunk)
        offset += len(chunk)
        count -= len(chunk)


def file_response(request: web.BaseRequest, obj: OpenObject) -> web.StreamResponse:
    """The answer to a GET or HEAD of a stored object (range included). Takes ownership of
    ``obj``: a GET's ``FdResponse`` closes it once sent, a HEAD closes it here."""
    headers = object_headers(obj.meta)
    try:
        status, offset, count = range_of(request, obj.size, headers)
    except BaseException:
        obj.close()
        raise
    if request.method == "HEAD":
        obj.close()
        headers["Content-Length"] = str(count)
        return web.Response(status=status, headers=headers)
    return FdResponse(obj, offset, count, status=status, headers=headers)


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
