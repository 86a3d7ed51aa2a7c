"""Configuration: pydantic models with documented fields and explicit defaults.

Sources, later ones winning: the model defaults, a YAML file (``config/node.yaml`` documents every
field), then ``AISYNC_*`` environment variables, nested with ``__``
(``AISYNC_KEEPALIVE__INTERVAL=1s``, ``AISYNC_ROLE=target``). Values from the environment are parsed
as YAML scalars, so ``true``, ``5`` and ``[a, b]`` mean what they look like. Durations accept
seconds as numbers or strings such as ``500ms``, ``10s``, ``5m``, ``1h``. Secrets are ``SecretStr``
and never appear in logs or in ``model_dump`` output meant for display.

Owns: the shape of a node's configuration. May import: ``aisync.util`` only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

from aisync.util.errors import ConfigError
from aisync.util.units import parse_duration

ENV_PREFIX = "AISYNC_"
#: ``AISYNC_*`` variables that belong to tools (CLI, tests), not to a node's configuration.
NOT_NODE_SETTINGS = frozenset({"CONFIG", "ENDPOINT", "CLUSTER_DIR", "SKIP_POSTGRES", "TOKEN"})
Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ClusterSection(_Section):
    name: str = Field("zone-a", description="Cluster (zone) name, shown in status and to peers.")
    primary_url: str | None = Field(
        None,
        description="URL of the primary proxy. Targets join it at start. A proxy with no "
        "primary_url is the primary itself.",
    )


class KeepaliveSection(_Section):
    interval: Duration = Field(2.0, description="How often the primary pings every node.")
    dead_after: Duration = Field(
        6.0,
        description="A node that has not answered for this long leaves the active map "
        "(it is re-admitted when it answers again).",
    )
    request_timeout: Duration = Field(1.5, description="Timeout of one keepalive ping.")


class StorageSection(_Section):
    mountpaths: list[Path] = Field(
        default_factory=list,
        description="Target only: one directory per disk. Empty means one mountpath under "
        "data_dir.",
    )
    fsync: bool = Field(
        True, description="fsync object files and their directories before acknowledging a PUT."
    )
    small_object_bytes: int = Field(
        65536,
        ge=0,
        description="Objects up to this size are read into memory, checksum-verified on every "
        "GET and sent in one write; larger ones are sent with zero-copy sendfile.",
    )
    hot_cache_bytes: int = Field(
        256 * 1024**2,
        ge=0,
        description="Memory for a target's cache of hot small objects (verified bytes, LRU; "
        "dropped on every write or delete of the object). 0 disables it.",
    )
    cold_window_bytes: int = Field(
        64 * 1024**2,
        ge=1024**2,
        description="Per cold GET: bytes received from the source that clients may read before "
        "they reach the disk (so clients are not held to the disk's write speed); past this, "
        "the source is read at the disk's pace.",
    )
    verify_on_get: bool = Field(
        False, description="Also verify the checksum of large objects on every GET (slow)."
    )


class HttpSection(_Section):
    proxy_mode: Literal["redirect", "reverse"] = Field(
        "redirect",
        description="How a proxy hands object requests to their target: 'redirect' answers 307 "
        "(native clients follow it); 'reverse' streams through the proxy. A request may ask for "
        "either with ?mode=redirect|reverse.",
    )
    read_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Target only: extra processes that share the target's port and serve object "
        "GET/HEAD from disk (everything else goes to the main process). One Python process "
        "serves one request at a time, so on a dedicated storage host set this to about the "
        "number of cores minus one.",
    )
    local_reads: bool = Field(
        True,
        description="Short-circuit local reads: a target offers a unix socket through which a "
        "proxy on the same host opens objects and sends their bytes to S3 clients itself "
        "(sendfile), instead of relaying them over a second HTTP connection. Set it on both "
        "roles; off on either side means HTTP only.",
    )
    client_timeout: Duration = Field(
        30.0, description="Timeout for node-to-node control requests (metasync, join, status)."
    )
    max_object_bytes: int = Field(
        5 * 1024**4, ge=0, description="Largest object accepted by PUT (default 5 TiB)."
    )


class SyncSection(_Section):
    misfire_grace: Duration = Field(
        600.0, description="How late a schedule's run may start (missed while busy or while no "
        "primary ran) and still run once; later, it is recorded as skipped.")
    batches_in_flight: int = Field(
        2, ge=1, le=64, description="Job batches the planner keeps in flight per target.")
    keep_jobs: int = Field(
        1000, ge=1, description="Finished job records (with their reports) kept in the "
        "primary's catalog; older ones are pruned.")


class S3Section(_Section):
    enabled: bool = Field(
        True, description="Serve the S3 API on proxies: at the root path of the proxy's port "
        "(every path outside /v1/), and on `port` when that is set.")
    port: int | None = Field(
        None, ge=0, le=65535, description="A dedicated S3-only port on each proxy (0: any free "
        "one, printed by `aisync cluster up`). None: S3 is served on the proxy's port only.")
    region: str = Field(
        "us-east-1", description="The region clients sign for and GetBucketLocation reports.")
    domain: str | None = Field(
        None, description="Enables virtual-hosted-style addressing: a Host of "
        "`BUCKET.<domain>` names the bucket. Path-style always works.")
    max_clock_skew: Duration = Field(
        900.0, description="How far a signed request's x-amz-date may be from this node's clock.")
    key_cache_seconds: Duration = Field(
        10.0, description="How long a non-primary proxy trusts an access key it fetched from "
        "the primary (a removed key stops working on every proxy within this time).")
    anonymous: bool = Field(
        False, description="Accept unsigned S3 requests at all. Even then an anonymous request "
        "only reads, and only buckets whose `anonymous_read` property is set.")


class AuthSection(_Section):
    """Who may call a node. On by default: every ``/v1`` route but ``/v1/health*`` needs the
    admin token (clients) or a request signed with the cluster secret (other nodes)."""

    enabled: bool = Field(
        True, description="Check credentials on every route. `false` is a lab switch only: "
        "anyone who reaches a node may then read and change everything (a warning is logged "
        "at every start).")
    admin_token: SecretStr | None = Field(
        None, description="The bearer token clients send (`Authorization: Bearer TOKEN`). "
        "`aisync cluster up` generates one and stores it in <cluster dir>/admin-token. "
        "Required while auth is enabled.")
    cluster_secret: SecretStr | None = Field(
        None, description="Shared by the nodes of one cluster: signs intra-cluster requests "
        "(a keyed BLAKE2b MAC over method, path, body digest, time and a nonce) and the redirects "
        "proxies hand to clients. At least 32 characters; the same on every node. Required "
        "while auth is enabled.")
    max_clock_skew: Duration = Field(
        30.0, description="How far a signed intra-cluster request's time may be from this "
        "node's clock; its nonce is remembered this long, so a replay is refused.")
    redirect_ttl: Duration = Field(
        60.0, description="How long a redirect a proxy signed for a client stays valid at the "
        "target (the client follows it at once; this bounds a leaked Location URL).")


class RemoteProfile(_Section):
    """A peer cluster this node may talk to: remotes are attached only from these profiles, so
    no request can point a node at a URL an operator did not configure."""

    urls: list[str] = Field(
        default_factory=list, description="Proxy URLs of the peer cluster (http[s]://host:port).")
    token: SecretStr | None = Field(
        None, description="The peer cluster's token, sent as a bearer token on every request "
        "to it (peer reads, change feeds, listings).")


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = Field(
        "json", description="'json': one structured record per line; 'text' for humans."
    )
    access_log: bool = Field(False, description="Log every HTTP request (costly under load).")


class NodeConfig(_Section):
    """Everything one node process (``aisync node``) needs."""

    role: Literal["proxy", "target"] = Field("proxy", description="proxy (gateway) or target.")
    node_id: str | None = Field(
        None,
        description="Stable node id. Default: generated once and kept in data_dir/node_id.",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(51080, ge=0, le=65535, description="Port to listen on (0: any free one).")
    public_url: str | None = Field(
        None,
        description="URL other nodes and redirected clients use to reach this node. Default: "
        "http://host:port.",
    )
    data_dir: Path = Field(Path("./aisync-data"), description="Node-private state directory.")
    catalog_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the catalog. Default: sqlite file data_dir/catalog.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db.",
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="'auto': targets use asyncio's loop (native sendfile for zero-copy reads); "
        "proxies use uvloop when installed.",
    )
    backends: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named backend profiles: {name: {provider: s3, endpoint_url: ..., "
        "access_key: ..., secret_key: ...}}. Buckets refer to a profile by name; credentials "
        "stay in node configuration and never enter the replicated bucket map.",
    )
    remotes: dict[str, RemoteProfile] = Field(
        default_factory=dict,
        description="Peer clusters by alias: `aisync remote attach ALIAS` attaches one of "
        "these (and only these), with its URLs and token.",
    )
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    keepalive: KeepaliveSection = Field(default_factory=KeepaliveSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    http: HttpSection = Field(default_factory=HttpSection)
    sync: SyncSection = Field(default_factory=SyncSection)
    s3: S3Section = Field(default_factory=S3Section)
    auth: AuthSection = Field(default_factory=AuthSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{Path(self.data_dir).resolve() / 'catalog.db'}"

    def resolved_mountpaths(self) -> list[Path]:
        if self.storage.mountpaths:
            return [Path(p) for p in self.storage.mountpaths]
        return [Path(self.data_dir) / "mp0"]


def dump_with_secrets(config: BaseModel) -> str:
    """JSON of ``config`` with secrets in clear: for a node's own child processes only (a file
    of mode 0600 in its data directory), never for display or logs."""

    def reveal(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"cannot serialize {type(value).__name__}")

    return json.dumps(config.model_dump(mode="python"), default=reveal)


def env_overrides(environ: dict[str, str] | None = None, prefix: str = ENV_PREFIX) -> dict:
    """Nested dict from ``AISYNC_A__B=value`` variables (keys lower-cased, values YAML scalars)."""
    environ = dict(os.environ if environ is None else environ)
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(prefix) or key[len(prefix):] in NOT_NODE_SETTINGS:
            continue
        path = [part.lower() for part in key[len(prefix):].split("__") if part]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another one")
        node[path[-1]] = value
    return tree


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_node_config(
    path: str | os.PathLike | None = None,
    overrides: dict | None = None,
    environ: dict[str, str] | None = None,
) -> NodeConfig:
    """Defaults, then YAML file, then ``AISYNC_*`` environment, then explicit ``overrides``."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    data = _merge(data, env_overrides(environ))
    if overrides:
        data = _merge(data, overrides)
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
