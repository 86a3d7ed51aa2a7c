"""S3 multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts,
ListMultipartUploads.

Every call of one upload goes to the target that owns the final key (HRW), which keeps the
parts next to where the object will live and assembles them locally at Complete
(:mod:`aisync.target.uploads`); the ETag is S3's (MD5 of the parts' MD5s, ``-N``). Part bodies
are verified like PutObject's (:mod:`.body`). UploadPartCopy streams a range of the source
object from its owner into the part. ListMultipartUploads merges every target's uploads.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import re
import time

import aiohttp
from aiohttp import web

from aisync.node.http import json_answer
from aisync.s3.body import VerifiedBody, content_md5_hex
from aisync.s3.context import S3Context, S3Request
from aisync.s3.objects import (
    CHUNK,
    STREAM_TIMEOUT,
    ObjectOps,
    attrs_of,
    copy_source,
    preconditions,
)
from aisync.s3.xml import (
    OWNER,
    S3Error,
    common_headers,
    document,
    iso_time,
    read_xml,
    xml_response,
)
from aisync.util.errors import NodeUnavailable

MAX_PART_NUMBER = 10_000
#: x-amz-copy-source-range: ASCII digits, at most 20 (no object is 10**20 bytes long), so
#: int() is cheap and cannot hit the 4,300-digit limit.
_RANGE = re.compile(r"^bytes=([0-9]{1,20})-([0-9]{1,20})$")
_DECIMAL = re.compile(r"[0-9]{1,9}")  # ASCII digits only, and never a 5,000-digit int()


def _decimal(raw: str) -> int | None:
    """A client's count or number (part number, max-parts, ...); None unless plain digits."""
    return int(raw) if _DECIMAL.fullmatch(raw) else None


class MultipartOps:
    def __init__(self, context: S3Context, objects: ObjectOps) -> None:
        self.context = context
        self.objects = objects

    async def dispatch(self, s3: S3Request) -> web.StreamResponse:
        method = s3.request.method
        if method == "PUT":
            return await self.upload_part(s3)
        if method == "POST":
            return await self.complete(s3)
        if method == "DELETE":
            return await self.abort(s3)
        if method == "GET":
            return await self.list_parts(s3)
        raise S3Error("MethodNotAllowed", f"{method} is not allowed on an upload")

    async def _call(self, s3: S3Request, method: str, params: dict[str, str], *,
                    json_body: dict | None = None, headers: dict | None = None,
                    data=None) -> dict:
        context = self.context
        ref, _ = context.resolve(s3.bucket)
        owner = context.owner(ref, s3.key)
        try:
            async with context.session.request(method, context.object_url(owner, ref, s3.key, "uploads"),
                                          params={**context.bucket_params(ref), **params},
                                          json=json_body, headers=headers, data=data,
                                          timeout=STREAM_TIMEOUT) as resp:
                await context.raise_for(resp, "target")
                return await json_answer(resp, f"target {owner.id}") if resp.status != 204 else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            failed = getattr(data, "error", None)
            if failed is not None:
                raise failed from None
            raise NodeUnavailable(f"target {owner.id} failed the upload call: {exc}") from exc

    def _upload_id(self, s3: S3Request) -> str:
        upload_id = s3.query.get("uploadId", "")
        if not upload_id:
            raise S3Error("NoSuchUpload", "The specified upload does not exist.")
        return upload_id

    async def create(self, s3: S3Request) -> web.Response:
        attrs = attrs_of(s3.request.headers)
        answer = await self._call(s3, "POST", {},
                                  headers={"X-Aisync-Attrs": json.dumps(
                                      attrs, separators=(",", ":"))})
        return xml_response(s3.request, document("InitiateMultipartUploadResult", [
            ("Bucket", s3.bucket), ("Key", s3.key), ("UploadId", answer["upload_id"])]))

    def _part_number(self, s3: S3Request) -> int:
        number = _decimal(s3.query.get("partNumber", ""))
        if number is None or not 1 <= number <= MAX_PART_NUMBER:
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and "
                          "10000, inclusive", ArgumentName="partNumber")
        return number

    async def upload_part(self, s3: S3Request) -> web.Response:
        upload_id, part = self._upload_id(s3), self._part_number(s3)
        if "x-amz-copy-source" in s3.request.headers:
            return await self._upload_part_copy(s3, upload_id, part)
        body = VerifiedBody(s3.request, s3.auth)
        headers = {"Content-Length": str(body.length)}
        md5 = content_md5_hex(s3.request)
        if md5:
            headers["X-Aisync-Md5"] = md5
        answer = await self._call(s3, "PUT", {"upload_id": upload_id, "part": str(part)},
                                  headers=headers, data=body)
        return web.Response(status=200, headers={**common_headers(s3.request),
                                                 "ETag": f'"{answer["etag"]}"'})

    async def _upload_part_copy(self, s3: S3Request, upload_id: str,
                                part: int) -> web.Response:
        request = s3.request
        src_bucket, src_key = copy_source(request.headers["x-amz-copy-source"])
        src_ref, _ = self.context.resolve(src_bucket)
        headers = {}
        wanted = request.headers.get("x-amz-copy-source-range")
        if wanted is not None:
            match = _RANGE.match(wanted.strip())
            if match is None or int(match[1]) > int(match[2]):
                raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of "
                              "the form bytes=first-last where first and last are the "
                              "zero-based offsets of the first and last bytes to copy",
                              ArgumentName="x-amz-copy-source-range")
            headers["Range"] = wanted.strip()
        try:
            async with self.objects.open_source(src_ref, src_key, headers) as src:
                if src.status == 416:
                    raise S3Error("InvalidRange", "The requested range is not satisfiable")
                await self.context.raise_for(src, "target")
                preconditions(request.headers, src.headers.get("ETag", ""), None,
                              prefix="x-amz-copy-source-", reading=False)
                if src.content_length is None:
                    raise NodeUnavailable("the source target sent no Content-Length")
                answer = await self._call(
                    s3, "PUT", {"upload_id": upload_id, "part": str(part)},
                    headers={"Content-Length": str(src.content_length)},
                    data=src.content.iter_chunked(CHUNK))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise NodeUnavailable(f"the part's source failed mid-read: {exc}") from exc
        return xml_response(request, document("CopyPartResult", [
            ("LastModified", iso_time(time.time())),
            ("ETag", f'"{answer["etag"]}"')]))

    async def complete(self, s3: S3Request) -> web.Response:
        upload_id = self._upload_id(s3)
        root = await read_xml(s3.request)
        if root.tag != "CompleteMultipartUpload":
            raise S3Error("MalformedXML", "expected a CompleteMultipartUpload document")
        parts = []
        for element in root.findall("Part"):
            number = _decimal((element.findtext("PartNumber") or "").strip())
            etag = element.findtext("ETag")
            if number is None or etag is None:
                raise S3Error("MalformedXML", "each Part needs a PartNumber and an ETag")
            parts.append({"part": number, "etag": etag.strip().strip('"')})
        if not parts:
            raise S3Error("MalformedXML", "You must specify at least one part")
        answer = await self._call(s3, "POST", {"upload_id": upload_id, "complete": "1"},
                                  json_body={"parts": parts})
        location = f"/{s3.bucket}/{s3.key}"
        return xml_response(s3.request, document("CompleteMultipartUploadResult", [
            ("Location", location), ("Bucket", s3.bucket), ("Key", s3.key),
            ("ETag", f'"{answer["etag"]}"')]))

    async def abort(self, s3: S3Request) -> web.Response:
        await self._call(s3, "DELETE", {"upload_id": self._upload_id(s3)})
        return web.Response(status=204, headers=common_headers(s3.request))

    async def list_parts(self, s3: S3Request) -> web.Response:
        upload_id = self._upload_id(s3)
        params = {"upload_id": upload_id}
        marker = s3.query.get("part-number-marker")
        if marker:
            params["part_marker"] = marker
        max_parts = s3.query.get("max-parts")
        if max_parts:
            count = _decimal(max_parts)
            if count is None:
                raise S3Error("InvalidArgument", "max-parts must be an integer",
                              ArgumentName="max-parts")
            params["max_parts"] = str(min(count, 1000))
        answer = await self._call(s3, "GET", params)
        parts = [("Part", [("PartNumber", p["part"]),
                           ("LastModified", iso_time(float(p.get("last_modified", 0)))),
                           ("ETag", f'"{p["etag"]}"'), ("Size", p["size"])])
                 for p in answer.get("parts", [])]
        return xml_response(s3.request, document("ListPartsResult", [
            ("Bucket", s3.bucket), ("Key", s3.key), ("UploadId", upload_id),
            ("Initiator", OWNER), ("Owner", OWNER), ("StorageClass", "STANDARD"),
            ("PartNumberMarker", marker or "0"),
            ("NextPartNumberMarker", answer.get("next_part_marker")),
            ("MaxParts", params.get("max_parts", "1000")),
            ("IsTruncated", bool(answer.get("truncated"))), *parts]))

    async def list_uploads(self, s3: S3Request) -> web.Response:
        context = self.context
        ref, _ = context.resolve(s3.bucket)
        prefix = s3.query.get("prefix", "")
        cluster_map = context.proxy.state.cluster_map
        if cluster_map is None or not cluster_map.active_targets:
            raise NodeUnavailable("no active targets")

        async def one(target) -> list[dict]:
            url = f"{target.url}/v1/uploads/{ref.name}"
            try:
                async with context.session.get(url, params={**context.bucket_params(ref),
                                                       "prefix": prefix}) as resp:
                    await context.raise_for(resp, "target")
                    return (await json_answer(resp, f"target {target.id}"))["uploads"]
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                raise NodeUnavailable(f"target {target.id} did not list uploads: {exc}") \
                    from exc

        lists = await asyncio.gather(*(one(t) for t in cluster_map.active_targets))
        merged = list(heapq.merge(*lists, key=lambda u: (u["name"].encode("utf-8",
                                                                             "surrogatepass"),
                                                         u["initiated"])))
        key_marker = s3.query.get("key-marker", "")
        if key_marker:
            merged = [u for u in merged if u["name"] > key_marker]
        raw_limit = _decimal(s3.query.get("max-uploads", "1000"))
        if raw_limit is None:
            raise S3Error("InvalidArgument", "max-uploads must be an integer",
                          ArgumentName="max-uploads")
        limit = min(raw_limit, 1000)
        page, truncated = merged[:limit], len(merged) > limit
        uploads = [("Upload", [("Key", u["name"]), ("UploadId", u["upload_id"]),
                               ("Initiator", OWNER), ("Owner", OWNER),
                               ("StorageClass", "STANDARD"),
                               ("Initiated", iso_time(float(u["initiated"])))]) for u in page]
        return xml_response(s3.request, document("ListMultipartUploadsResult", [
            ("Bucket", s3.bucket), ("KeyMarker", key_marker), ("UploadIdMarker", ""),
            ("NextKeyMarker", page[-1]["name"] if truncated else None),
            ("NextUploadIdMarker", page[-1]["upload_id"] if truncated else None),
            ("Prefix", prefix), ("MaxUploads", limit), ("IsTruncated", truncated),
            *uploads]))
