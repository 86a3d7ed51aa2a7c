"""S3 object operations: GetObject, HeadObject, PutObject, DeleteObject(s), CopyObject.

Bytes stream between the S3 client and the owning target through the proxy (no redirect, no
buffering). Conditional GETs (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since)
are decided on the target's response headers before any body moves; ``response-*`` query
parameters override the answer's headers. A PUT sends the target the object's S3 attributes
(Content-Type, ``x-amz-meta-*``, stored standard headers) and asks it for the MD5 ETag,
checking Content-MD5 there; the body is verified on the way (:mod:`.body`).
"""

from __future__ import annotations

import asyncio
import json
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from aisync.node.files import FdResponse
from aisync.node.http import STORED_HEADERS
from aisync.node.localread import LocalAnswer
from aisync.s3 import splice
from aisync.s3.body import VerifiedBody, content_md5_hex
from aisync.s3.context import S3Context, S3Request
from aisync.s3.xml import (
    OWNER,
    S3Error,
    common_headers,
    document,
    iso_time,
    read_xml,
    s3_code,
    xml_response,
)
from aisync.util.errors import AisyncError, NodeUnavailable
from aisync.util.names import validate_object_name

CHUNK = 1 << 20
#: Timeouts of a relayed object: no total limit (objects are large), but a stalled peer fails.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120)
SPLICE_MIN = 1 << 20  # bodies from this size on move target → client with splice(2)
SMALL_BODY = 256 << 10  # bodies up to this size are read whole and sent in one write
#: Headers of a target's answer an S3 client sees.
PASSED_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "ETag", "Last-Modified",
                  "Accept-Ranges", *STORED_HEADERS)
OVERRIDES = {"response-content-type": "Content-Type",
             "response-content-language": "Content-Language",
             "response-expires": "Expires", "response-cache-control": "Cache-Control",
             "response-content-disposition": "Content-Disposition",
             "response-content-encoding": "Content-Encoding"}
DELETE_CONCURRENCY = 16
CONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")


def attrs_of(headers) -> dict:
    """S3 attributes from headers: those a PUT (or a REPLACE copy, or CreateMultipartUpload)
    sets, or those of a stored object in a target's GET/HEAD answer."""
    meta = {k[11:].lower(): v for k, v in headers.items() if k.lower().startswith("x-amz-meta-")}
    attrs: dict = {"type": headers.get("Content-Type") or "binary/octet-stream"}
    stored = {h: headers[h] for h in STORED_HEADERS if h in headers}
    if "Content-Encoding" in stored:  # aws-chunked frames this request's body, not the object
        codings = [c.strip() for c in stored["Content-Encoding"].split(",")
                   if c.strip() and c.strip().lower() != "aws-chunked"]
        if codings:
            stored["Content-Encoding"] = ",".join(codings)
        else:
            del stored["Content-Encoding"]
    if meta:
        attrs["meta"] = meta
    if stored:
        attrs["headers"] = stored
    return attrs


def _http_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _etag_matches(condition: str, etag: str) -> bool:
    bare = etag.strip('"')
    return any(c.strip() in ("*", f'"{bare}"', bare) for c in condition.split(","))


def preconditions(headers, etag: str, last_modified: float | None, *, prefix: str = "",
                  reading: bool = True) -> None:
    """S3's rules for If-* headers (``prefix`` = ``x-amz-copy-source-`` for copies): 412
    PreconditionFailed, or 304 NotModified for reads."""
    def get(name: str) -> str | None:
        return headers.get(prefix + name)

    if_match, if_none = get("If-Match"), get("If-None-Match")
    unmodified, modified = _http_seconds(get("If-Unmodified-Since")), \
        _http_seconds(get("If-Modified-Since"))
    if if_match is not None:
        if not _etag_matches(if_match, etag):
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                          "specified did not hold", Condition=prefix + "If-Match")
    elif unmodified is not None and last_modified is not None and last_modified > unmodified:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified "
                      "did not hold", Condition=prefix + "If-Unmodified-Since")
    not_modified = "PreconditionFailed" if not reading else "NotModified"
    if if_none is not None:
        if _etag_matches(if_none, etag):
            raise S3Error(not_modified, "Not Modified")
    elif modified is not None and last_modified is not None and last_modified <= modified:
        raise S3Error(not_modified, "Not Modified")


class ObjectOps:
    def __init__(self, context: S3Context) -> None:
        self.context = context

    def open_source(self, ref, key: str, headers: dict[str, str] | None = None,
                    method: str = "GET"):
        """A streamed GET (or HEAD) of an object at its owner: the response context manager.
        The body is the stored bytes, never decoded (``Content-Encoding`` is the object's
        metadata, for the client to apply)."""
        context = self.context
        owner = context.owner(ref, key)
        return context.session.request(method, context.object_url(owner, ref, key),
                                  params=context.bucket_params(ref), headers=headers or {},
                                  timeout=STREAM_TIMEOUT, auto_decompress=False)

    # -- reads --
    async def get(self, s3: S3Request) -> web.StreamResponse:
        ref, _ = self.context.resolve(s3.bucket)
        request = s3.request
        if s3.query.get("partNumber") not in (None, "1"):
            raise S3Error("InvalidArgument", "partNumber other than 1 is not supported")
        validate_object_name(s3.key)
        head = request.method == "HEAD"
        local = await self.context.local_reads.open(self.context.owner(ref, s3.key), ref, s3.key,
                                               head=head,
                                               byte_range=request.headers.get("Range"))
        if local is not None:
            return self._local_answer(s3, local, head)
        headers = {}
        if "Range" in request.headers:
            headers["Range"] = request.headers["Range"]
        try:
            async with self.open_source(ref, s3.key, headers, request.method) as up:
                if up.status == 416:
                    raise S3Error("InvalidRange", "The requested range is not satisfiable",
                                  ActualObjectSize=up.headers.get("Content-Range", "*/?")
                                  .rpartition("/")[2])
                await self.context.raise_for(up, "target")
                answer = self._answer_headers(s3, up.headers)
                if head or (up.content_length is not None and up.content_length <= SMALL_BODY):
                    # one write for headers and body (a streamed answer costs three)
                    body = b"" if head else await up.read()
                    return _whole(up.status, answer, body, head)
                out = web.StreamResponse(status=up.status, headers=answer)
                if up.content_length is not None:
                    out.content_length = up.content_length
                await out.prepare(request)
                await self._body(request, up, out)
                await out.write_eof()
                return out
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise NodeUnavailable(f"the owning target failed mid-answer: {exc}") from exc

    def _local_answer(self, s3: S3Request, local: LocalAnswer,
                      head: bool) -> web.StreamResponse:
        """The answer from an object the owning target opened for us (short-circuit); the
        descriptor, when one came, goes to an ``FdResponse``, which closes it once sent."""
        try:
            answer = self._answer_headers(s3, CIMultiDict(local.headers))
            if head or local.body is not None:
                return _whole(local.status, answer, local.body or b"", head)
        except BaseException:
            local.close()
            raise
        return FdResponse(local, local.offset, local.count, status=local.status,
                          headers=answer)

    def _answer_headers(self, s3: S3Request, found) -> dict[str, str]:
        """What the client sees of an object's headers (``found``: the target's, any case):
        preconditions decided, passed headers and user metadata kept, ``response-*`` applied."""
        request = s3.request
        if any(name in request.headers for name in CONDITIONS):
            preconditions(request.headers, found.get("ETag", ""),
                          _http_seconds(found.get("Last-Modified")))
        answer = common_headers(request)
        for name in PASSED_HEADERS:
            if name in found:
                answer[name] = found[name]
        for name, value in found.items():
            if name.lower().startswith("x-amz-meta-"):
                answer[name] = value
        if "Content-Type" not in found:
            answer["Content-Type"] = "binary/octet-stream"
        for param, name in OVERRIDES.items():
            if param in s3.query:
                answer[name] = s3.query[param]
        return answer

    @staticmethod
    async def _body(request: web.BaseRequest, up: aiohttp.ClientResponse,
                    out: web.StreamResponse) -> None:
        """The target's body to the client: spliced in the kernel when large (the upstream
        connection is then closed, not pooled), streamed through Python otherwise."""
        remaining = up.content_length
        connection = up.connection
        if remaining is not None and remaining >= SPLICE_MIN and splice.AVAILABLE and \
                connection is not None and connection.transport is not None and \
                "Transfer-Encoding" not in up.headers:
            transport = connection.transport
            transport.pause_reading()
            while remaining:
                buffered = up.content.read_nowait(-1)
                if not buffered:
                    break
                await out.write(buffered)
                remaining -= len(buffered)
            transport.pause_reading()  # reading the buffer may have resumed it
            if not remaining or await splice.relay_rest(transport, request.transport,
                                                         remaining):
                up.close()
                return
            transport.resume_reading()
        async for chunk in up.content.iter_chunked(CHUNK):
            await out.write(chunk)

    async def get_acl(self, s3: S3Request) -> web.Response:
        """A fixed ACL (the key's owner has full control): what aisync enforces is keys."""
        self.context.resolve(s3.bucket)
        grant = [("Grantee", OWNER),
                 ("Permission", "FULL_CONTROL")]
        element = document("AccessControlPolicy", [("Owner", OWNER),
                                                   ("AccessControlList", [("Grant", grant)])])
        grantee = element.find(".//Grantee")
        assert grantee is not None
        grantee.set("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance")
        grantee.set("xsi:type", "CanonicalUser")
        return xml_response(s3.request, element)

    # -- writes --
    async def put(self, s3: S3Request, *, body=None, attrs: dict | None = None,
                  md5: str | None = None) -> web.Response:
        ref, _ = self.context.resolve(s3.bucket)
        request = s3.request
        up_headers = await self.store(ref, s3.key, s3, body=body, attrs=attrs, md5=md5)
        headers = {"ETag": up_headers.get("ETag", "")}
        return web.Response(status=200, headers={**common_headers(request), **headers})

    async def store(self, ref, key: str, s3: S3Request, *, body=None, attrs: dict | None = None,
                    md5: str | None = None, length: int | None = None):
        """PUT an object at its owner from the request body (verified) or ``body`` (an async
        iterable of ``length`` bytes); returns the target's answer headers."""
        context = self.context
        if body is None:
            body = VerifiedBody(s3.request, s3.auth)
            length = body.length
            md5 = content_md5_hex(s3.request)
            if length is not None and length <= SMALL_BODY:
                body = b"".join([chunk async for chunk in body])  # verified: one write onward
        attrs = attrs_of(s3.request.headers) if attrs is None else attrs
        owner = context.owner(ref, key)
        headers = {"Content-Length": str(length), "X-Aisync-Md5": md5 or "want",
                   "X-Aisync-Attrs": json.dumps(attrs, separators=(",", ":"))}
        try:
            async with context.session.put(context.object_url(owner, ref, key),
                                      params=context.bucket_params(ref), headers=headers, data=body,
                                      timeout=STREAM_TIMEOUT, auto_decompress=False) as up:
                await context.raise_for(up, "target")
                await up.read()
                return up.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            failed = getattr(body, "error", None)
            if failed is not None:
                raise failed from None  # the body failed its checks: nothing was stored
            raise NodeUnavailable(f"target {owner.id} failed the write: {exc}") from exc

    async def delete(self, s3: S3Request) -> web.Response:
        ref, _ = self.context.resolve(s3.bucket)
        await self._delete_one(ref, s3.key)
        return web.Response(status=204, headers=common_headers(s3.request))

    async def _delete_one(self, ref, key: str) -> None:
        context = self.context
        owner = context.owner(ref, key)
        try:
            async with context.session.delete(context.object_url(owner, ref, key),
                                         params=context.bucket_params(ref)) as up:
                if up.status == 404:
                    return  # S3: deleting a missing key succeeds
                await context.raise_for(up, "target")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeUnavailable(f"target {owner.id} failed the delete: {exc}") from exc

    async def delete_many(self, s3: S3Request) -> web.Response:
        ref, _ = self.context.resolve(s3.bucket)
        root = await read_xml(s3.request)
        if root.tag != "Delete":
            raise S3Error("MalformedXML", "expected a Delete document")
        quiet = (root.findtext("Quiet") or "").strip().lower() == "true"
        keys = [(o.findtext("Key") or "") for o in root.findall("Object")]
        if not keys or len(keys) > 1000:
            raise S3Error("MalformedXML", "a Delete lists 1 to 1000 objects")
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(key: str) -> tuple[str, str | None, str]:
            async with gate:
                try:
                    await self._delete_one(ref, key)
                    return key, None, ""
                except AisyncError as exc:
                    return key, s3_code(exc), exc.message

        results = await asyncio.gather(*(one(k) for k in keys))
        children: list = []
        for key, code, message in results:
            if code is None:
                if not quiet:
                    children.append(("Deleted", [("Key", key)]))
            else:
                children.append(("Error", [("Key", key), ("Code", code), ("Message", message)]))
        return xml_response(s3.request, document("DeleteResult", children))

    async def copy(self, s3: S3Request) -> web.Response:
        """CopyObject: the source streams from its owner into a PUT at the destination's."""
        request = s3.request
        src_bucket, src_key = copy_source(request.headers["x-amz-copy-source"])
        src_ref, _ = self.context.resolve(src_bucket)
        dst_ref, _ = self.context.resolve(s3.bucket)
        directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.")
        if (src_ref, src_key) == (dst_ref, s3.key) and directive == "COPY":
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying "
                          "to copy an object to itself without changing the object's metadata, "
                          "storage class, website redirect location or encryption attributes.")
        try:
            async with self.open_source(src_ref, src_key) as src:
                await self.context.raise_for(src, "target")
                preconditions(request.headers, src.headers.get("ETag", ""),
                              _http_seconds(src.headers.get("Last-Modified")),
                              prefix="x-amz-copy-source-", reading=False)
                attrs = attrs_of(src.headers) if directive == "COPY" else attrs_of(request.headers)
                length = src.content_length
                if length is None:
                    raise NodeUnavailable("the source target sent no Content-Length")
                answer = await self.store(dst_ref, s3.key, s3,
                                          body=src.content.iter_chunked(CHUNK), attrs=attrs,
                                          length=length)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise NodeUnavailable(f"the copy's source failed mid-read: {exc}") from exc
        modified = _http_seconds(answer.get("Last-Modified")) or 0.0
        element = document("CopyObjectResult", [("LastModified", iso_time(modified)),
                                                ("ETag", answer.get("ETag", ""))])
        return xml_response(request, element)


def _whole(status: int, headers: dict[str, str], body: bytes, head: bool) -> web.Response:
    """A complete answer in one write; a HEAD keeps the object's Content-Length."""
    response = web.Response(status=status, headers=headers, body=body)
    if head:
        response.headers["Content-Length"] = headers.get("Content-Length", "0")
    return response


def copy_source(value: str) -> tuple[str, str]:
    """``x-amz-copy-source``: ``[/]bucket/key`` URL-encoded; a versionId is not supported."""
    path, _, query = value.partition("?")
    if query:
        raise S3Error("NotImplemented", "copying a specific source version is not implemented")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: "
                      "sourcebucket/sourcekey")
    return bucket, key




