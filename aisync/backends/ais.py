"""``ais``: a peer aisync cluster as a source of truth, through the async SDK (no thread pool).

Owns: one :class:`aisync.client.AsyncClient` per configured proxy endpoint of the peer (created
lazily, each with its own connection pool), failover between those endpoints, the translation of
the peer's object metadata into :class:`VersionToken` records, and the one error table. A
``bucket`` argument is the name of an ``ais://`` bucket *of the peer* (not a cached view).

* **Version token**: ``size``; ``etag`` is the peer's content checksum, the hex of
  ``X-Aisync-Checksum: xxh3:<hex>`` (the same value the peer sends as its ``ETag`` and in listing
  entries): it changes whenever the content changes, also on a same-size overwrite, and does
  *not* change when the same bytes are written again. ``last_modified`` is ``mtime_ns / 1e9``.
  ``version_id`` is ``str(mtime_ns)``: the peer stamps every commit of an object with a fresh
  ``time.time_ns()``, so it identifies one write -- a per-write *generation*, as GCS has, hence
  ``versioned=True`` -- but it is a wall-clock stamp, not a counter: it differs per write, it is
  not guaranteed to grow (a stepped-back clock or two racing writers may give the newer write the
  smaller stamp), and the peer keeps no old versions to read by it. Anything that commits the
  object again on the peer makes a new generation, even with the same bytes: a spurious change
  at worst, never a missed one. Listing entries carry the same fields, so a listed token equals
  the token of a ``head``.
  ``checksums`` is empty: xxh3 has no field in :class:`VersionToken` (it is the ``etag``).
* **Pinned reads** (``open(if_version=...)``): the native API has no ``If-Match`` yet, so
  ``conditional_get`` is False and the check is ours: the GET's response headers (checksum and
  mtime) are compared with the token's ``etag`` and ``version_id`` *before* the stream is
  returned, i.e. before any byte is read; a mismatch closes the response and raises
  ``PreconditionFailed``. A token with a ``version_id`` therefore also fails after a rewrite with
  identical bytes (a new write), like S3's version-id check. The headers and the body of one GET
  come from one open file on the owning target, so they describe the same version.
* **Ranges**: ``byte_range`` is passed through as the SDK's inclusive ``(first, last)``; a
  ``last`` past the end is clamped by the peer, a ``first`` at or past the end is the peer's 416
  -> ``InvalidRange`` (also for any range of an empty object). ``version.size`` is always the
  whole object's size (from ``Content-Range``).
* **Writes**: ``put`` streams the local file with ``put_object`` (replayable, so failover may send
  it again) and builds the token from the peer's answer (checksum, mtime_ns, size) -- exactly our
  write, never a later one. ``content_type`` is ignored: the native API stores none.
* **Listing**: the peer's own pages (key order, UTF-8 bytes); its ``next_token`` is already the
  last key of the page, so it is passed through. ``max_page`` is the peer's limit, 10000.
* **Failover**: ``endpoints`` lists one or more proxies of the peer. A call starts at the endpoint
  that last answered and, on ``NodeUnavailable`` (unreachable, connection lost, or a 503 of that
  kind), moves on to the next, each endpoint at most once per call; the one that answers is
  remembered for the following calls. A stream that breaks mid-read is not resumed elsewhere
  (``BackendUnavailable``; callers retry from the start).
* **Errors**: the SDK already raises the typed errors of :mod:`aisync.util.errors`
  (``ObjectNotFound``, ``BucketNotFound``, ``InvalidRange``, ``AccessDenied``...), which are kept
  as they are; :data:`ERRORS` maps the rest: ``NodeUnavailable`` once failover is exhausted and
  the peer's other transient 5xx answers -> ``BackendUnavailable``; the cause is chained.

Known deviations:

* ``delete`` is not idempotent across failover: when a DELETE reached the peer but its answer was
  lost and the next endpoint is tried, that retry reports ``ObjectNotFound``.
* ``server_side_copy`` is False (the native API has no copy), ``conditional_put`` is False.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from aisync.backends.base import (
    CHUNK,
    Backend,
    Capabilities,
    ErrorTable,
    ListEntry,
    ListPage,
    ObjectStream,
    VersionToken,
    translate,
)
from aisync.client import AsyncClient, ObjectReader
from aisync.client.aio import normalize_endpoint
from aisync.util.errors import (
    AisyncError,
    BackendError,
    BackendUnavailable,
    ChecksumMismatch,
    ConfigError,
    IncompleteBody,
    InvalidArgument,
    NodeUnavailable,
    NoTargets,
    ObjectCorrupted,
    PreconditionFailed,
)
from aisync.util.names import BucketRef

T = TypeVar("T")

MAX_PAGE = 10_000            # the peer's largest listing page
CHECKSUM_PREFIX = "xxh3:"


def _untyped_5xx(exc: BaseException) -> bool:
    """A 5xx of the peer with a code the SDK has no class for (``InternalError``, ...)."""
    return type(exc) is AisyncError and exc.status >= 500


#: SDK error -> the error of the contract; the first matching row wins. Typed errors of the SDK
#: that match no row (ObjectNotFound, BucketNotFound, InvalidRange, ...) are kept as they are.
ERRORS: ErrorTable = [
    # every endpoint tried (see AisBackend._call), or the connection broke mid-stream
    (lambda e: isinstance(e, NodeUnavailable), lambda e: BackendUnavailable()),
    (lambda e: isinstance(e, NoTargets),
     lambda e: BackendUnavailable("", hint="the peer cluster has no active target")),
    # the peer quarantined a corrupted copy: a retry reads another copy or gets ObjectNotFound
    (lambda e: isinstance(e, ObjectCorrupted), lambda e: BackendUnavailable()),
    # our upload arrived damaged or short: sending it again is the cure
    (lambda e: isinstance(e, (ChecksumMismatch, IncompleteBody)), lambda e: BackendUnavailable()),
    (_untyped_5xx, lambda e: BackendUnavailable()),
    (lambda e: isinstance(e, (ConnectionError, TimeoutError)) and not isinstance(e, AisyncError),
     lambda e: BackendUnavailable()),
]


def _translate(exc: BaseException, what: str) -> BaseException:
    """The contract's error for ``exc``: a table row, else ``exc`` itself when already typed."""
    for matches, make in ERRORS:
        if matches(exc):
            err = make(exc)
            detail = exc.message if isinstance(exc, AisyncError) else str(exc)
            err.message = f"{what}: {detail or type(exc).__name__}"
            err.args = (err.message,)
            err.__cause__ = exc
            return err
    if isinstance(exc, AisyncError):
        return exc
    return translate(exc, [], what)  # untyped: BackendError, cause chained


def _raise(exc: BaseException, what: str) -> None:
    err = _translate(exc, what)
    if err is exc:
        raise exc
    raise err from exc


# -- tokens --

def _etag(checksum: str, fallback: str = "") -> str | None:
    if checksum.startswith(CHECKSUM_PREFIX):
        return checksum[len(CHECKSUM_PREFIX):] or None
    return fallback or checksum or None


def token(size: int, checksum: str, mtime_ns: int, etag: str = "") -> VersionToken:
    """The token of one object from the peer's size, ``xxh3:<hex>`` checksum and mtime_ns."""
    return VersionToken(size=size, etag=_etag(checksum, etag),
                        version_id=str(mtime_ns) if mtime_ns else None,
                        last_modified=mtime_ns / 1e9 if mtime_ns else None)


# -- profile settings --

class AisSettings(BaseModel):
    """An ``ais`` profile's settings (everything but ``provider``). Unknown keys are errors.

    ``endpoints``: one or more proxy URLs of the peer cluster (a single string is accepted);
    ``timeout``: seconds for connecting and for every wait for data (not a whole transfer).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: list[str] = Field(min_length=1)
    timeout: float = Field(60.0, gt=0)
    #: The peer cluster's admin token, sent as a bearer token ("" for none).
    token: SecretStr = SecretStr("")

    @field_validator("endpoints", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("endpoints")
    @classmethod
    def _valid_urls(cls, value: list[str]) -> list[str]:
        out = []
        for url in value:
            try:
                out.append(normalize_endpoint(url))
            except InvalidArgument as exc:
                raise ValueError(exc.message) from None
        if len(set(out)) != len(out):
            raise ValueError("endpoints are listed more than once")
        return out


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                     for err in exc.errors(include_input=False, include_url=False))


# -- the provider --

class AisBackend(Backend):
    provider = "ais"
    capabilities = Capabilities(versioned=True, conditional_get=False, conditional_put=False,
                                server_side_copy=False, checksums=frozenset(),
                                max_page=MAX_PAGE)
    ERRORS = ERRORS

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 60.0,
                 token: str = "") -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        try:
            self.endpoints = [normalize_endpoint(url) for url in endpoints]
        except InvalidArgument as exc:
            raise ConfigError(f"ais: {exc.message}") from None
        if not self.endpoints:
            raise ConfigError("ais: at least one endpoint (a proxy URL of the peer) is needed")
        if timeout <= 0:
            raise ConfigError("ais: timeout must be positive")
        self.timeout = timeout
        self._token = token  # "" (not None): never the environment's or a cluster dir's
        self._clients: list[AsyncClient | None] = [None] * len(self.endpoints)
        self._preferred = 0

    @classmethod
    def from_profile(cls, settings: Mapping[str, Any]) -> AisBackend:
        """``{"endpoints": ["http://peer-proxy-1:51080", "http://peer-proxy-2:51080"],
        "timeout": 30}`` (see :class:`AisSettings`)."""
        try:
            parsed = AisSettings.model_validate(dict(settings))
        except ValidationError as exc:
            raise ConfigError(f"invalid ais profile: {_describe(exc)}") from None
        return cls(parsed.endpoints, timeout=parsed.timeout,
                   token=parsed.token.get_secret_value())

    def __repr__(self) -> str:
        return f"AisBackend(endpoints={self.endpoints!r})"

    @property
    def endpoint(self) -> str:
        """The endpoint the next call starts with (the one that answered last)."""
        return self.endpoints[self._preferred]

    async def close(self) -> None:
        clients, self._clients = self._clients, [None] * len(self.endpoints)
        for client in clients:
            if client is not None:
                await client.close()

    # -- failover --
    def _client(self, index: int) -> AsyncClient:
        client = self._clients[index]
        if client is None:
            client = self._clients[index] = AsyncClient(self.endpoints[index],
                                                        timeout=self.timeout,
                                                        token=self._token)
        return client

    async def _call(self, what: str, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """``fn(client)`` on the preferred endpoint, then on each other one while the endpoint
        tried is unavailable; errors leave translated."""
        start, count = self._preferred, len(self.endpoints)
        for step in range(count):
            index = (start + step) % count
            try:
                result = await fn(self._client(index))
            except NodeUnavailable as exc:
                if step + 1 < count:
                    continue  # the next endpoint, if any, may answer
                tried = ", ".join(self.endpoints[(start + i) % count] for i in range(count))
                _raise(exc, f"{what} (tried {tried})")
            except Exception as exc:
                _raise(exc, what)
            self._preferred = index
            return result
        raise AssertionError("unreachable")  # the last step returns or raises

    @staticmethod
    def _ref(bucket: str) -> BucketRef:
        return BucketRef(name=bucket, provider="ais")

    # -- contract --
    async def head(self, bucket: str, name: str) -> VersionToken:
        ref = self._ref(bucket)
        info = await self._call(f"head {ref}/{name}", lambda c: c.head_object(ref, name))
        return token(info.size, info.checksum, info.mtime_ns, info.etag)

    async def open(self, bucket: str, name: str, *, byte_range: tuple[int, int] | None = None,
                   if_version: VersionToken | None = None) -> ObjectStream:
        ref = self._ref(bucket)
        what = f"get {ref}/{name}"
        if if_version is not None and not (if_version.etag or if_version.version_id):
            raise InvalidArgument(f"{what}: a pinned read needs an ETag or a version id")

        async def _open(client: AsyncClient) -> tuple[AbstractAsyncContextManager, ObjectReader]:
            cm = client.open_object(ref, name, byte_range)
            return cm, await cm.__aenter__()

        cm, reader = await self._call(what, _open)
        info = reader.info
        version = token(info.size, info.checksum, info.mtime_ns, info.etag)
        if if_version is not None:
            changed = ((if_version.etag and if_version.etag != version.etag)
                       or (if_version.version_id and if_version.version_id != version.version_id))
            if changed:
                await cm.__aexit__(None, None, None)
                raise PreconditionFailed(f"{ref}/{name} is no longer the compared version "
                                         f"(etag {if_version.etag}, mtime_ns "
                                         f"{if_version.version_id})")
        return _AisStream(version, cm, reader, what)

    async def put(self, bucket: str, name: str, path: Path, *,
                  content_type: str | None = None) -> VersionToken:
        ref = self._ref(bucket)
        info = await self._call(f"put {ref}/{name}",
                                lambda c: c.put_object(ref, name, Path(path)))
        return token(info.size, info.checksum, info.mtime_ns, info.etag)

    async def delete(self, bucket: str, name: str) -> None:
        ref = self._ref(bucket)
        await self._call(f"delete {ref}/{name}", lambda c: c.delete_object(ref, name))

    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000) -> ListPage:
        ref = self._ref(bucket)
        limit = max(1, min(limit, self.capabilities.max_page))
        page = await self._call(f"list {ref}/{prefix}",
                                lambda c: c.list_objects(ref, prefix=prefix, limit=limit,
                                                         token=token))
        if page.next_token and page.next_token == token:  # ending here would truncate it
            raise BackendError(f"list {ref}/{prefix}: the peer's continuation token did not "
                               f"advance past {token!r}", bucket=bucket)
        entries = [ListEntry(o.name, _token_of_entry(o.size, o.checksum, o.mtime_ns))
                   for o in page.objects]
        return ListPage(entries, page.next_token)


_token_of_entry = token  # ``list_page`` has a parameter named ``token``


class _AisStream(ObjectStream):
    """One open GET of the peer: chunks as they arrive; ``close`` releases the connection."""

    def __init__(self, version: VersionToken, cm: AbstractAsyncContextManager,
                 reader: ObjectReader, what: str) -> None:
        self.version = version
        self._cm, self._reader, self._what = cm, reader, what
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._closed:
            return
        try:
            async for chunk in self._reader.iter_chunks(CHUNK):
                if chunk:
                    yield chunk
        except Exception as exc:
            _raise(exc, self._what)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._cm.__aexit__(None, None, None)
