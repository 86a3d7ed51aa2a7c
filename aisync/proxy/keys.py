"""S3 access keys on the proxy: the ``/v1/auth/keys`` routes and the S3 front end's key lookup.

Keys are cluster-level records in the PRIMARY proxy's catalog
(:class:`~aisync.catalog.keys.KeysMixin`); any other proxy forwards these requests to it:

* ``POST /v1/auth/keys`` (optional JSON body ``{"access_key", "secret_key", "description"}``)
  → 201 ``{"access_key", "secret_key", "description", "created"}``, the only answer that shows
  the secret. Absent values are generated: an access key of 20 characters ``AK`` + ``[A-Z0-9]``,
  a secret of 40 URL-safe characters (240 random bits). Given values must follow the rules of
  :mod:`aisync.catalog.keys` (400 ``InvalidArgument`` saying which and why); an access key in use
  is 409 ``AlreadyExists``.
* ``GET /v1/auth/keys`` → ``{"keys": [{"access_key", "description", "created"}]}`` (no secrets).
* ``DELETE /v1/auth/keys/{access_key}`` → 204, or 404 ``AccessKeyNotFound``.
* ``GET /v1/auth/keys/{access_key}/secret`` → ``{"secret_key"}`` or 404 ``AccessKeyNotFound``:
  internal, how non-primary proxies learn a secret (the native API is not authenticated: keep
  it on a trusted network, as every other ``/v1`` route).

:meth:`ProxyKeys.secret_for` is what the S3 front end calls to verify a signature: the primary
reads its catalog; another proxy asks the primary and caches the answer, the secret or "no such
key" alike, for ``s3.key_cache_seconds`` (0: never cached), so a removed key stops working on
every proxy within that time. Concurrent lookups of one key share one request to the primary,
and the cache holds at most :data:`CACHE_MAX_ENTRIES` keys (unknown ids arrive with unsigned
garbage too). A proxy that forwards a create or delete drops its own entry for that key at once.

Secrets never reach a log record or an error message: log calls name access keys only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from aisync.auth import Access
from aisync.catalog import ACCESS_KEY_RE, check_access_key, check_description, check_secret_key
from aisync.node.http import MATCH, json_object, parse_json
from aisync.util.errors import (
    AccessKeyNotFound,
    InvalidArgument,
    NodeUnavailable,
    error_from_dict,
)

if TYPE_CHECKING:
    from aisync.proxy.node import ProxyNode

log = logging.getLogger("aisync.keys")

#: Generated access keys: ``AK`` and 18 characters of this alphabet (20 in all).
ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits
GENERATED_ACCESS_KEY_LEN = 20
#: Bytes of randomness in a generated secret (40 URL-safe base64 characters).
SECRET_BYTES = 30
#: Most keys a non-primary proxy keeps cached; beyond it the oldest entries go first.
CACHE_MAX_ENTRIES = 10_000
#: Fields ``POST /v1/auth/keys`` accepts.
CREATE_FIELDS = frozenset({"access_key", "secret_key", "description"})


def generate_access_key() -> str:
    """A new access key id: ``AK`` + 18 random characters of ``[A-Z0-9]``."""
    tail = GENERATED_ACCESS_KEY_LEN - 2
    return "AK" + "".join(secrets.choice(ACCESS_KEY_ALPHABET) for _ in range(tail))


def generate_secret_key() -> str:
    """A new secret: 40 URL-safe characters (``[A-Za-z0-9_-]``) from 240 random bits."""
    return secrets.token_urlsafe(SECRET_BYTES)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog row as the API shows it (never the secret)."""
    return {"access_key": row["access_key"], "description": row["description"],
            "created": row["created_at"]}


class ProxyKeys:
    """The access-key routes of a proxy and :meth:`secret_for`; built by ``ProxyNode``."""

    def __init__(self, node: ProxyNode) -> None:
        self.node = node
        #: access key -> (secret or None for "no such key", monotonic expiry); non-primary only
        self._cache: dict[str, tuple[str | None, float]] = {}
        # On the primary: secrets read from its own catalog, exact because only this process
        # changes that catalog (dropped on every create and delete here).
        self._known: dict[str, str] = {}
        self._inflight: dict[str, asyncio.Future[str | None]] = {}
        r = node.router
        r.add("POST", "/v1/auth/keys", self.handle_create, access=Access.CLIENT, query=(),
              body="json")
        r.add("GET", "/v1/auth/keys", self.handle_list, access=Access.CLIENT, query=())
        # greedy: a malformed id with a '/' in it is "no such key", not "no such API path"
        r.add("DELETE", "/v1/auth/keys/{access_key:.+}", self.handle_delete,
              access=Access.CLIENT, query=())
        # how other proxies learn a secret to check SigV4: members only, never a client
        r.add("GET", "/v1/auth/keys/{access_key}/secret", self.handle_secret, query=())

    # -- routes --

    async def handle_create(self, request: web.BaseRequest) -> web.Response:
        if not self.node.is_primary:
            return await self._forward(request)
        body = await json_object(request, "access key", required=False)
        unknown = sorted(set(body) - CREATE_FIELDS)
        if unknown:
            raise InvalidArgument(
                f"unknown field(s) {unknown}; allowed: {sorted(CREATE_FIELDS)}")
        given_key, given_secret = body.get("access_key"), body.get("secret_key")
        access_key = generate_access_key() if given_key is None else check_access_key(given_key)
        secret_key = generate_secret_key() if given_secret is None else check_secret_key(
            given_secret)
        description = check_description(body.get("description"))
        self._known.pop(access_key, None)
        row = await self.node.run_blocking(
            self.node.catalog.create_access_key, access_key, secret_key, description)
        log.info("access key %s created (%s id)", access_key,
                 "generated" if given_key is None else "given")
        return web.json_response({**_public(row), "secret_key": row["secret_key"]}, status=201,
                                 headers={"Cache-Control": "no-store"})

    async def handle_list(self, request: web.BaseRequest) -> web.Response:
        if not self.node.is_primary:
            return await self._forward(request)
        rows = await self.node.run_blocking(self.node.catalog.list_access_keys)
        return web.json_response({"keys": [_public(row) for row in rows]})

    async def handle_delete(self, request: web.BaseRequest) -> web.Response:
        if not self.node.is_primary:
            return await self._forward(request)
        access_key = request[MATCH]["access_key"]
        self._known.pop(access_key, None)
        deleted = await self.node.run_blocking(self.node.catalog.delete_access_key, access_key)
        self._known.pop(access_key, None)  # a lookup may have raced the delete
        if not deleted:
            raise AccessKeyNotFound(f"no access key {access_key!r}", access_key=access_key)
        log.info("access key %s removed", access_key)
        return web.Response(status=204)

    async def handle_secret(self, request: web.BaseRequest) -> web.Response:
        if not self.node.is_primary:
            return await self._forward(request)
        access_key = request[MATCH]["access_key"]
        secret = await self.node.run_blocking(self.node.catalog.access_key_secret, access_key)
        if secret is None:
            raise AccessKeyNotFound(f"no access key {access_key!r}", access_key=access_key)
        return web.json_response({"secret_key": secret}, headers={"Cache-Control": "no-store"})

    async def _forward(self, request: web.BaseRequest) -> web.Response:
        """Forward to the primary; a create or delete through this proxy also drops this
        proxy's cached answer for that key, so it sees its own change at once."""
        response = await self.node._forward_to_primary(request)
        if request.method == "DELETE":
            self._cache.pop(request[MATCH]["access_key"], None)
        elif request.method == "POST" and response.status == 201:
            try:
                created = json.loads(bytes(response.body))  # type: ignore[arg-type]
                self._cache.pop(str(created["access_key"]), None)
            except (ValueError, TypeError, KeyError):
                pass
        return response

    # -- the S3 front end's lookup --

    async def secret_for(self, access_key: str) -> str | None:
        """The secret of ``access_key``, or None when no such key exists (malformed ids never
        do). On the primary: a catalog read. Elsewhere: asked of the primary, and the answer
        (either kind) reused for ``s3.key_cache_seconds``. A primary that cannot be reached (or
        a proxy without a cluster map yet) raises :class:`NodeUnavailable`; errors are never
        cached."""
        if not isinstance(access_key, str) or not ACCESS_KEY_RE.fullmatch(access_key):
            return None
        if self.node.is_primary:
            known = self._known.get(access_key)
            if known is not None:
                return known
            secret = await self.node.run_blocking(self.node.catalog.access_key_secret,
                                                  access_key)
            if secret is not None:
                if len(self._known) >= CACHE_MAX_ENTRIES:
                    self._known.clear()
                self._known[access_key] = secret
            return secret
        hit = self._cache.get(access_key)
        if hit is not None:
            if hit[1] > time.monotonic():
                return hit[0]
            del self._cache[access_key]
        pending = self._inflight.get(access_key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(access_key))
            self._inflight[access_key] = pending

            def done(task: asyncio.Future[str | None], key: str = access_key) -> None:
                if self._inflight.get(key) is task:
                    del self._inflight[key]
                if not task.cancelled():
                    task.exception()  # observed here: every waiter may have gone away

            pending.add_done_callback(done)
        # shielded: one waiter going away must not cancel the lookup the others share
        return await asyncio.shield(pending)

    async def _fetch(self, access_key: str) -> str | None:
        """Ask the primary for the secret of ``access_key`` and cache the answer."""
        cluster_map, session = self.node.state.cluster_map, self.node.session
        if cluster_map is None or session is None:
            raise NodeUnavailable("this proxy has no cluster map yet: cannot look up access keys")
        primary = cluster_map.primary_node.url
        url = f"{primary}/v1/auth/keys/{quote(access_key, safe='')}/secret"
        try:
            async with session.get(url) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NodeUnavailable(
                f"primary proxy at {primary} is unreachable: cannot look up access keys"
            ) from exc
        try:
            body = parse_json(raw, "the primary's answer") if raw else {}
        except InvalidArgument:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if status == 200 and isinstance(body.get("secret_key"), str):
            secret: str | None = body["secret_key"]
        elif status == 404 and body.get("code") == AccessKeyNotFound.code:
            secret = None
        elif status < 400:
            raise NodeUnavailable(f"primary proxy at {primary} sent an unexpected answer "
                                  f"(HTTP {status}) to an access key lookup")
        else:
            raise error_from_dict(status, body)
        self._remember(access_key, secret)
        return secret

    def _remember(self, access_key: str, secret: str | None) -> None:
        ttl = float(self.node.config.s3.key_cache_seconds)
        if ttl <= 0:
            return
        now = time.monotonic()
        cache = self._cache
        cache.pop(access_key, None)  # re-inserted last: dict order is age order
        if len(cache) >= CACHE_MAX_ENTRIES:
            for key in [k for k, (_, expiry) in cache.items() if expiry <= now]:
                del cache[key]
            while len(cache) >= CACHE_MAX_ENTRIES:
                del cache[next(iter(cache))]
        cache[access_key] = (secret, now + ttl)
