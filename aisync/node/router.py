"""The nodes' HTTP dispatch: a small explicit router on aiohttp's low-level server.

Nodes serve a fixed, small set of routes, and the object routes are the hot path of the whole
system, so they skip ``web.Application`` (its router, middleware chain and signals measured
~30 % of a warm small-object GET) and use ``web.Server`` with this dispatcher:

* routes are ``METHOD PATTERN`` where a pattern's segments are literals, ``{var}`` (one segment)
  or a final ``{var:.+}`` (the rest of the path, slashes included, a trailing one too: object
  names may end with ``/``); matched values land in ``request[MATCH]``;
* ``Expect: 100-continue`` is answered here: a route may give an ``expect`` hook that returns a
  final response instead (the proxy's redirect-before-body), otherwise ``100 Continue`` is sent;
* every route declares who may call it (``access``, an :class:`aisync.auth.Access`; default
  MEMBER, so a route added without thought is closed to clients) and the router asks the node's
  :class:`aisync.auth.Gate` before anything else happens: before ``100 Continue``, before a
  body byte is read, before the handler;
* a final answer given before the body of an ``Expect: 100-continue`` request was invited (a
  refusal, the proxy's redirect) closes the connection: the client may or may not send the
  body anyway, and whatever it sends must not be read as its next request;
* a route never acts on a request it does not understand. Each route declares the query
  parameters it reads (``query``, required) and what body it takes (``body``); right after the
  gate, before ``100 Continue`` and the handler, the router answers 400 ``InvalidArgument`` for
  a parameter the route does not declare (naming it and the accepted ones), a parameter given
  twice, and a body (``Content-Length`` over 0, or chunked) on a route that takes none. A
  ``json`` route's body, when there is one, must be a JSON object whatever its Content-Type
  (``curl -d`` and urllib label JSON as form data): checked once the body may be read, before
  the handler, which then validates its fields. A ``stream`` body is the handler's. The
  signed-redirect parameter (``ais_auth``) is accepted on every ``Access.OBJECT`` route. The
  fallback (the S3 front end) checks its own requests;
* this is the one place exceptions become responses (see ``aisync.node.http.error_response``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from aisync.auth import Access, Gate
from aisync.auth.gate import IDENTITY
from aisync.auth.redirects import PARAM as REDIRECT_PARAM
from aisync.auth.redirects import only_redirect_param
from aisync.node.http import MATCH, error_response, json_document
from aisync.util.errors import AisyncError, InvalidArgument, MethodNotAllowed, NotFound

log = logging.getLogger("aisync.node")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
ExpectHook = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]


#: What a route takes as its request body.
BODY_KINDS = ("none", "json", "stream")


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    expect: ExpectHook | None = None
    access: Access = Access.MEMBER
    #: The query parameters the route understands; None only for a fallback, which checks
    #: its own requests (every route added with :meth:`Router.add` declares them).
    query: frozenset[str] | None = None
    #: What the route takes as its body: one of :data:`BODY_KINDS`.
    body: str = "none"


def _names(names) -> str:
    return ", ".join(repr(str(n)[:64]) for n in sorted(names)[:10]) or "none"


def _check_request(route: Route, request: web.BaseRequest) -> None:
    """The query and body rules of a routed request: cheap, and nothing at all to do when
    there is neither a query string nor a body (an object GET's usual shape)."""
    allowed = route.query
    if allowed is None:
        return
    query_string = request.query_string
    if query_string and not (REDIRECT_PARAM in allowed and only_redirect_param(query_string)):
        query = request.query
        if not allowed.issuperset(query):
            unknown = {key for key in query if key not in allowed}
            accepted = sorted(allowed - {REDIRECT_PARAM})
            raise InvalidArgument(f"this route does not take the query parameter(s) "
                                  f"{_names(unknown)}; accepted: {_names(accepted)}",
                                  unknown=sorted(unknown)[:10], accepted=accepted)
        if len(query) > 1 and len(set(query)) != len(query):
            repeated = sorted({key for key in query if len(query.getall(key)) > 1})
            raise InvalidArgument(f"query parameter(s) given more than once: {_names(repeated)}",
                                  repeated=repeated)
    if route.body == "none" and request.body_exists:
        raise InvalidArgument("this route takes no body (the request has a Content-Length "
                              "over 0 or a chunked body)")


class _Pattern:
    __slots__ = ("segments", "greedy", "methods", "prefix")

    def __init__(self, pattern: str) -> None:
        parts = pattern.strip("/").split("/")
        self.greedy = parts[-1].endswith(":.+}")
        if self.greedy:
            parts[-1] = parts[-1][:-4] + "}"
        self.segments = tuple(parts)
        self.methods: dict[str, Route] = {}
        #: The first two segments when both are literal: only paths that start with them can
        #: match (the router's index); None for a pattern that must always be tried.
        self.prefix = (parts[0], parts[1]) if len(parts) >= 2 and "{" not in parts[0] \
            and "{" not in parts[1] else None

    def match(self, parts: list[str]) -> dict[str, str] | None:
        segments = self.segments
        n = len(segments)
        if not self.greedy and len(parts) == n + 1 and not parts[-1]:
            parts = parts[:-1]  # a trailing slash on a fixed route
        if len(parts) < n if self.greedy else len(parts) != n:
            return None
        params: dict[str, str] = {}
        for i, seg in enumerate(segments):
            if seg[0] == "{":
                if self.greedy and i == n - 1:
                    value = "/".join(parts[i:])
                else:
                    value = parts[i]
                if not value:
                    return None
                params[seg[1:-1]] = value
            elif seg != parts[i]:
                return None
        return params


class Router:
    def __init__(self, fallback: Handler | None = None, gate: Gate | None = None,
                 fallback_access: Access = Access.PUBLIC) -> None:
        """``fallback`` (if given) serves every request no route matches, instead of 404/405,
        admitted at ``fallback_access``. ``gate`` checks credentials (None: no checks, for
        routers of tests and internal sockets only)."""
        self._patterns: list[_Pattern] = []
        self._by_text: dict[str, _Pattern] = {}
        # The patterns worth trying for a path, by its first two segments (in the order they
        # were added, so the first match wins as if all were tried); ``_always`` for the rest.
        self._by_prefix: dict[tuple[str, str], tuple[_Pattern, ...]] = {}
        self._always: tuple[_Pattern, ...] = ()
        self._fallback = Route(fallback, access=fallback_access) \
            if fallback is not None else None
        self._reserved: str | None = None
        self.gate = gate

    def set_fallback(self, handler: Handler, expect: ExpectHook | None = None, *,
                     reserved: str | None = None, access: Access = Access.PUBLIC) -> None:
        """Serve every request no route matches with ``handler`` (the proxy's S3 front end,
        which authenticates with SigV4 itself), except paths under ``reserved`` (e.g. ``/v1``:
        they keep their 404/405 answers)."""
        self._fallback = Route(handler, expect, access=access)
        self._reserved = reserved

    def add(self, method: str, pattern: str, handler: Handler, *,
            query: frozenset[str] | set[str] | tuple[str, ...],
            expect: ExpectHook | None = None, access: Access = Access.MEMBER,
            body: str = "none") -> None:
        """Route ``method pattern`` to ``handler``. ``query``: every query parameter the
        handler reads (anything else is refused; ``()`` for none). ``body``: ``none`` (any body
        is refused), ``json`` (a JSON object, optional unless the handler requires it) or
        ``stream`` (the handler reads it)."""
        if body not in BODY_KINDS:
            raise ValueError(f"body must be one of {BODY_KINDS}")
        if isinstance(query, str):
            raise TypeError("query is a collection of parameter names, not one string")
        accepted = frozenset(query)
        if access is Access.OBJECT:  # a proxy's signed Location carries it
            accepted |= {REDIRECT_PARAM}
        compiled = self._by_text.get(pattern)
        if compiled is None:
            compiled = self._by_text[pattern] = _Pattern(pattern)
            self._patterns.append(compiled)
            self._index()
        if method in compiled.methods:
            raise ValueError(f"{method} {pattern} is already routed")
        compiled.methods[method] = Route(handler, expect, access, accepted, body)

    def _index(self) -> None:
        prefixes = {p.prefix for p in self._patterns if p.prefix is not None}
        self._always = tuple(p for p in self._patterns if p.prefix is None)
        self._by_prefix = {key: tuple(p for p in self._patterns if p.prefix in (key, None))
                           for key in prefixes}

    def routes(self) -> list[tuple[str, str, Route]]:
        """Every ``(method, pattern, route)``: what the route-walking tests go through."""
        out = []
        for pattern in self._patterns:
            text = "/" + "/".join(
                seg[:-1] + ":.+}" if pattern.greedy and i == len(pattern.segments) - 1
                else seg for i, seg in enumerate(pattern.segments))
            out.extend((method, text, route) for method, route in pattern.methods.items())
        return out

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        # Only the leading slash goes: an object name may end with "/" (a directory marker).
        parts = path[1:].split("/") if path != "/" else []
        allowed = False
        candidates = self._by_prefix.get((parts[0], parts[1]), self._always) \
            if len(parts) >= 2 else self._always
        for pattern in candidates:
            params = pattern.match(parts)
            if params is None:
                continue
            route = pattern.methods.get(method)
            if route is not None:
                return route, params
            allowed = True
        reserved = self._reserved
        if self._fallback is not None and not (
                reserved and (path == reserved or path.startswith(reserved + "/"))):
            return self._fallback, {}
        if allowed:
            raise MethodNotAllowed(f"{method} is not allowed on {path}")
        raise NotFound(f"no such API path: {path}")

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        # Until 100 Continue is sent, the client of an Expect request holds its body back.
        expect = request.headers.get(hdrs.EXPECT)
        held_back = expect is not None and expect.lower() == "100-continue"
        try:
            route, params = self.resolve(request.method, request.path)
            request[MATCH] = params
            gate = self.gate
            if gate is not None:
                request[IDENTITY] = identity = gate.admit(request, route.access,
                                                          route.body == "stream")
            else:
                identity = None
            _check_request(route, request)
            if held_back:
                if route.expect is not None:
                    early = await route.expect(request)
                    if early is not None:
                        early.force_close()
                        return early
                await request.writer.write(
                    b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
                held_back = False
            if identity is not None and identity.body_digest:  # a member signed a body
                await Gate.check_body(request, identity)
            if route.body == "json" and request.body_exists:
                json_document(await request.read(), "the request body")
            return await route.handler(request)
        except AisyncError as exc:
            answer = error_response(request, exc.status, exc.code, exc.message,
                                    exc.details or None)
        except web.HTTPException as exc:
            if exc.status < 400:
                answer = exc  # redirects raised by handlers
            else:
                answer = error_response(request, exc.status, "HTTPError", exc.reason)
        except (ConnectionError, TimeoutError) as exc:  # reset, broken pipe, aborted
            # The client (or the peer a body was relayed from) went away mid-request: nothing
            # to answer. A response on a closed transport is dropped quietly by aiohttp.
            log.info("client went away: %s %s (%s)", request.method, request.path, exc)
            if request.transport is not None:
                request.transport.close()
            return error_response(request, 400, "IncompleteBody", "the client went away")
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            answer = error_response(request, 500, "InternalError",
                                    "internal error; see the node log")
        if held_back:
            answer.force_close()
        return answer
