"""What the S3 operations share: the admitted request, and one context per front end.

:class:`S3Context` is the operations' (:mod:`.objects`, :mod:`.buckets`, :mod:`.multipart`)
only way to the proxy: bucket resolution, object placement, target URLs, the node session and
typed errors from a member's answer, all built on :class:`aisync.s3.ports.ProxyPort`.
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
from aiohttp import web

from aisync.cluster.maps import BucketProps, NodeInfo
from aisync.config import S3Section
from aisync.node.localread import LocalReads
from aisync.s3 import sigv4
from aisync.s3.ports import ProxyPort
from aisync.s3.xml import S3Error
from aisync.util.errors import InvalidArgument, NodeUnavailable, error_from_dict
from aisync.util.jsondoc import parse_json
from aisync.util.names import BucketRef, validate_object_name

#: The providers an S3 bucket name is looked up in, in this order.
PROVIDER_ORDER = ("ais", "s3", "gs", "az", "oci", "fs")


class S3Request:
    """What dispatch needs about one S3 request."""

    __slots__ = ("request", "bucket", "key", "auth", "query")

    def __init__(self, request: web.BaseRequest, bucket: str, key: str,
                 auth: sigv4.AuthResult | None) -> None:
        self.request, self.bucket, self.key, self.auth = request, bucket, key, auth
        self.query = request.query


#: An admitted S3 request (addressed and authenticated), kept between the expect hook and dispatch.
ADMITTED: web.RequestKey[S3Request] = web.RequestKey("s3", S3Request)



class S3Context:
    """The proxy as the S3 operations see it."""

    def __init__(self, proxy: ProxyPort) -> None:
        self.proxy = proxy
        self.config: S3Section = proxy.config.s3
        self.local_reads = LocalReads(proxy.config.http.local_reads)

    def resolve(self, name: str) -> tuple[BucketRef, BucketProps]:
        """The aisync bucket an S3 bucket name means; NoSuchBucket if none."""
        bucket_map = self.proxy.state.bucket_map
        if bucket_map is not None and name:
            for provider in PROVIDER_ORDER:
                try:
                    ref = BucketRef(name, provider)
                except ValueError:
                    break
                props = bucket_map.get(ref)
                if props is not None:
                    return ref, props
        raise S3Error("NoSuchBucket", "The specified bucket does not exist", BucketName=name)

    def owner(self, ref: BucketRef, key: str) -> NodeInfo:
        cluster_map = self.proxy.state.cluster_map
        if cluster_map is None or not cluster_map.active_targets:
            raise NodeUnavailable("no active targets")
        return cluster_map.owner(ref, key)

    def object_url(self, node: NodeInfo, ref: BucketRef, key: str, kind: str = "objects") -> str:
        validate_object_name(key)
        return f"{node.url}/v1/{kind}/{quote(ref.name, safe='')}/{quote(key, safe='/')}"

    @staticmethod
    def bucket_params(ref: BucketRef) -> dict[str, str]:
        params = {} if ref.provider == "ais" else {"provider": ref.provider}
        if ref.namespace:
            params["namespace"] = ref.namespace
        return params

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.proxy.session is not None
        return self.proxy.session

    @staticmethod
    async def raise_for(resp: aiohttp.ClientResponse, who: str) -> None:
        """Raise the typed error a target's (or primary's) JSON error answer carries."""
        if resp.status < 400:
            return
        try:
            body = parse_json(await resp.read(), f"the answer of the {who}")
        except (InvalidArgument, aiohttp.ClientError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        raise error_from_dict(resp.status, body or {"message": f"{who}: HTTP {resp.status}"})
