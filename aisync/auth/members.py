"""Intra-cluster request signatures: how a node proves to another that it is a cluster member.

Every request a node sends to a member carries one header::

    X-Aisync-Signature: <sender id>~<time>~<nonce>~<body digest>~<MAC>

with the sender's clock in Unix milliseconds, a nonce never reused (64 random bits drawn when the
process starts, then a counter: no system call per request), the hex SHA-256 of the body or
``UNSIGNED-PAYLOAD`` for a streamed body, and a hex MAC (keyed BLAKE2b, 128 bits) of the method,
the request target exactly as sent (path and query, percent-encoded) and the header value up to
the MAC. One header is one line to write and to parse, one lookup to find.

The MAC is :class:`aisync.auth.macs.KeyedMac` under the member-signature purpose (redirects
have their own key); every relayed object request pays it twice (sign and verify).

The receiver (:class:`MemberVerifier`) recomputes the MAC, refuses a time further than
``max_clock_skew`` from its own clock and a nonce it has seen within that window (a replay), and
hands back the body digest so the caller can check the body itself: routes that take a JSON body
require a real digest, only streaming routes (object PUTs) accept ``UNSIGNED-PAYLOAD``. Holding
the cluster secret is what makes a member: a node that joins is not in the map yet.

:class:`MemberSigner` signs through the request class of a node's one client session
(:func:`signing_request_class`): every request whose origin is a member of its cluster is signed,
and nothing else (a peer cluster or a backend never sees a member signature it could replay).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets
import time
from collections.abc import Callable

from aiohttp import ClientRequest, ClientResponse, payload
from aiohttp.connector import Connection
from multidict import istr

from aisync.auth.macs import KeyedMac
from aisync.util.errors import NodeUnavailable, Unauthenticated

#: (An ``istr``: header lookups with it skip case folding.)
SIGNATURE_HEADER = istr("X-Aisync-Signature")
UNSIGNED = "UNSIGNED-PAYLOAD"
#: The digest of an empty body.
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
#: Nonces remembered per node; a node seeing more signed requests than this within the replay
#: window refuses further ones (503) rather than forget a nonce that could then be replayed.
MAX_NONCES = 1 << 20
#: The purpose member-signature MACs are keyed for (see :class:`KeyedMac`).
PURPOSE = b"aisync member signature"
_SEP = "~"
#: The signature header: bounded fields of ASCII characters only (no int() of a huge number).
_SIGNATURE = re.compile(r"([^~]{1,128})~([0-9]{1,15})~([0-9a-f]{16,64})~"
                        r"([0-9a-f]{64}|UNSIGNED-PAYLOAD)~([0-9a-f]{32})", re.ASCII)
_MAC_CHARS = 32


def signed_text(method: str, target: str, fields: str) -> bytes:
    """What the MAC covers: the method, the request target and the header up to the MAC."""
    return f"{method}\n{target}\n{fields}".encode("utf-8", "surrogateescape")


def signature_fields(member: str, millis: str, nonce: str, digest: str) -> str:
    """The header value before its MAC (ends with the separator)."""
    return _SEP.join((member, millis, nonce, digest, ""))


def body_digest(body: bytes | None) -> str:
    return hashlib.sha256(body).hexdigest() if body else EMPTY_DIGEST


class NonceMemory:
    """The nonces seen within the replay window, in two generations of sets.

    A nonce is seen if either generation holds it; the current generation becomes the previous
    one every ``window`` seconds (the older one is dropped), so each nonce is remembered for at
    least ``window``: a request whose signed time is within the clock-skew bound cannot outlive
    its nonce when ``window`` is at least twice that bound. An insert is a set add, which
    matters on a path every relayed object request takes.
    """

    __slots__ = ("_window", "_limit", "_current", "_previous", "_rotated", "_clock")

    def __init__(self, window: float, limit: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window = window
        self._limit = limit
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._rotated = clock()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def first_sight(self, nonce: str) -> bool:
        """Remember ``nonce``; False if it was seen within the window (a replay)."""
        now = self._clock()
        if now - self._rotated >= self._window:
            self._previous = self._current if now - self._rotated < 2 * self._window \
                else set()
            self._current = set()
            self._rotated = now
        if nonce in self._current or nonce in self._previous:
            return False
        if len(self._current) + len(self._previous) >= self._limit:
            raise NodeUnavailable("too many signed requests within the replay window")
        self._current.add(nonce)
        return True


class MemberSigner:
    """Signs requests to cluster members."""

    def __init__(self, node_id: str, secret: bytes,
                 is_member_origin: Callable[[str], bool]) -> None:
        if not node_id or _SEP in node_id:
            raise ValueError(f"a node id that signs must be non-empty without {_SEP!r}")
        self.node_id = node_id
        self._mac = KeyedMac(secret, PURPOSE)
        self._is_member_origin = is_member_origin
        self._nonce_prefix = secrets.token_hex(8)  # this process's; the counter does the rest
        self._nonces = itertools.count()

    def header(self, method: str, target: str, digest: str) -> str:
        """The ``X-Aisync-Signature`` value for one request (``target``: path and query as
        sent)."""
        fields = signature_fields(self.node_id, str(int(time.time() * 1000)),
                                  f"{self._nonce_prefix}{next(self._nonces):08x}", digest)
        return fields + self._mac.hex(signed_text(method.upper(), target, fields))

    def headers(self, method: str, target: str, digest: str) -> dict[str, str]:
        return {SIGNATURE_HEADER: self.header(method, target, digest)}

    async def sign(self, request: ClientRequest) -> None:
        """Add the signature to a request about to be sent, if its origin is a member's."""
        url = request.url
        if self._is_member_origin(f"{url.scheme}://{url.raw_authority}"):
            body = request.body
            if not body:
                digest = EMPTY_DIGEST
            elif isinstance(body, payload.BytesPayload):
                digest = body_digest(await body.as_bytes())
            else:
                digest = UNSIGNED
            request.headers[SIGNATURE_HEADER] = self.header(request.method, url.raw_path_qs,
                                                            digest)


def signing_request_class(signer: MemberSigner) -> type[ClientRequest]:
    """The ``request_class`` of a node's client session: a request that signs itself (see
    :meth:`MemberSigner.sign`) just before it is sent, on every attempt and redirect.

    Not a client middleware: a middleware's coroutine stays on the stack for the whole exchange
    and every resume while the answer arrives passes through it, which on a relayed small
    object costs more than the signature itself.
    """

    class MemberSignedRequest(ClientRequest):
        async def send(self, conn: Connection) -> ClientResponse:
            await signer.sign(self)
            return await super().send(conn)

    return MemberSignedRequest


class MemberVerifier:
    """Checks intra-cluster signatures and remembers nonces for the replay window."""

    def __init__(self, secret: bytes, max_clock_skew: float,
                 max_nonces: int = MAX_NONCES) -> None:
        self._mac = KeyedMac(secret, PURPOSE)
        self._skew_ms = int(max_clock_skew * 1000)
        self._nonces = NonceMemory(2 * max_clock_skew, max_nonces)

    def verify(self, method: str, target: str, signature: str) -> tuple[str, str]:
        """``(member id, body digest)`` of a request whose ``X-Aisync-Signature`` is
        ``signature``, if it is correctly signed, fresh and first seen; else
        :class:`Unauthenticated` (never saying which part was wrong beyond "signature")."""
        fields = _SIGNATURE.fullmatch(signature)
        if fields is None:
            raise Unauthenticated("malformed intra-cluster signature")
        member, millis, nonce, digest, given = fields.groups()
        want = self._mac.hex(signed_text(method, target, signature[:-_MAC_CHARS]))
        if not hmac.compare_digest(want, given):
            raise Unauthenticated("bad intra-cluster signature")
        if abs(time.time() * 1000 - int(millis)) > self._skew_ms:
            raise Unauthenticated("intra-cluster request outside the clock-skew window "
                                  "(are the nodes' clocks in sync?)")
        if not self._nonces.first_sight(nonce):
            raise Unauthenticated("replayed intra-cluster request")
        return member, digest
