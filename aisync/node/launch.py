"""Run one node process: ``aisync node --role proxy|target --config FILE``.

The caller (the CLI) chooses the role's node class; this module only knows the
:class:`ServedNode` port every role implements. It picks the event loop (targets: asyncio's,
whose ``sendfile`` is native zero-copy; proxies: uvloop
when installed), sets up structured logging, starts the role's runtime, serves HTTP until SIGTERM
or SIGINT, then shuts down in order: stop accepting, finish in-flight requests (bounded), stop
workers, close the catalog and the object index cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from aisync.config import NodeConfig
from aisync.node.http import node_server
from aisync.util.log import setup_logging

log = logging.getLogger("aisync.node")


class ServedNode(Protocol):
    """What :func:`serve` needs of a node: its router, its id and its lifecycle."""

    node_id: str
    router: Callable

    async def start(self) -> None:
        """Open state (catalog, maps, object store) and start workers; before listening."""

    async def after_listen(self, runner: web.ServerRunner) -> None:
        """Work that needs the socket open (a target's join, read workers)."""

    async def stop(self) -> None:
        """Stop workers and close state; after the server stopped accepting."""


#: Builds the role's node from its configuration (``ProxyNode``, ``TargetNode``).
NodeFactory = Callable[[NodeConfig], ServedNode]


async def serve(config: NodeConfig, build: NodeFactory,
                stop: asyncio.Event | None = None) -> None:
    sock = None
    if config.port == 0:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.role == "target" and config.http.read_workers:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, 0))
        config = config.model_copy(update={"port": sock.getsockname()[1]})
    node = build(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    server = node_server(node.router, access_log=log if config.logging.access_log else None)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        # State first (catalog, maps, object store), then listen: no request ever meets a
        # half-started node. A target joins in the background; the primary's answer to the join
        # carries the maps, so it does not matter that its metasync may find us not listening.
        await node.start()
        if sock is not None:
            site: web.BaseSite = web.SockSite(runner, sock, backlog=1024)
        else:
            site = web.TCPSite(runner, config.host, config.port, backlog=1024,
                               reuse_address=True,
                               reuse_port=bool(config.role == "target"
                                               and config.http.read_workers))
        await site.start()
        await node.after_listen(runner)
        log.info("%s %s serving at %s", config.role, node.node_id, config.url,
                 extra={"url": config.url, "cluster": config.cluster.name})
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        await node.stop()


def run_node(config: NodeConfig, build: NodeFactory) -> None:
    setup_logging(config.logging.level, config.logging.format,
                  node=config.node_id or "", role=config.role)
    loop_kind = config.event_loop
    if loop_kind == "auto":
        loop_kind = "uvloop" if config.role == "proxy" else "asyncio"
    if loop_kind == "uvloop":
        try:
            import uvloop

            uvloop.run(serve(config, build))
            return
        except ImportError:
            log.info("uvloop not installed; using asyncio's event loop")
    asyncio.run(serve(config, build))
