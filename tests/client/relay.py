"""A TCP relay for tests: forwards a loopback connection to a real node and keeps its bytes.

Tests use it to measure what crossed the wire (how many bytes an upload sent to a proxy, how
many listing requests a command made), never to change what the node says: bytes pass
unchanged, only (optionally) the node's final answer after a ``100 Continue`` is held until the
client has started its body, an ordering any slow network can produce.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlparse

CONTINUE = b" 100 Continue\r\n\r\n"


class Relay:
    """A TCP relay on a free loopback port in front of a real node.

    Forwards both directions unchanged and keeps what passed: ``sent`` (client → node) and
    ``received`` (node → client). With ``hold_after_continue`` a ``100 Continue`` from the node
    is forwarded at once, but the rest of the node's answer only once the client has sent body
    bytes after it: the ordering a slower network gives, which makes it certain that the client
    started sending its body before it sees the final answer.
    """

    def __init__(self, upstream: str, hold_after_continue: bool = False) -> None:
        u = urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.hold = hold_after_continue
        self.sent = bytearray()
        self.received = bytearray()
        self.connections = 0
        self.held = 0
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self._tasks:  # connections the client just closed end on their own, at once
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()

    async def drained(self, timeout: float = 10) -> None:
        """Wait until every connection through the relay has ended (both sides closed)."""
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            ureader, uwriter = await asyncio.open_connection(*self.upstream)
        except OSError:
            cwriter.close()
            return
        conn = {"sent": 0, "event": asyncio.Event(), "eof": False}
        try:
            await asyncio.gather(self._up(creader, uwriter, conn),
                                 self._down(ureader, cwriter, conn))
        except asyncio.CancelledError:
            pass  # the relay is shutting down (asyncio's server would log a cancelled task)
        finally:
            for w in (cwriter, uwriter):
                w.close()

    async def _up(self, src, dst, conn) -> None:
        try:
            while data := await src.read(1 << 16):
                self.sent += data
                conn["sent"] += len(data)
                conn["event"].set()
                with contextlib.suppress(ConnectionError):  # node hung up: keep draining
                    dst.write(data)
                    await dst.drain()
        except ConnectionError:
            pass
        finally:
            conn["eof"] = True
            conn["event"].set()
            dst.close()

    async def _down(self, src, dst, conn) -> None:
        try:
            while data := await src.read(1 << 16):
                if self.hold and (end := data.find(CONTINUE)) >= 0:
                    end += len(CONTINUE)
                    await self._forward(dst, data[:end])
                    mark = conn["sent"]
                    with contextlib.suppress(TimeoutError):  # never hang: the test then fails
                        async with asyncio.timeout(10):
                            while conn["sent"] <= mark and not conn["eof"]:
                                conn["event"].clear()
                                await conn["event"].wait()
                            self.held += conn["sent"] > mark
                    data = data[end:]
                await self._forward(dst, data)
        except ConnectionError:
            pass
        finally:
            dst.close()

    async def _forward(self, dst: asyncio.StreamWriter, data: bytes) -> None:
        if data:
            self.received += data
            dst.write(data)
            await dst.drain()
