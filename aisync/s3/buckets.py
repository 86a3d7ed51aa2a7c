"""S3 bucket operations: ListBuckets, Create/Head/DeleteBucket, GetBucketLocation,
GetBucketVersioning, and ListObjects V1 and V2.

Listings walk the proxy's merged, key-ordered pages (:meth:`ProxyNode.list_page`: the cluster's
copies, merged with the source's listing for cached buckets), so memory stays bounded by one
page whatever the bucket's size. With a delimiter, the keys under one common prefix are
skipped by restarting the walk *after* that prefix (``prefix + U+10FFFF`` sorts after every
key that starts with it), not read one by one. Continuation tokens are opaque (base64 of where
the next page starts).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote

import aiohttp
from aiohttp import web

from aisync.s3.context import S3Context, S3Request
from aisync.s3.xml import (
    OWNER,
    S3Error,
    common_headers,
    document,
    iso_time,
    parse_xml,
    xml_response,
)
from aisync.util.errors import BucketAlreadyExists, NodeUnavailable
from aisync.util.names import validate_bucket_name, validate_prefix

PAGE = 1000
SKIP = "\U0010ffff"  # sorts after any character: ``cp + SKIP`` is after every key under cp


def encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8", "surrogatepass")).decode()


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token") from None


def entry_etag(entry: dict) -> str:
    version = entry.get("version") or {}
    etag = version.get("etag") if version else None
    if not etag:
        etag = (entry.get("attrs") or {}).get("etag") or entry["checksum"].partition(":")[2]
    return f'"{etag}"'


def entry_modified(entry: dict) -> float:
    version = entry.get("version") or {}
    if version and version.get("last_modified"):
        return float(version["last_modified"])
    return entry.get("mtime_ns", 0) / 1e9


class BucketOps:
    def __init__(self, context: S3Context) -> None:
        self.context = context

    # -- the service and buckets --
    async def list_buckets(self, s3: S3Request) -> web.Response:
        bucket_map = self.context.proxy.state.bucket_map
        seen: dict[str, str] = {}
        if bucket_map is not None:
            for props in bucket_map.buckets.values():
                if not props.namespace and props.name not in seen:
                    seen[props.name] = props.created
        buckets = [("Bucket", [("Name", name), ("CreationDate", _iso(created))])
                   for name, created in sorted(seen.items())]
        return xml_response(s3.request, document("ListAllMyBucketsResult",
                                                 [("Owner", OWNER), ("Buckets", buckets)]))

    async def head(self, s3: S3Request) -> web.Response:
        self.context.resolve(s3.bucket)
        return web.Response(status=200, headers={**common_headers(s3.request),
                                                 "x-amz-bucket-region": self.context.config.region})

    async def location(self, s3: S3Request) -> web.Response:
        self.context.resolve(s3.bucket)
        region = self.context.config.region
        element = document("LocationConstraint")
        if region != "us-east-1":
            element.text = region
        return xml_response(s3.request, element)

    async def versioning(self, s3: S3Request) -> web.Response:
        self.context.resolve(s3.bucket)
        return xml_response(s3.request, document("VersioningConfiguration"))

    async def request_payment(self, s3: S3Request) -> web.Response:
        self.context.resolve(s3.bucket)
        return xml_response(s3.request, document("RequestPaymentConfiguration",
                                                 [("Payer", "BucketOwner")]))

    async def create(self, s3: S3Request) -> web.Response:
        """CreateBucket makes an ``ais://`` bucket (cached buckets are created natively, with
        their source). Re-creating a bucket you have answers BucketAlreadyOwnedByYou."""
        try:
            validate_bucket_name(s3.bucket)
        except ValueError as exc:
            raise S3Error("InvalidBucketName", f"The specified bucket is not valid: {exc}",
                          BucketName=s3.bucket) from None
        try:
            self.context.resolve(s3.bucket)
        except S3Error:
            pass
        else:
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named "
                          "bucket succeeded and you already own it.", BucketName=s3.bucket)
        body = b""
        async for chunk in s3.request.content.iter_any():  # CreateBucketConfiguration
            body += chunk
            if len(body) > 1 << 16:
                raise S3Error("MalformedXML", "the CreateBucketConfiguration is too large")
        if body.strip() and parse_xml(body).tag != "CreateBucketConfiguration":
            raise S3Error("MalformedXML", "expected a CreateBucketConfiguration document")
        try:
            await self._primary("PUT", f"/v1/buckets/{quote(s3.bucket, safe='')}")
        except BucketAlreadyExists:
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named "
                          "bucket succeeded and you already own it.", BucketName=s3.bucket) \
                from None
        return web.Response(status=200, headers={**common_headers(s3.request),
                                                 "Location": f"/{s3.bucket}"})

    async def delete(self, s3: S3Request) -> web.Response:
        """DeleteBucket: only an empty one (BucketNotEmpty otherwise). For a cached bucket this
        unregisters it from the cluster; the source bucket is never deleted through aisync."""
        ref, props = self.context.resolve(s3.bucket)
        page, _ = await self.context.proxy.list_page(ref, props, "", None, 1)
        if page:
            raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty",
                          BucketName=s3.bucket)
        params = "" if ref.provider == "ais" else f"?provider={ref.provider}"
        await self._primary("DELETE", f"/v1/buckets/{quote(ref.name, safe='')}{params}")
        return web.Response(status=204, headers=common_headers(s3.request))

    async def _primary(self, method: str, path: str) -> None:
        cluster_map = self.context.proxy.state.cluster_map
        if cluster_map is None:
            raise NodeUnavailable("no cluster map yet")
        url = f"{cluster_map.primary_node.url}{path}"
        try:
            async with self.context.session.request(method, url) as resp:
                await self.context.raise_for(resp, "primary proxy")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeUnavailable(f"the primary proxy is unreachable: {exc}") from exc

    # -- listings --
    async def list_objects(self, s3: S3Request) -> web.Response:
        ref, props = self.context.resolve(s3.bucket)
        query = s3.query
        v2 = query.get("list-type") == "2"
        if "list-type" in query and not v2:
            raise S3Error("InvalidArgument", "list-type must be 2", ArgumentName="list-type")
        prefix = validate_prefix(query.get("prefix", ""))
        delimiter = query.get("delimiter", "")
        try:
            max_keys = int(query.get("max-keys", "1000"))
        except ValueError:
            max_keys = -1
        if max_keys < 0:
            raise S3Error("InvalidArgument", "max-keys must be a non-negative integer",
                          ArgumentName="max-keys")
        max_keys = min(max_keys, 1000)
        encoding = query.get("encoding-type")
        if encoding not in (None, "url"):
            raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                          ArgumentName="encoding-type")
        if v2:
            token = query.get("continuation-token")
            start = decode_token(token) if token else query.get("start-after", "")
        else:
            start = query.get("marker", "")
            if start and delimiter and start.endswith(delimiter) and \
                    start.startswith(prefix) and delimiter not in start[len(prefix):-len(delimiter)]:
                start += SKIP  # resuming after a common prefix: skip what is under it
        keys, prefixes, truncated, next_marker = await self._walk(
            ref, props, prefix, delimiter, start, max_keys)

        def enc(value: str) -> str:
            return quote(value, safe="/") if encoding == "url" else value

        contents = [("Contents", [("Key", enc(e["name"])),
                                  ("LastModified", iso_time(entry_modified(e))),
                                  ("ETag", entry_etag(e)), ("Size", e["size"]),
                                  ("Owner", OWNER if not v2 or query.get("fetch-owner") == "true"
                                   else None),
                                  ("StorageClass", "STANDARD")]) for e in keys]
        common = [("CommonPrefixes", [("Prefix", enc(p))]) for p in prefixes]
        head: list = [("Name", s3.bucket), ("Prefix", enc(prefix))]
        if v2:
            head += [("StartAfter", enc(query["start-after"]) if "start-after" in query else None),
                     ("ContinuationToken", query.get("continuation-token")),
                     ("NextContinuationToken",
                      encode_token(next_marker) if truncated and next_marker else None),
                     ("KeyCount", len(keys) + len(prefixes))]
        else:
            head += [("Marker", enc(query.get("marker", ""))),
                     ("NextMarker", enc(next_marker.removesuffix(SKIP))
                      if truncated and delimiter and next_marker else None)]
        head += [("MaxKeys", max_keys), ("Delimiter", enc(delimiter) if delimiter else None),
                 ("EncodingType", encoding), ("IsTruncated", truncated)]
        return xml_response(s3.request, document("ListBucketResult", head + contents + common))

    async def _walk(self, ref, props, prefix: str, delimiter: str, start: str,
                    max_keys: int) -> tuple[list[dict], list[str], bool, str]:
        """Keys and common prefixes after ``start``, at most ``max_keys`` of them together;
        returns (keys, prefixes, truncated, where the next page starts)."""
        keys: list[dict] = []
        prefixes: list[str] = []
        token: str | None = start or None
        if token is not None and prefix and token < prefix:
            token = None  # everything under the prefix is after the marker
        marker = start
        if max_keys == 0:
            return keys, prefixes, False, marker
        while True:
            page, next_token = await self.context.proxy.list_page(ref, props, prefix, token, PAGE)
            for entry in page:
                name = entry["name"]
                if token is not None and name <= token:
                    continue
                if delimiter:
                    cut = name.find(delimiter, len(prefix))
                    if cut >= 0:
                        common = name[:cut + len(delimiter)]
                        if prefixes and prefixes[-1] == common:
                            continue
                        if len(keys) + len(prefixes) == max_keys:
                            return keys, prefixes, True, marker
                        prefixes.append(common)
                        marker = common + SKIP
                        continue
                if len(keys) + len(prefixes) == max_keys:
                    return keys, prefixes, True, marker
                keys.append(entry)
                marker = name
            if next_token is None:
                return keys, prefixes, False, marker
            token = marker if marker.endswith(SKIP) and marker > next_token else next_token


def _iso(created: str) -> str:
    """A bucket's creation time (ISO 8601 in the bucket map) in S3's format."""
    from datetime import datetime

    try:
        return iso_time(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return iso_time(0)
