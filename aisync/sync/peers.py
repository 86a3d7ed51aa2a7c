"""Peer-first reads: a cold GET of a cached cloud bucket asks peer clusters before the source.

Zones cache the same buckets under the same names. When zone B misses ``s3://datasets/x``,
zone A may hold it: reading A's copy over the zone-to-zone link is faster and cheaper than the
far source. :class:`PeerFirst` wraps the source backend for one bucket:

1. it learns the source's *current* version (a HEAD at the source);
2. asks each listed peer, in order, for its cached copy only (``?cached=true``: a peer never
   reads through for us) and takes the first whose recorded source version is the same
   (:func:`aisync.sync.versions.same_version`); a stale copy is never used;
3. streams that copy, and checks that the bytes come from the version it asked about;
4. otherwise (no peer holds it, a peer is down or slower than ``peer_timeout`` to answer) it
   reads the source, pinned to the version from step 1.

Counters: ``bytes_from_peers``, ``bytes_from_sources``, ``peer_hits``, ``peer_misses``,
``peer_errors``. A peer that fails after its first byte fails that read (the bytes already went
to the client); the next read tries again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from aisync.backends.base import (
    Backend,
    Capabilities,
    ListPage,
    ObjectStream,
    VersionToken,
)
from aisync.sync.versions import same_version
from aisync.util.errors import BackendError
from aisync.util.jsondoc import parse_json

log = logging.getLogger("aisync.peers")

SOURCE_TOKEN_HEADER = "X-Aisync-Source-Token"


@dataclass
class PeerStats:
    peer_hits: int = 0
    peer_misses: int = 0      # no peer held the current version
    peer_errors: int = 0      # a peer was down, slow or answered oddly
    bytes_from_peers: int = 0
    bytes_from_sources: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Peer:
    alias: str
    urls: tuple[str, ...]
    #: What authenticates this cluster to the peer (its bearer token), from the node's config.
    headers: tuple[tuple[str, str], ...] = ()


class _CountingStream(ObjectStream):
    def __init__(self, inner: ObjectStream, count: Callable[[int], None],
                 version: VersionToken | None = None) -> None:
        self.inner = inner
        self.version = version or inner.version
        self.self_verifying = inner.self_verifying
        self._count = count

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self._count(len(chunk))
            yield chunk

    async def close(self) -> None:
        await self.inner.close()


class _PeerStream(ObjectStream):
    """The body of a peer's GET (redirects followed), as an :class:`ObjectStream`."""

    def __init__(self, response: aiohttp.ClientResponse, version: VersionToken) -> None:
        self.response = response
        self.version = version

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for chunk in self.response.content.iter_chunked(1 << 20):
                received += len(chunk)
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError(f"peer read cut short: {exc}") from exc
        if received != self.version.size:
            raise BackendError(f"peer sent {received} of {self.version.size} bytes")

    async def close(self) -> None:
        self.response.release()


def peer_token(headers: Any) -> VersionToken | None:
    raw = headers.get(SOURCE_TOKEN_HEADER)
    if not raw:
        return None
    try:
        data = parse_json(raw, SOURCE_TOKEN_HEADER)
        return VersionToken.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


class PeerFirst(Backend):
    """The source backend of one cached bucket, with peers asked first on ``open``."""

    capabilities = Capabilities()

    def __init__(self, source: Backend, peers: list[Peer], *, provider: str, bucket_path: str,
                 bucket_query: dict[str, str], session: aiohttp.ClientSession, stats: PeerStats,
                 peer_timeout: float = 2.0) -> None:
        self.source, self.peers = source, peers
        self.provider = source.provider
        self.bucket_path, self.bucket_query = bucket_path, bucket_query
        self.session, self.stats, self.peer_timeout = session, stats, peer_timeout

    async def _from_peer(self, peer: Peer, name: str,
                         current: VersionToken) -> ObjectStream | None:
        query = {**self.bucket_query, "cached": "true"}
        path = f"/v1/objects/{self.bucket_path}/{quote(name, safe='/')}"
        for url in peer.urls:
            try:
                timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.peer_timeout,
                                                sock_read=self.peer_timeout)
                response = await self.session.get(f"{url}{path}", params=query, timeout=timeout,
                                                  headers=dict(peer.headers))
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("peer %s at %s did not answer: %s", peer.alias, url, exc)
                self.stats.peer_errors += 1
                continue
            if response.status != 200:
                response.release()
                if response.status != 404:
                    self.stats.peer_errors += 1
                return None
            held = peer_token(response.headers)
            if held is None or not same_version(held, current):
                response.release()  # a stale (or unverifiable) copy: never used
                return None
            return _PeerStream(response, current)
        return None

    async def open(self, bucket: str, name: str, *, byte_range: tuple[int, int] | None = None,
                   if_version: VersionToken | None = None) -> ObjectStream:
        if byte_range is not None or not self.peers:
            return await self.source.open(bucket, name, byte_range=byte_range,
                                          if_version=if_version)
        current = if_version or await self.source.head(bucket, name)
        for peer in self.peers:
            stream = await self._from_peer(peer, name, current)
            if stream is not None:
                self.stats.peer_hits += 1
                log.info("%s: served by peer %s", name, peer.alias)
                return _CountingStream(stream, self._count_peer)
        self.stats.peer_misses += 1
        stream = await self.source.open(bucket, name, if_version=current)
        return _CountingStream(stream, self._count_source)

    def _count_peer(self, n: int) -> None:
        self.stats.bytes_from_peers += n

    def _count_source(self, n: int) -> None:
        self.stats.bytes_from_sources += n

    # -- everything else is the source's --
    async def head(self, bucket: str, name: str) -> VersionToken:
        return await self.source.head(bucket, name)

    async def put(self, bucket: str, name: str, path: Path, *,
                  content_type: str | None = None) -> VersionToken:
        return await self.source.put(bucket, name, path, content_type=content_type)

    async def delete(self, bucket: str, name: str) -> None:
        await self.source.delete(bucket, name)

    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000) -> ListPage:
        return await self.source.list_page(bucket, prefix, token, limit)


__all__ = ["SOURCE_TOKEN_HEADER", "Peer", "PeerFirst", "PeerStats", "peer_token"]
