"""What the S3 front end needs of the proxy it runs in: one narrow port.

:class:`ProxyPort` is everything ``aisync.s3`` may touch of a proxy: its configuration, its view
of the cluster (maps), its HTTP session to the other nodes, access-key secrets and bucket
listings. ``ProxyNode`` implements it; nothing in this package imports ``aisync.proxy``.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from aisync.cluster.maps import BucketMap, BucketProps, ClusterMap
from aisync.config import NodeConfig
from aisync.util.names import BucketRef


class ClusterView(Protocol):
    """The maps this node holds now (None until the first one arrived)."""

    cluster_map: ClusterMap | None
    bucket_map: BucketMap | None


class SecretLookup(Protocol):
    async def secret_for(self, access_key: str) -> str | None:
        """The secret of an access key, or None when no such key exists."""
        ...


class ProxyPort(Protocol):
    config: NodeConfig
    state: ClusterView
    keys: SecretLookup
    #: The node's session to other members (requests sign themselves); set once started.
    session: aiohttp.ClientSession | None

    async def list_page(self, ref: BucketRef, props: BucketProps, prefix: str,
                        token: str | None, limit: int,
                        cached_only: bool = False) -> tuple[list[dict], str | None]:
        """Up to ``limit`` entries after ``token`` in key order, and the next token."""
        ...
