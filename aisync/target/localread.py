"""The target's half of short-circuit local reads (see :mod:`aisync.node.localread`).

A unix ``SOCK_SEQPACKET`` socket in the target's data directory (mode 0600: only the user the
nodes run as may open objects through it). Each answer is decided the way the target's own
warm GET decides, with the same store calls (hot cache, verified small reads, the open inode
for the rest); whatever needs more than that (read-through, a check against the source, a
redirect, an error) is declined so the proxy asks over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from aisync.node.http import content_range, object_headers, parse_json, parse_range
from aisync.node.localread import (
    INLINE_MAX,
    LocalReadStats,
    send_message,
    seqpacket_socket,
)
from aisync.storage.metadata import ObjectMetadata
from aisync.sync.onaccess import OnAccess
from aisync.util.errors import AisyncError, ObjectNotFound
from aisync.util.names import BucketRef

if TYPE_CHECKING:
    from aisync.target.node import TargetNode

log = logging.getLogger("aisync.localread")

#: Longest unix socket path the kernel takes (``sun_path`` is 108 bytes with its terminator).
MAX_SOCKET_PATH = 107


def _encode(doc: dict, body: bytes | None = None) -> bytes:
    head = json.dumps(doc, separators=(",", ":")).encode()
    return head if body is None else head + b"\n" + body


class LocalReadServer:
    def __init__(self, target: TargetNode, path: Path) -> None:
        self.target = target
        self.path = path
        self.stats = LocalReadStats()
        self._listener: socket.socket | None = None
        self._connections: set[asyncio.Task] = set()
        self._accepting: asyncio.Task | None = None

    def start(self) -> str | None:
        """Listen; the socket's path, or None when it cannot be made (the proxy then uses HTTP
        only)."""
        path = str(self.path.resolve())
        if len(path.encode()) > MAX_SOCKET_PATH:
            log.warning("local reads off: socket path too long (%d bytes): %s", len(path), path)
            return None
        listener = seqpacket_socket()
        try:
            self.path.unlink(missing_ok=True)
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(256)
        except OSError as exc:
            listener.close()
            log.warning("local reads off: cannot listen on %s: %s", path, exc)
            return None
        self._listener = listener
        self._accepting = asyncio.get_running_loop().create_task(self._accept())
        return path

    async def stop(self) -> None:
        tasks = [t for t in (self._accepting, *self._connections) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self.path.unlink(missing_ok=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            conn.setblocking(False)
            task = loop.create_task(self._serve(conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with conn:
            while True:
                try:
                    message = await loop.sock_recv(conn, 8192)
                except OSError:
                    return
                if not message:
                    return
                payload, fd = await self._answer(message)
                try:
                    await send_message(conn, payload, fd)
                except OSError as exc:
                    log.debug("local read connection ended: %s", exc)
                    return
                finally:
                    if fd is not None:
                        os.close(fd)

    async def _answer(self, message: bytes) -> tuple[bytes, int | None]:
        """The answer to one request, and the descriptor to send with it (ours to close)."""
        try:
            request = parse_json(message, "a local-read request")
            ref = BucketRef(request["bucket"], request.get("provider", "ais"),
                            request.get("namespace", ""))
            name, head = str(request["name"]), bool(request.get("head"))
            byte_range = request.get("range")
            return await self._open(ref, name, head, byte_range)
        except (ValueError, KeyError, TypeError, AisyncError) as exc:
            self.stats.fallbacks += 1
            return _encode({"fallback": str(exc)[:200]}), None
        except Exception as exc:  # e.g. a disk error: the HTTP path handles (and reports) it
            self.stats.errors += 1
            log.warning("local read of %r declined after an error: %s", message[:200], exc)
            return _encode({"fallback": "error"}), None

    async def _open(self, ref: BucketRef, name: str, head: bool,
                    byte_range: str | None) -> tuple[bytes, int | None]:
        target = self.target
        state = target.state
        props = state.bucket_map.get(ref) if state.bucket_map is not None else None
        if props is None or state.cluster_map is None:
            raise ObjectNotFound("unknown bucket")
        if props.backed and OnAccess.wanted(props.consistency, False):
            raise ObjectNotFound("a check against the source comes first")
        if not state.cluster_map.active_targets or state.cluster_map.owner(ref, name).id != target.node_id:
            raise ObjectNotFound("not the owner")
        store = target.store
        uname = ref.uname
        hit = store.cached(uname, name)
        if hit is not None:
            return self._reply(hit[0], head, byte_range, data=hit[1])
        epoch = store.write_epoch(uname, name)
        obj = store.open(uname, name)  # ObjectNotFound: the HTTP path reads through or 404s
        try:
            if head:
                return self._reply(obj.meta, head, byte_range)
            if obj.size <= target.small:
                if obj.size > INLINE_MAX:
                    raise ObjectNotFound("too large to answer inline")
                data = await store.read_verified(obj, epoch)
                return self._reply(obj.meta, head, byte_range, data=data)
            if target.config.storage.verify_on_get:
                raise ObjectNotFound("verified reads go over HTTP")
            payload, _ = self._reply(obj.meta, head, byte_range)
            fd, obj.fd = obj.fd, -1  # ours to send (and close) now
            return payload, fd
        finally:
            obj.close()

    def _reply(self, meta: ObjectMetadata, head: bool, byte_range: str | None, *,
               data: bytes | None = None) -> tuple[bytes, None]:
        headers = object_headers(meta)
        rng = parse_range(byte_range, meta.size)
        status, offset, count = 200, 0, meta.size
        if rng is not None:
            status, (offset, count) = 206, rng
            headers["Content-Range"] = content_range(offset, count, meta.size)
        headers["Content-Length"] = str(count)
        doc = {"status": status, "headers": headers, "offset": offset, "count": count,
               "head": head}
        self.stats.served += 1
        if head:
            return _encode(doc), None
        self.stats.bytes += count
        if data is not None:
            doc["inline"] = True
            return _encode(doc, data[offset:offset + count]), None
        return _encode(doc), None

