"""Stream one HTTP request to another node and its answer back, without buffering or decoding
either: bodies pass byte for byte, ``Content-Encoding`` included (an object stored gzip-encoded
is relayed as stored, never inflated on the way).

Used by the proxy's reverse mode (client → proxy → target) and by a target's read workers
(client → worker → the target's main process, over a unix socket).
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from aisync.util.errors import NodeUnavailable

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailers", "transfer-encoding", "upgrade", "host",
                        "content-length", "expect"})
CHUNK = 1 << 20


#: No bound on the whole exchange (a large object takes its time), a bound on connecting.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5)


def _without(headers, names: frozenset[str]) -> CIMultiDict[str]:
    """A copy of ``headers`` less ``names`` (lower case; matched case-insensitively)."""
    kept = CIMultiDict(headers)
    for name in names:
        kept.popall(name, None)
    return kept


#: What a proxy's reverse mode keeps from the target: the client's credentials (the proxy
#: checked them; the target trusts the proxy's member signature, never a client's token).
CLIENT_CREDENTIALS = HOP_BY_HOP | {"authorization"}


async def relay(session: aiohttp.ClientSession, request: web.BaseRequest, url: str,
                who: str, *, drop: frozenset[str] = HOP_BY_HOP) -> web.StreamResponse:
    """Send ``request`` to ``url`` (same method, headers, streamed body) and stream the answer.

    ``who`` names the upstream in the ``NodeUnavailable`` error raised when it cannot be reached.
    ``drop``: the request headers (lower case) not sent on; the hop-by-hop ones at least.
    """
    headers = _without(request.headers, drop)
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    body = request.content.iter_any() if request.body_exists else None
    try:
        async with session.request(request.method, url, headers=headers, data=body,
                                   allow_redirects=False, auto_decompress=False,
                                   timeout=_TIMEOUT) as up:
            out = web.StreamResponse(status=up.status, reason=up.reason,
                                     headers=_without(up.headers, HOP_BY_HOP))
            if up.content_length is not None:
                out.content_length = up.content_length
            await out.prepare(request)
            if request.method != "HEAD":
                async for chunk in up.content.iter_chunked(CHUNK):
                    await out.write(chunk)
            await out.write_eof()
            return out
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise NodeUnavailable(f"{who} is unreachable: {exc}") from exc
