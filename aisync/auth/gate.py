"""The gate every request passes before its handler: who is calling, and may they call this route.

Each route declares an :class:`Access` level; the router asks :meth:`Gate.admit` before it
reads a body or calls the handler, and a refusal is 401 ``Unauthorized`` (no or bad
credentials) with nothing changed. The gate returns an :class:`Identity`, which handlers may
read from ``request[IDENTITY]`` (users and roles will decide per bucket from it).

=========  ==================================================================================
PUBLIC     anyone: health and readiness probes; the S3 front end (which checks SigV4 itself)
CLIENT     the admin token (``Authorization: Bearer``), or a cluster member (a proxy forwarding
           a client's request to the primary, the primary asking a target for its status)
MEMBER     cluster members only: join, metasync, job batches, uploads, target listings, secrets
OBJECT     a target's object routes: a member (S3 relays, rebalance) or a client holding a
           redirect a proxy signed
=========  ==================================================================================

With ``auth.enabled: false`` every request is admitted as the ``lab`` identity.
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from aisync.auth import members, redirects
from aisync.config import AuthSection
from aisync.util.errors import ConfigError, Unauthenticated

log = logging.getLogger("aisync.auth")

#: Where the gate leaves the caller's identity on the request.
IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", object)  # type: ignore[arg-type]
MIN_SECRET_CHARS = 32
#: Signers (members, proxies of redirects) whose identity is kept ready (a cluster has a handful;
#: past this, start over).
MAX_REMEMBERED_SIGNERS = 256


class Access(enum.Enum):
    PUBLIC = "public"
    CLIENT = "client"
    MEMBER = "member"
    OBJECT = "object"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request comes from: ``kind`` is admin, member, redirect, anonymous or lab."""

    kind: str
    name: str = ""
    #: A member's signed body digest, still to be checked against the body once it may be
    #: read (after 100 Continue: :meth:`Gate.check_body`); empty when there is none to check.
    body_digest: str = ""


ANONYMOUS = Identity("anonymous")
LAB = Identity("lab")
ADMIN = Identity("admin")


class Gate:
    """Credential checks for one node (built from its ``auth`` configuration)."""

    def __init__(self, config: AuthSection, node_id: str,
                 is_member_origin: Callable[[str], bool]) -> None:
        self.enabled = config.enabled
        self.redirect_ttl = config.redirect_ttl
        self._signers: dict[tuple[str, str], Identity] = {}  # see _identity
        if not self.enabled:
            log.warning("auth.enabled is false: every route of this node answers anyone who "
                        "reaches it (a lab setting; never expose such a node)")
            self._token = self._bearer = b""
            self._redirects = None
            self.signer = None
            self.verifier = None
            return
        if config.admin_token is None or not config.admin_token.get_secret_value():
            raise ConfigError("auth.admin_token is not set (AISYNC_AUTH__ADMIN_TOKEN; "
                              "`aisync cluster up` generates one), or set auth.enabled: false "
                              "for a lab")
        secret = config.cluster_secret.get_secret_value() if config.cluster_secret else ""
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"auth.cluster_secret must be set, the same on every node, at "
                              f"least {MIN_SECRET_CHARS} characters (AISYNC_AUTH__CLUSTER_SECRET)")
        self._token = config.admin_token.get_secret_value().encode()
        self._bearer = b"Bearer " + self._token
        shared = secret.encode()
        self._redirects = redirects.RedirectKey(shared)
        self.signer = members.MemberSigner(node_id, shared, is_member_origin)
        self.verifier = members.MemberVerifier(shared, config.max_clock_skew)

    # -- client side --
    def client_session_options(self) -> dict:
        """For the node's ``aiohttp.ClientSession``: its requests to members sign themselves."""
        if self.signer is None:
            return {}
        return {"request_class": members.signing_request_class(self.signer)}

    def member_headers(self, method: str, target: str) -> dict[str, str]:
        """The headers that sign one bodiless request (``target``: path and query as sent),
        for a session that does not sign by itself; none with auth off."""
        if self.signer is None:
            return {}
        return self.signer.headers(method, target, members.EMPTY_DIGEST)

    def signed_redirect(self, request: web.BaseRequest, base_url: str,
                        map_version: int) -> str:
        """The Location that hands ``request`` to the node at ``base_url``."""
        if self.signer is None:
            return f"{base_url}{request.raw_path}"
        path, _, query = request.raw_path.partition("?")
        assert self._redirects is not None
        query = self._redirects.sign(request.method, path, query, self.signer.node_id,
                                     map_version, self.redirect_ttl)
        return f"{base_url}{path}?{query}"

    # -- server side --
    def admit(self, request: web.BaseRequest, access: Access, streams_body: bool) -> Identity:
        """The caller's identity, or :class:`Unauthenticated`. ``streams_body``: the route
        takes a streamed body, which a member may send unsigned (``UNSIGNED-PAYLOAD``).

        Synchronous, and on every request's path: nothing here waits (a member's signed body
        is checked later, by :meth:`check_body`, once it may be read)."""
        if access is Access.PUBLIC:
            return ANONYMOUS
        if not self.enabled:
            return LAB
        signature = request.headers.get(members.SIGNATURE_HEADER)
        if signature is not None:
            return self._member(request, signature, streams_body)
        if access is Access.MEMBER:
            raise Unauthenticated("this route serves cluster members only")
        if access is Access.OBJECT:
            assert self._redirects is not None
            return self._identity("redirect",
                                  self._redirects.verify(request.method, request.raw_path))
        auth = request.headers.get(hdrs.AUTHORIZATION, "")
        if hmac.compare_digest(auth.encode("utf-8", "surrogateescape"), self._bearer):
            return ADMIN  # the usual shape, exactly: one comparison
        scheme, _, token = auth.partition(" ")
        if not auth:
            raise Unauthenticated("this route needs a token: Authorization: Bearer TOKEN "
                                  "(aisync cluster up stores it in <cluster dir>/admin-token)")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer TOKEN'")
        if not hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"),
                                   self._token):
            raise Unauthenticated("invalid token")
        return ADMIN

    def _member(self, request: web.BaseRequest, signature: str,
                streams_body: bool) -> Identity:
        assert self.verifier is not None
        member, digest = self.verifier.verify(request.method, request.raw_path, signature)
        if streams_body:
            pass  # a streamed body is not buffered to be hashed; its object checksum guards it
        elif digest == members.UNSIGNED:
            raise Unauthenticated("this route takes a signed body digest")
        elif request.body_exists or digest != members.EMPTY_DIGEST:
            return Identity("member", member, body_digest=digest)
        return self._identity("member", member)

    def _identity(self, kind: str, name: str) -> Identity:
        """One :class:`Identity` per signer (only a verified one gets here: a handful)."""
        identity = self._signers.get((kind, name))
        if identity is None:
            if len(self._signers) >= MAX_REMEMBERED_SIGNERS:
                self._signers.clear()
            identity = self._signers[(kind, name)] = Identity(kind, name)
        return identity

    @staticmethod
    async def check_body(request: web.BaseRequest, identity: Identity) -> None:
        """Read the (small, JSON) body a member signed and compare it with its digest; the
        handler then reads it again from aiohttp's cache."""
        body = await request.read()
        if not hmac.compare_digest(members.body_digest(body), identity.body_digest):
            raise Unauthenticated("the body does not match its signed digest")
