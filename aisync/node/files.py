"""Object responses shared by targets, their read workers and the S3 front end: zero-copy
files, small bodies."""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import Callable
from typing import Protocol, TypeVar

from aiohttp import hdrs, web

from aisync.node.http import content_range, object_headers, parse_range
from aisync.storage.metadata import ObjectMetadata
from aisync.storage.objects import OpenObject

T = TypeVar("T")


class OpenFile(Protocol):
    """An open object file (a target's :class:`OpenObject`, or one a target handed a proxy)."""

    fd: int | None

    def close(self) -> None: ...


class FdResponse(web.StreamResponse):
    """Send ``count`` bytes of an open object from ``offset`` with zero-copy ``sendfile``.

    It owns the open file and closes it once sent. The bytes are the inode whose
    metadata produced the headers, even if the object is overwritten meanwhile (a rename swaps
    the directory entry, not this inode). Handlers return it *unprepared*: aiohttp's
    ``finish_response`` prepares it and treats a client that went away (``ConnectionError``) as
    the normal event it is.
    """

    def __init__(self, obj: OpenFile, offset: int, count: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._obj, self._offset, self._count = obj, offset, count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest):
        if self.prepared:
            return await super().prepare(request)
        try:
            writer = await super().prepare(request)
            if request.method != "HEAD" and self._count:
                assert self._obj.fd is not None
                with open(self._obj.fd, "rb", closefd=False) as fobj:
                    await send_file_range(request, writer, fobj, self._offset, self._count)
            await super().write_eof()
            return writer
        finally:
            self._obj.close()


async def send_file_range(request: web.BaseRequest, writer, fobj, offset: int,
                          count: int) -> None:
    """``count`` bytes of ``fobj`` from ``offset`` to the client with zero-copy ``sendfile``:
    the event loop's where it has one (asyncio), else ours in a worker thread on descriptors of
    its own (uvloop, which proxies run, has none: :func:`run_with_duplicated_fds`); reads in the
    default executor only where neither works."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    loop = asyncio.get_running_loop()
    try:
        await loop.sendfile(transport, fobj, offset, count)
        return
    except NotImplementedError:
        pass
    sock = transport.get_extra_info("socket")
    if hasattr(os, "sendfile") and sock is not None:
        writer.send_headers()  # aiohttp may still hold them back for the first body write
        await flushed(transport)
        if transport.is_closing():
            raise ConnectionResetError("connection lost")
        await run_with_duplicated_fds(sendfile_blocking, (sock.fileno(), fobj.fileno()),
                                      offset, count)
        return
    while count:
        chunk = await loop.run_in_executor(None, os.pread, fobj.fileno(), min(count, 1 << 20),
                                           offset)
        if not chunk:
            raise ConnectionResetError("the file shrank while being sent")
        await writer.write(chunk)
        offset += len(chunk)
        count -= len(chunk)


async def flushed(transport) -> None:
    """Until the bytes queued in ``transport`` are out: writes that bypass it (``sendfile``,
    ``splice``) must come after them."""
    while transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("connection lost")
        await asyncio.sleep(0.0005)


async def run_with_duplicated_fds(func: Callable[..., T], fds: tuple[int, ...], *args) -> T:
    """``func(*duplicates, *args)`` in a worker thread, on duplicates of ``fds`` that the worker
    closes once ``func`` returns.

    Call it from the event loop while ``fds`` are the open descriptors of live transports or
    files. Their owners may close them while the worker runs (a client that goes away closes
    its transport; a cancelled handler closes its file), and the kernel gives a freed number to
    the next socket or file opened: a worker still using that number would send one
    connection's bytes to another. The duplicates keep the same sockets and files open until
    the worker is done; a peer that left only fails its next write (EPIPE: a
    ``ConnectionError``). A descriptor already gone is ``ConnectionResetError``.
    """
    duplicates: list[int] = []

    def close_all() -> None:
        for fd in duplicates:
            os.close(fd)

    def work() -> T:
        try:
            return func(*duplicates, *args)
        finally:
            close_all()

    try:
        for fd in fds:
            duplicates.append(os.dup(fd))
        future = asyncio.get_running_loop().run_in_executor(None, work)
    except OSError as exc:
        close_all()
        raise ConnectionResetError(f"connection lost: {exc}") from None
    except BaseException:
        close_all()
        raise
    return await future


def sendfile_blocking(sock_fd: int, file_fd: int, offset: int, count: int,
                      timeout: float = 120.0) -> None:
    """Send ``count`` bytes of a file to a (non-blocking) socket, waiting for room with
    ``poll``; ``TimeoutError`` when the client takes nothing for ``timeout`` seconds."""
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    while count:
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, count)
        except BlockingIOError:
            if not poller.poll(timeout * 1000):
                raise TimeoutError("the client stopped reading") from None
            continue
        if sent == 0:
            raise ConnectionResetError("the file shrank while being sent")
        offset += sent
        count -= sent


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
    rng = parse_range(request.headers.get(hdrs.RANGE), size)
    if rng is None:
        return 200, 0, size
    headers["Content-Range"] = content_range(rng[0], rng[1], size)
    return 206, rng[0], rng[1]


class _HeadersMemo:
    """:func:`object_headers` of the records a hot-object cache hands out: built once per
    cached version, not per GET. Keyed by the record's identity: a cache hands out the same
    immutable record until the object changes, and the memo holds it, so no other record can
    take its id meanwhile."""

    LIMIT = 4096  # records; past this, start over

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[ObjectMetadata, dict[str, str]]] = {}

    def headers(self, meta: ObjectMetadata) -> dict[str, str]:
        entry = self._by_id.get(id(meta))
        if entry is None or entry[0] is not meta:
            if len(self._by_id) >= self.LIMIT:
                self._by_id.clear()
            entry = self._by_id[id(meta)] = (meta, object_headers(meta))
        return dict(entry[1])  # the caller may add Content-Range or Content-Length


_hot_headers = _HeadersMemo()


def small_response(request: web.BaseRequest, meta: ObjectMetadata, data: bytes, *,
                   hot: bool = False) -> web.Response:
    """A whole small object (already verified) or the requested range of it. ``hot``: ``meta``
    came from a hot-object cache (its headers are memoized)."""
    headers = _hot_headers.headers(meta) if hot else object_headers(meta)
    status, offset, count = range_of(request, meta.size, headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(count)
        return web.Response(status=status, headers=headers)
    body = data if count == meta.size else data[offset:offset + count]
    return web.Response(body=body, status=status, headers=headers)
