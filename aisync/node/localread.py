"""Short-circuit local reads: a proxy on the same host as an object's target asks the target to
*open* the object and sends the bytes to its client itself.

Through the S3 front end, object bytes otherwise cross two loopback connections (target → proxy
→ client) and two HTTP exchanges in Python. When the proxy and the owning target share a host,
the proxy sends one small request over the target's unix socket (``SOCK_SEQPACKET``: one
message per request and per answer) and gets back the object's headers and either

* the bytes themselves (``inline``: small objects, read and checksum-verified exactly as the
  target's own GET does, hot cache included), or
* the open file descriptor (``SCM_RIGHTS``), which the proxy sends with zero-copy ``sendfile``.

HDFS calls the same idea short-circuit local reads. The descriptor names the inode whose metadata
produced the headers: an overwrite meanwhile renames a new file over the name and leaves this
inode alone, so an answer is never torn.

Anything the target will not answer this way (not on this target, not its owner, a cached copy
that must be checked against its source first, a range it cannot satisfy, ...) comes back as a
*fallback* and the proxy asks over HTTP as before: every error answer is still produced in one
place. "Same host" is the kernel's boot id; a socket that cannot be reached (another mount
namespace, a restarted target) turns the short-circuit off for that target for
:data:`RETRY_AFTER` seconds.

This module is the wire format and the proxy's half; the target's half is
:mod:`aisync.target.localread`. It imports nothing from storage.

Wire format. Request: one JSON object ``{"bucket", "provider", "namespace", "name", "head",
"range"}``. Answer: one JSON object, then, if its ``inline`` is true, ``\\n`` and the body;
``{"fallback": "why"}`` declines. A descriptor, when sent, rides on the answer message.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import json
import logging
import os
import socket
import time
from functools import cache

from aisync.cluster.maps import NodeInfo
from aisync.util.jsondoc import parse_json
from aisync.util.names import BucketRef

log = logging.getLogger("aisync.localread")

#: Largest inline body: a small object travels in the answer message itself.
INLINE_MAX = 64 * 1024
#: Largest answer message (headers of an object with many user metadata, plus an inline body).
MESSAGE_MAX = INLINE_MAX + 32 * 1024
#: Seconds a target whose socket failed is asked over HTTP only.
RETRY_AFTER = 10.0
#: Seconds one exchange may take before the proxy gives up and asks over HTTP.
TIMEOUT = 2.0
#: Idle sockets kept per target.
POOL_SIZE = 32


@cache
def host_identity() -> str | None:
    """This machine's identity for "same host": the running kernel's boot id (Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def seqpacket_socket() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC
                         | socket.SOCK_NONBLOCK)


async def wait_ready(sock: socket.socket, *, write: bool = False) -> None:
    """Until ``sock`` is readable (or writable)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()
    add, remove = (loop.add_writer, loop.remove_writer) if write else \
        (loop.add_reader, loop.remove_reader)
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


async def send_message(sock: socket.socket, payload: bytes, fd: int | None = None) -> None:
    fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))] if fd is not None \
        else []
    while True:
        try:
            sock.sendmsg([payload], fds)
            return
        except BlockingIOError:
            await wait_ready(sock, write=True)


@dataclasses.dataclass
class LocalAnswer:
    """An object opened by its target: status (200/206), headers, and the body inline or as an
    open descriptor with the byte range to send. The receiver owns ``fd``: call :meth:`close`."""

    status: int
    headers: dict[str, str]
    body: bytes | None = None
    fd: int | None = None
    offset: int = 0
    count: int = 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclasses.dataclass
class LocalReadStats:
    served: int = 0
    bytes: int = 0
    fallbacks: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class LocalReads:
    """The proxy's half: a pool of connected sockets per same-host target."""

    def __init__(self, enabled: bool = True) -> None:
        self.host = host_identity() if enabled else None
        self.stats = LocalReadStats()
        self._idle: dict[str, list[socket.socket]] = {}
        self._down_until: dict[str, float] = {}

    def socket_of(self, node: NodeInfo) -> str | None:
        """The target's socket when it is on this host and not recently failing."""
        if self.host is None or node.host != self.host or not node.local_socket:
            return None
        until = self._down_until.get(node.local_socket)
        if until is not None:
            if time.monotonic() < until:
                return None
            del self._down_until[node.local_socket]
        return node.local_socket

    async def open(self, node: NodeInfo, ref: BucketRef, key: str, *, head: bool = False,
                   byte_range: str | None = None) -> LocalAnswer | None:
        """Ask ``node`` to open ``ref/key``; None means "ask over HTTP" (declined, not on this
        host, or the socket failed)."""
        path = self.socket_of(node)
        if path is None:
            return None
        request = json.dumps({"bucket": ref.name, "provider": ref.provider,
                              "namespace": ref.namespace, "name": key, "head": head,
                              "range": byte_range}, separators=(",", ":")).encode()
        sock = None
        try:
            async with asyncio.timeout(TIMEOUT):
                sock, pooled = await self._checkout(path)
                try:
                    await send_message(sock, request)
                    answer = await self._receive(sock)
                except OSError:
                    if not pooled:
                        raise
                    # a socket from before the target restarted: so are the other idle ones;
                    # drop them and try once on a fresh connection
                    sock.close()
                    sock = None
                    self._drop_idle(path)
                    sock, _ = await self._checkout(path)
                    await send_message(sock, request)
                    answer = await self._receive(sock)
        except (OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            if sock is not None:
                sock.close()
            self.stats.errors += 1
            self._down_until[path] = time.monotonic() + RETRY_AFTER
            log.warning("local reads from %s off for %.0f s: %s", node.id, RETRY_AFTER, exc)
            return None
        except BaseException:
            if sock is not None:
                sock.close()  # cancelled mid-exchange: the socket's state is unknown
            raise
        self._checkin(path, sock)
        if answer is None:
            self.stats.fallbacks += 1
        else:
            self.stats.served += 1
            self.stats.bytes += answer.count
        return answer

    async def _checkout(self, path: str) -> tuple[socket.socket, bool]:
        """A connected socket, and whether it was pooled (and so may be stale)."""
        idle = self._idle.get(path)
        if idle:
            return idle.pop(), True
        sock = seqpacket_socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return sock, False

    def _drop_idle(self, path: str) -> None:
        for sock in self._idle.pop(path, []):
            sock.close()

    def _checkin(self, path: str, sock: socket.socket) -> None:
        idle = self._idle.setdefault(path, [])
        if len(idle) < POOL_SIZE:
            idle.append(sock)
        else:
            sock.close()

    @staticmethod
    async def _receive(sock: socket.socket) -> LocalAnswer | None:
        while True:
            try:
                message, fds, flags, _ = socket.recv_fds(sock, MESSAGE_MAX, 1)
                break
            except BlockingIOError:
                await wait_ready(sock)
        try:
            if not message:
                raise ConnectionResetError("the target closed the socket")
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ValueError("answer truncated")
            head, _, body = message.partition(b"\n")
            doc = parse_json(head, "the target's local-read answer")
            if "fallback" in doc:
                return None
            answer = LocalAnswer(status=int(doc["status"]), headers=dict(doc["headers"]),
                                 offset=int(doc.get("offset", 0)), count=int(doc["count"]))
            if doc.get("inline"):
                if len(body) != answer.count:
                    raise ValueError("inline body of the wrong length")
                answer.body = body
            elif not doc.get("head"):
                if len(fds) != 1:
                    raise ValueError("no descriptor came with the answer")
                answer.fd = fds.pop()
            return answer
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        for path in list(self._idle):
            self._drop_idle(path)
