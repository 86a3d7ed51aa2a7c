"""Signed redirects: a proxy's 307 to a target carries proof that a proxy sent it.

The proxy appends one query parameter to the Location it answers::

    ais_auth=<proxy id>~<map version>~<expires, Unix seconds>~<hex MAC, 128 bits>

The MAC (:class:`aisync.auth.macs.KeyedMac`, keyed for redirects alone; a target checks one on
every client GET) covers the method and the request target up to the MAC: the percent-encoded
path, the query exactly as the client sent it to the proxy, the proxy id, the map version and
the expiry (a target hashes a slice of the target it received, nothing is re-assembled). A
target checks it before it serves an object route to anyone but a member, so a client cannot
GET, PUT or DELETE on a target without first being admitted by a proxy, cannot turn a GET's
Location into a DELETE, and cannot keep a Location past ``auth.redirect_ttl``. The parameter
comes last, so a target that hands a misdirected request on to the owner (``path_qs`` as is)
passes a still-valid signature along.
"""

from __future__ import annotations

import hmac
import re
import time

from aisync.auth.macs import KeyedMac
from aisync.util.errors import Unauthenticated

PARAM = "ais_auth"
_SEP = "~"
_MARK = PARAM + "="
#: The purpose redirect MACs are keyed for (see :class:`KeyedMac`).
PURPOSE = b"aisync signed redirect"
#: ``<proxy>~<map version>~<expires>~<MAC>``: ASCII digits of bounded length (never an int()
#: of thousands of digits), the MAC as 32 lower-case hex digits.
_TOKEN = re.compile(r"([^~]+)~[0-9]{1,19}~([0-9]{1,19})~([0-9a-f]{32})", re.ASCII)


def only_redirect_param(query: str) -> bool:
    """Whether a raw query string holds ``ais_auth`` and nothing else (a redirected GET's
    usual shape: then there is no query to parse at all)."""
    return query.startswith(_MARK) and "&" not in query


class RedirectKey:
    """Signs and verifies redirect Locations with a key derived from the cluster secret.

    The MAC covers the method and the whole request target up to the MAC itself: path, the
    client's query, and ``ais_auth=<proxy>~<version>~<expires>~``. A check is then one scan
    for the parameter, one match of its token and one MAC over a slice of the target as
    received.
    """

    __slots__ = ("_key",)

    def __init__(self, cluster_secret: bytes) -> None:
        self._key = KeyedMac(cluster_secret, PURPOSE)

    def _mac(self, method: str, signed_part: str) -> str:
        return self._key.hex(f"{method}\n{signed_part}".encode("utf-8", "surrogateescape"))

    def sign(self, method: str, path: str, query: str, proxy: str, map_version: int,
             ttl: float) -> str:
        """The query string to put in the Location: the client's query plus ``ais_auth``
        (last, so a target that hands a request on passes the signature along)."""
        if _SEP in proxy:
            raise ValueError(f"a proxy id cannot hold {_SEP!r}")
        expires = str(int(time.time() + ttl))
        token = _SEP.join((proxy, str(map_version), expires, ""))
        signed = f"{query}&{PARAM}={token}" if query else f"{PARAM}={token}"
        return signed + self._mac(method.upper(), f"{path}?{signed}")

    def verify(self, method: str, target: str) -> str:
        """The id of the proxy that signed this request target (path and raw query, exactly as
        received), or :class:`Unauthenticated`."""
        head, _, token = target.rpartition(_MARK)
        if not head or head[-1] not in "?&":
            raise Unauthenticated("a target serves clients only through a proxy: send the "
                                  "request to a proxy (it redirects here with a signed "
                                  "Location)")
        if "&" in token:
            raise Unauthenticated("bad redirect signature (the Location was changed after "
                                  f"{PARAM})")
        fields = _TOKEN.fullmatch(token)
        if fields is None:
            raise Unauthenticated("malformed redirect signature")
        proxy, expires, given = fields.group(1, 2, 3)
        if not hmac.compare_digest(self._mac(method, target[:len(target) - len(given)]),
                                   given):
            raise Unauthenticated("bad redirect signature")
        if int(expires) < time.time():
            raise Unauthenticated("the redirect has expired: ask a proxy again")
        return proxy
