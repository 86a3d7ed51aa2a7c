"""Signed redirects: a proxy's 307 to a target carries proof that a proxy sent it.

The proxy appends one query parameter to the Location it answers::

    ais_auth=<proxy id>~<map version>~<expires, Unix seconds>~<base64url HMAC-SHA256>

The HMAC (cluster secret) covers the method, the percent-encoded path, the rest of the query
exactly as the client sent it to the proxy, the proxy id, the map version and the expiry. A
target checks it before it serves an object route to anyone but a member, so a client cannot
GET, PUT or DELETE on a target without first being admitted by a proxy, cannot turn a GET's
Location into a DELETE, and cannot keep a Location past ``auth.redirect_ttl``. The parameter
comes last, so a target that hands a misdirected request on to the owner (``path_qs`` as is)
passes a still-valid signature along.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from aisync.util.errors import Unauthenticated

PARAM = "ais_auth"
_SEP = "~"


def _mac(secret: bytes, method: str, path: str, query: str, proxy: str, version: str,
         expires: str) -> str:
    text = "\n".join(("redirect", method.upper(), path, query, proxy, version, expires))
    digest = hmac.new(secret, text.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def split_query(query: str) -> tuple[str, str | None]:
    """``(query without ais_auth, the ais_auth value or None)`` of a raw query string."""
    if PARAM not in query:
        return query, None
    kept, value = [], None
    for part in query.split("&"):
        if part.startswith(PARAM + "="):
            value = part[len(PARAM) + 1:]
        else:
            kept.append(part)
    return "&".join(kept), value


def sign(secret: bytes, method: str, path: str, query: str, proxy: str, map_version: int,
         ttl: float) -> str:
    """The query string to put in the Location: the client's query plus ``ais_auth``."""
    expires = str(int(time.time() + ttl))
    mac = _mac(secret, method, path, query, proxy, str(map_version), expires)
    token = _SEP.join((proxy, str(map_version), expires, mac))
    return f"{query}&{PARAM}={token}" if query else f"{PARAM}={token}"


def verify(secret: bytes, method: str, path: str, raw_query: str) -> str:
    """The id of the proxy that signed this redirect, or :class:`Unauthenticated`."""
    query, token = split_query(raw_query)
    if token is None:
        raise Unauthenticated("a target serves clients only through a proxy: send the request "
                              "to a proxy (it redirects here with a signed Location)")
    parts = token.split(_SEP)
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) <= 19
                                  for p in parts[1:3]):
        raise Unauthenticated("malformed redirect signature")
    proxy, version, expires, given = parts
    want = _mac(secret, method, path, query, proxy, version, expires)
    if not hmac.compare_digest(want, given):
        raise Unauthenticated("bad redirect signature")
    if int(expires) < time.time():
        raise Unauthenticated("the redirect has expired: ask a proxy again")
    return proxy
