"""A target's read worker: an extra process that serves object GET/HEAD from the mountpaths.

Python serves one request at a time per process, so a target with ``http.read_workers: N``
starts N of these beside its main process. All of them listen on the target's port
(``SO_REUSEPORT``: the kernel spreads connections across them); a worker answers GET and HEAD of
objects it finds on disk (small ones from its stat-validated cache, large ones with
``sendfile``) and relays everything else, unchanged and streamed, to the main process over a
private unix socket: writes, deletes, listings, metasync, objects it does not find (the main
process redirects or answers 404) and objects whose bytes fail their checksum (the main process
verifies again and quarantines). So there is still exactly one writer per target.

A worker exits when its parent does (it watches a pipe the parent holds open).

    python -m aisync.target.read_worker NODE_CONFIG_JSON PIPE_FD
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from aisync.auth import Access, Gate
from aisync.cluster.maps import BucketMap, ClusterMap
from aisync.config import NodeConfig
from aisync.node import accepts
from aisync.node.files import file_response, small_response
from aisync.node.http import (
    bool_query,
    bucket_ref,
    json_answer,
    misdirected_put,
    node_server,
    object_name,
)
from aisync.node.relay import relay
from aisync.node.router import Router
from aisync.storage.reader import ObjectReader
from aisync.util.errors import ObjectNotFound
from aisync.util.log import setup_logging

log = logging.getLogger("aisync.reader")
#: How a worker addresses its target's main process (over the private unix socket).
MAIN = "http://target"


def control_socket(config: NodeConfig) -> Path:
    """The main process's private unix socket, where workers relay what they do not serve."""
    return Path(config.data_dir).resolve() / "node.sock"


class ReadWorker:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.reader = ObjectReader(config.resolved_mountpaths(),
                                   cache_bytes=config.storage.hot_cache_bytes)
        self.small = config.storage.small_object_bytes
        self.session: aiohttp.ClientSession | None = None
        # The worker signs its own requests to the main process (maps) as the target itself;
        # what it relays keeps the client's credentials, which the main process checks again.
        self.gate = Gate(config.auth, str(config.node_id), lambda origin: origin == MAIN)
        self.router = Router(fallback=self.forward, gate=self.gate)
        obj = Access.OBJECT
        # Exactly what the main process's object routes accept (aisync.node.accepts).
        self.router.add("GET", "/v1/objects/{bucket}/{name:.+}", self.handle_get, access=obj,
                        query=accepts.OBJECT_READ)
        self.router.add("HEAD", "/v1/objects/{bucket}/{name:.+}", self.handle_get, access=obj,
                        query=accepts.OBJECT_READ)
        self.router.add("PUT", "/v1/objects/{bucket}/{name:.+}", self.forward,
                        expect=self.expect_put, access=obj,
                        query=accepts.OBJECT_WRITE, body="stream")
        self.cluster_map: ClusterMap | None = None
        self.bucket_map: BucketMap | None = None

    async def refresh_maps(self) -> None:
        """Read the main process's maps (to redirect misdirected PUTs before their body)."""
        assert self.session is not None
        try:
            for path, kind in (("/v1/cluster/map", ClusterMap),
                               ("/v1/cluster/bucket-map", BucketMap)):
                async with self.session.get(f"{MAIN}{path}",
                                            headers=self.gate.member_headers("GET", path)) as resp:
                    if resp.status == 200:
                        doc = kind.model_validate(await json_answer(resp, "the target's main process"))
                        if kind is ClusterMap:
                            self.cluster_map = doc
                        else:
                            self.bucket_map = doc
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            log.debug("cannot read the maps from the main process: %s", exc)

    async def follow_maps(self, interval: float = 1.0) -> None:
        while True:
            await self.refresh_maps()
            await asyncio.sleep(interval)

    async def expect_put(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """Decide before the body comes: a bucket this worker has not seen yet (created since
        its last refresh) makes it ask the main process for the current maps first."""
        if self.bucket_map is None or self.bucket_map.get(bucket_ref(request)) is None:
            await self.refresh_maps()
        return misdirected_put(request, self.cluster_map, self.bucket_map, str(self.config.node_id))

    async def forward(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self.session is not None
        return await relay(self.session, request, f"{MAIN}{request.raw_path}",
                           "the target's main process")

    async def handle_get(self, request: web.BaseRequest) -> web.StreamResponse:
        ref = bucket_ref(request)
        name = object_name(request)
        props = self.bucket_map.get(ref) if self.bucket_map is not None else None
        if props is None or (props.backed and (props.consistency != "none"
                                               or bool_query(request, "latest"))):
            return await self.forward(request)  # on-access checks run in the main process
        hit = self.reader.cached(ref.uname, name)
        if hit is not None:
            return small_response(request, hit[0], hit[1], hot=True)
        try:
            obj = self.reader.open(ref.uname, name)
        except ObjectNotFound:
            return await self.forward(request)
        try:
            if obj.size <= self.small and request.method == "GET":
                data = await self.reader.read_small(obj)
                if data is None:
                    return await self.forward(request)
                return small_response(request, obj.meta, data)
            if request.method == "GET" and (self.config.storage.verify_on_get
                                            or bool_query(request, "verify")):
                return await self.forward(request)
            response = file_response(request, obj)
            obj = None  # the response owns it now
            return response
        finally:
            if obj is not None:
                obj.close()

    async def serve(self, parent_pipe: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(parent_pipe, stop.set)  # EOF: the parent is gone
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.reader.start()
        # Unsigned: what a worker relays must keep its sender's credentials (the maps requests
        # above sign themselves).
        self.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(control_socket(self.config)), limit=256))
        runner = web.ServerRunner(node_server(self.router),
                                  handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, backlog=1024,
                               reuse_port=True)
            await site.start()
            log.info("read worker serving %s", self.config.url)
            follower = asyncio.create_task(self.follow_maps())
            await stop.wait()
            follower.cancel()
        finally:
            await runner.cleanup()
            await self.session.close()
            self.reader.stop()


def main(argv: list[str]) -> None:
    config = NodeConfig.model_validate_json(Path(argv[0]).read_text())
    setup_logging(config.logging.level, config.logging.format,
                  node=f"{config.node_id}", role="target-reader")
    asyncio.run(ReadWorker(config).serve(int(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
