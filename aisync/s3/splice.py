"""Zero-copy relay of a large object body: target socket → pipe → client socket (``splice``).

The S3 front end serves clients without redirects, so object bytes pass through the proxy.
For large bodies it hands them to the kernel: once the target's answer headers are in and the
client's headers are sent, the rest of the body moves with ``splice(2)`` through a pipe, in a
worker thread, never entering Python buffers. Only Linux has ``splice``; elsewhere (or when
either side is not a plain socket) callers stream through Python instead.

The upstream connection is used up by this (its client library no longer knows where the body
stands), so the caller closes it afterwards instead of returning it to a pool.
"""

from __future__ import annotations

import fcntl
import os
import select

from aisync.node.files import flushed, run_with_duplicated_fds

AVAILABLE = hasattr(os, "splice")
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def _fileno(transport) -> int | None:
    if transport is None or transport.is_closing():
        return None
    sock = transport.get_extra_info("socket")
    try:
        return sock.fileno() if sock is not None else None
    except (OSError, ValueError):
        return None


def splice_fds(src: int, dst: int, count: int, timeout: float = 120.0) -> None:
    """Move exactly ``count`` bytes from socket ``src`` to socket ``dst`` (both may be
    non-blocking). Raises ``ConnectionResetError`` if ``src`` ends early, ``TimeoutError`` if
    neither side moves for ``timeout`` seconds, and what ``dst`` raises if the client left."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the default pipe size works too, in smaller steps
        in_pipe = 0
        poller = select.poll()
        while count or in_pipe:
            moved = False
            if count and in_pipe < PIPE_BYTES:
                try:
                    n = os.splice(src, write_end, min(count, PIPE_BYTES - in_pipe), flags=_FLAGS)
                except BlockingIOError:
                    n = -1
                if n == 0:
                    raise ConnectionResetError(f"the upstream ended {count} bytes early")
                if n > 0:
                    count -= n
                    in_pipe += n
                    moved = True
            if in_pipe:
                try:
                    m = os.splice(read_end, dst, in_pipe, flags=_FLAGS)
                except BlockingIOError:
                    m = 0
                if m > 0:
                    in_pipe -= m
                    moved = True
            if moved:
                continue
            for fd in (src, dst):
                try:
                    poller.unregister(fd)
                except KeyError:
                    pass
            if count and in_pipe < PIPE_BYTES:
                poller.register(src, select.POLLIN)
            if in_pipe:
                poller.register(dst, select.POLLOUT)
            if not poller.poll(timeout * 1000):
                raise TimeoutError("the relay stalled")
    finally:
        os.close(read_end)
        os.close(write_end)


async def relay_rest(upstream_transport, client_transport, count: int) -> bool:
    """Splice the next ``count`` bytes of the upstream connection to the client; False (and
    nothing moved) when either transport offers no usable socket. The worker splices on
    duplicates of both sockets (:func:`run_with_duplicated_fds`): a transport closed meanwhile
    never frees a descriptor number the worker still uses."""
    if not AVAILABLE or _fileno(upstream_transport) is None or _fileno(client_transport) is None:
        return False
    await flushed(client_transport)  # bytes queued before ours go first
    src, dst = _fileno(upstream_transport), _fileno(client_transport)
    if src is None or dst is None:  # one side closed while the queued bytes went out
        raise ConnectionResetError("connection lost")
    await run_with_duplicated_fds(splice_fds, (src, dst), count)
    return True
