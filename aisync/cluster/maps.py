"""The cluster map and the bucket map: immutable, versioned documents.

Only the primary proxy creates a new version (``with_*`` methods return a new document with
``version + 1``); it pushes every version to every node (metasync), and each node keeps the newest
it has seen, persisting it in its catalog and rejecting older ones (:func:`check_newer`).

Both maps carry the cluster ``uuid``: a node never accepts a map of a different cluster.
"""

from __future__ import annotations

import uuid as uuidlib
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aisync.util import hrw
from aisync.util.errors import InvalidArgument, NoTargets, StaleMapVersion
from aisync.util.names import BucketRef

NodeRole = Literal["proxy", "target"]
NodeState = Literal["active", "inactive"]
Consistency = Literal["none", "validate", "synchronize"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class NodeInfo(_Doc):
    id: str
    role: NodeRole
    url: str
    state: NodeState = "active"
    #: The machine it runs on (kernel boot id), so nodes can tell who shares their host.
    host: str | None = None
    #: A target's socket for short-circuit local reads (see ``aisync.node.localread``).
    local_socket: str | None = None


class ClusterMap(_Doc):
    """Membership: every known node, its role, URL and state, and which proxy is primary."""

    uuid: str
    name: str
    version: int = Field(ge=1)
    primary: str
    nodes: dict[str, NodeInfo]
    created: str = Field(default_factory=_now)

    def model_copy(self, *, update: dict | None = None, deep: bool = False) -> ClusterMap:
        """A new, validated document. (pydantic's copy would carry this instance's cached
        placement views over to a copy whose nodes differ.)"""
        return type(self).model_validate({**self.model_dump(), **(update or {})})

    @classmethod
    def bootstrap(cls, name: str, primary: NodeInfo) -> ClusterMap:
        return cls(uuid=uuidlib.uuid4().hex, name=name, version=1, primary=primary.id,
                   nodes={primary.id: primary})

    # -- derived views (cached per immutable instance) --
    @cached_property
    def active_targets(self) -> tuple[NodeInfo, ...]:
        return tuple(sorted((n for n in self.nodes.values()
                             if n.role == "target" and n.state == "active"), key=lambda n: n.id))

    @cached_property
    def _seeded_targets(self) -> tuple[tuple[int, str], ...]:
        return tuple((hrw.node_seed(n.id), n.id) for n in self.active_targets)

    @property
    def proxies(self) -> list[NodeInfo]:
        return sorted((n for n in self.nodes.values() if n.role == "proxy"), key=lambda n: n.id)

    @property
    def primary_node(self) -> NodeInfo:
        return self.nodes[self.primary]

    def owner(self, bucket: BucketRef, object_name: str) -> NodeInfo:
        """The active target that owns ``bucket/object_name`` (HRW over active targets)."""
        if not self._seeded_targets:
            raise NoTargets("the cluster has no active targets")
        return self.nodes[hrw.pick(f"{bucket.uname}/{object_name}", self._seeded_targets)]

    # -- new versions (primary only) --
    def _next(self, **changes: object) -> ClusterMap:
        fields = self.model_dump()
        fields.update(changes)
        fields["version"] = self.version + 1
        fields["created"] = _now()
        return ClusterMap.model_validate(fields)

    def with_node(self, node: NodeInfo) -> ClusterMap:
        nodes = {k: v.model_dump() for k, v in self.nodes.items()}
        nodes[node.id] = node.model_dump()
        return self._next(nodes=nodes)

    def with_state(self, node_id: str, state: NodeState) -> ClusterMap:
        return self.with_node(self.nodes[node_id].model_copy(update={"state": state}))

    def without_node(self, node_id: str) -> ClusterMap:
        nodes = {k: v.model_dump() for k, v in self.nodes.items() if k != node_id}
        return self._next(nodes=nodes)

    def bumped_to(self, version: int) -> ClusterMap:
        """Same content at a higher version (a restarted primary jumping past what nodes hold)."""
        return self.model_copy(update={"version": max(version, self.version)})


class BucketProps(_Doc):
    """A bucket and, for buckets cached from a source of truth, where that source is.

    ``profile`` names a backend profile of the nodes' configuration (credentials live there);
    ``settings`` holds non-secret provider settings (an endpoint, a region, an fs ``path``);
    ``source`` is the bucket's name at the provider when it differs from ``name``.
    """

    name: str
    provider: str = "ais"
    namespace: str = ""
    created: str = Field(default_factory=_now)
    profile: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)
    source: str = ""
    #: On-access consistency with the source (cached buckets): ``none`` serves cached copies
    #: as they are; ``validate`` asks the source (HEAD) on every warm GET and re-fetches on
    #: change; ``synchronize`` also drops the copy and answers 404 when the source deleted it.
    consistency: Consistency = "none"
    #: Seconds within which a copy fetched or validated is served without asking the source
    #: (with ``validate``/``synchronize``); None: always ask.
    max_staleness: float | None = Field(default=None, ge=0)
    #: Aliases of attached remote clusters a cold GET asks first (peer-first reads): a peer that
    #: holds the object at the source's current version serves it instead of the far source.
    peers: list[str] = Field(default_factory=list)
    #: Unsigned S3 requests may read this bucket (GET, HEAD, listings), when the proxies'
    #: ``s3.anonymous`` setting allows anonymous requests at all.
    anonymous_read: bool = False

    @property
    def backed(self) -> bool:
        return self.provider != "ais" or bool(self.namespace)

    @property
    def source_bucket(self) -> str:
        return self.source or self.name

    @property
    def ref(self) -> BucketRef:
        return BucketRef(name=self.name, provider=self.provider, namespace=self.namespace)


class BucketMap(_Doc):
    """Every bucket the cluster knows, keyed by its unique name (``ais/train``)."""

    uuid: str
    version: int = Field(ge=1)
    buckets: dict[str, BucketProps] = Field(default_factory=dict)
    #: Job schedules by name (cluster metadata, so every node holds them and a new primary
    #: finds them): ``{"trigger": {...}, "job": {...}, "created": ...}``; see ``aisync.sync``.
    schedules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: Attached remote clusters by alias: ``{"urls": [...], "uuid": ..., "attached": ...}``.
    remotes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    created: str = Field(default_factory=_now)

    @classmethod
    def bootstrap(cls, cluster_uuid: str) -> BucketMap:
        return cls(uuid=cluster_uuid, version=1)

    def get(self, bucket: BucketRef) -> BucketProps | None:
        return self.buckets.get(bucket.uname)

    def _next(self, buckets: dict[str, dict] | None = None,
              schedules: dict[str, dict] | None = None,
              remotes: dict[str, dict] | None = None) -> BucketMap:
        if buckets is None:
            buckets = {k: v.model_dump() for k, v in self.buckets.items()}
        return BucketMap(uuid=self.uuid, version=self.version + 1, buckets=buckets,
                         schedules=self.schedules if schedules is None else schedules,
                         remotes=self.remotes if remotes is None else remotes)

    def with_bucket(self, props: BucketProps) -> BucketMap:
        buckets = {k: v.model_dump() for k, v in self.buckets.items()}
        buckets[props.ref.uname] = props.model_dump()
        return self._next(buckets)

    def without_bucket(self, bucket: BucketRef) -> BucketMap:
        return self._next({k: v.model_dump() for k, v in self.buckets.items()
                           if k != bucket.uname})

    def with_schedule(self, name: str, definition: dict[str, Any]) -> BucketMap:
        return self._next(schedules={**self.schedules, name: definition})

    def without_schedule(self, name: str) -> BucketMap:
        return self._next(schedules={k: v for k, v in self.schedules.items() if k != name})

    def with_remote(self, alias: str, definition: dict[str, Any]) -> BucketMap:
        return self._next(remotes={**self.remotes, alias: definition})

    def without_remote(self, alias: str) -> BucketMap:
        return self._next(remotes={k: v for k, v in self.remotes.items() if k != alias})


def check_newer(current: ClusterMap | BucketMap | None,
                incoming: ClusterMap | BucketMap) -> bool:
    """Whether ``incoming`` should replace ``current``.

    Older versions raise :class:`StaleMapVersion`; the same version is a no-op (False); a map of
    another cluster raises :class:`InvalidArgument`.
    """
    if current is None:
        return True
    if incoming.uuid != current.uuid:
        raise InvalidArgument(
            f"map belongs to cluster {incoming.uuid}, this node is in cluster {current.uuid}")
    if incoming.version < current.version:
        raise StaleMapVersion(
            f"{type(incoming).__name__} v{incoming.version} is older than v{current.version}",
            held=current.version)
    return incoming.version > current.version
