"""Signed redirects: a proxy's 307 to a target carries proof that a proxy sent it.

The proxy appends one query parameter to the Location it answers::

    ais_auth=<proxy id>~<map version>~<expires, Unix seconds>~<hex MAC, 128 bits>

The MAC (:class:`aisync.auth.macs.KeyedMac`, keyed for redirects alone; a target checks one on
every client GET) covers the method, the percent-encoded path, the rest of the query exactly as
the client sent it to the proxy, the proxy id, the map version and the expiry. A
target checks it before it serves an object route to anyone but a member, so a client cannot
GET, PUT or DELETE on a target without first being admitted by a proxy, cannot turn a GET's
Location into a DELETE, and cannot keep a Location past ``auth.redirect_ttl``. The parameter
comes last, so a target that hands a misdirected request on to the owner (``path_qs`` as is)
passes a still-valid signature along.
"""

from __future__ import annotations

import hmac
import time

from aisync.auth.macs import KeyedMac
from aisync.util.errors import Unauthenticated

PARAM = "ais_auth"
_SEP = "~"
_MARK = PARAM + "="
#: The purpose redirect MACs are keyed for (see :class:`KeyedMac`).
PURPOSE = b"aisync signed redirect"


def split_query(query: str) -> tuple[str, str | None]:
    """``(query without ais_auth, the ais_auth value or None)`` of a raw query string."""
    if _MARK not in query:
        return query, None
    if query.startswith(_MARK) and "&" not in query:  # the usual shape: nothing else
        return "", query[len(_MARK):]
    kept, value = [], None
    for part in query.split("&"):
        if part.startswith(_MARK):
            value = part[len(_MARK):]
        else:
            kept.append(part)
    return "&".join(kept), value


class RedirectKey:
    """Signs and verifies redirect Locations with a key derived from the cluster secret."""

    __slots__ = ("_key",)

    def __init__(self, cluster_secret: bytes) -> None:
        self._key = KeyedMac(cluster_secret, PURPOSE)

    def _mac(self, method: str, path: str, query: str, proxy: str, version: str,
             expires: str) -> str:
        return self._key.hex("\n".join((method, path, query, proxy, version, expires)).encode(
            "utf-8", "surrogateescape"))

    def sign(self, method: str, path: str, query: str, proxy: str, map_version: int,
             ttl: float) -> str:
        """The query string to put in the Location: the client's query plus ``ais_auth``."""
        expires = str(int(time.time() + ttl))
        mac = self._mac(method.upper(), path, query, proxy, str(map_version), expires)
        token = _SEP.join((proxy, str(map_version), expires, mac))
        return f"{query}&{PARAM}={token}" if query else f"{PARAM}={token}"

    def verify(self, method: str, path: str, raw_query: str) -> str:
        """The id of the proxy that signed this redirect, or :class:`Unauthenticated`."""
        query, token = split_query(raw_query)
        if token is None:
            raise Unauthenticated("a target serves clients only through a proxy: send the "
                                  "request to a proxy (it redirects here with a signed "
                                  "Location)")
        parts = token.split(_SEP)
        if len(parts) != 4:
            raise Unauthenticated("malformed redirect signature")
        proxy, version, expires, given = parts
        if not (version.isascii() and version.isdigit() and len(version) <= 19
                and expires.isascii() and expires.isdigit() and len(expires) <= 19):
            raise Unauthenticated("malformed redirect signature")
        if not hmac.compare_digest(self._mac(method.upper(), path, query, proxy, version,
                                             expires), given):
            raise Unauthenticated("bad redirect signature")
        if int(expires) < time.time():
            raise Unauthenticated("the redirect has expired: ask a proxy again")
        return proxy
