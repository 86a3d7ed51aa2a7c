"""What the native routes understand: their query parameters, shared where routes forward to one
another, and the shapes of JSON bodies (a field check, the join request).

Every route declares the query parameters it reads (``Router.add(..., query=...)``); the router
refuses any other (see :mod:`aisync.node.router`). The sets here are the ones several routes share:
a proxy's object route hands its query on to the owning target (a redirect's Location, a reverse
relay, a read worker's relay to its main process), so what one accepts, the other must too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aisync.cluster.maps import NodeRole
from aisync.util.errors import InvalidArgument, describe_validation

NONE: frozenset[str] = frozenset()
#: Which bucket a request names (see :func:`aisync.node.http.bucket_ref`).
BUCKET = frozenset({"provider", "namespace"})
#: ``mode`` (redirect or reverse) is the proxy's; it travels on to the target, which ignores it.
OBJECT_WRITE = BUCKET | {"mode"}
#: ``latest`` (re-validate with the source), ``cached`` (a peer asking: never read through) and
#: ``verify`` (check the checksum before sending) are the target's.
OBJECT_READ = OBJECT_WRITE | {"latest", "cached", "verify"}
#: A page of a listing: ``prefix``, ``token`` (the last name of the previous page), ``limit``.
LISTING = BUCKET | {"prefix", "token", "limit"}
#: A page of a bucket's change feed.
CHANGES = BUCKET | {"since", "limit"}


def check_fields(body: dict, allowed: frozenset[str], what: str) -> dict:
    """``body`` itself when every field in it is one of ``allowed``; otherwise
    ``InvalidArgument`` naming the unknown fields and the accepted ones."""
    unknown = sorted(str(key)[:64] for key in body if key not in allowed)
    if unknown:
        raise InvalidArgument(f"{what}: unknown field(s) {', '.join(map(repr, unknown[:10]))}; "
                              f"accepted: {', '.join(sorted(allowed)) or 'none'}")
    return body


class JoinRequest(BaseModel):
    """``POST /v1/cluster/join``: a node asking the primary to admit it (strict types, no other
    fields)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str = Field(min_length=1)
    role: NodeRole
    url: str = Field(min_length=1)
    host: str | None = None
    local_socket: str | None = None
    #: The cluster map version the node holds (0: none).
    map_version: int = Field(0, ge=0)


def parse_join(body: dict) -> JoinRequest:
    try:
        return JoinRequest.model_validate(body)
    except ValueError as exc:
        raise describe_validation(exc, "invalid join request") from None
