"""Shared HTTP pieces: error responses, request parsing, object headers, ranges.

Every error answer has the same shape: the error's ``status`` with a JSON ``{"code", "message"}``
body (for HEAD, the code travels in the ``X-Aisync-Error-Code`` header). The router
(``aisync.node.router``) is the one place that turns exceptions into such answers.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web

from aisync.auth.redirects import only_redirect_param
from aisync.storage.metadata import ObjectMetadata
from aisync.util.errors import InvalidArgument, InvalidRange, NodeUnavailable
from aisync.util.jsondoc import parse_json
from aisync.util.names import BucketRef, normalize_provider, validate_object_name

#: Where the router puts a request's matched path values ({"bucket": ..., "name": ...}).
MATCH: web.RequestKey[dict[str, str]] = web.RequestKey("match", dict)

log = logging.getLogger("aisync.node")

ERROR_HEADER = "X-Aisync-Error-Code"
def error_response(request: web.BaseRequest, status: int, code: str, message: str,
                   details: dict | None = None) -> web.Response:
    headers = {ERROR_HEADER: code}
    if status == 416 and details and "size" in details:
        headers["Content-Range"] = f"bytes */{details['size']}"
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    body: dict = {"code": code, "message": message}
    if details:
        body["details"] = details
    return web.json_response(body, status=status, headers=headers)


def node_server(handler, *, access_log: logging.Logger | None = None) -> web.Server:
    """The HTTP server of every port a node listens on (its API, the S3-only port, a read
    worker's). Request bodies reach handlers exactly as sent: aiohttp's ``auto_decompress`` is
    off, so a PUT with ``Content-Encoding: gzip`` stores the bytes the client sent (S3 keeps
    Content-Encoding as object metadata) and a body no decoder takes is never an error."""
    return web.Server(handler, access_log=access_log, auto_decompress=False)


@functools.lru_cache(maxsize=4096)
def _cached_ref(name: str, provider: str, namespace: str) -> BucketRef:
    return BucketRef(name=name, provider=normalize_provider(provider), namespace=namespace)


def no_params(request: web.BaseRequest) -> bool:
    """Whether the request has no query parameter a handler reads: none at all, or only a
    proxy's redirect signature (which the gate checked). Then nothing is parsed."""
    query_string = request.query_string
    return not query_string or only_redirect_param(query_string)


def bucket_ref(request: web.BaseRequest) -> BucketRef:
    """The bucket a request names (validated once per distinct bucket, then cached)."""
    if no_params(request):
        return _cached_ref(request[MATCH]["bucket"], "ais", "")
    query = request.query
    return _cached_ref(request[MATCH]["bucket"], query.get("provider", "ais"),
                       query.get("namespace", ""))


def object_name(request: web.BaseRequest) -> str:
    return validate_object_name(request[MATCH].get("name", ""))


def json_document(raw: bytes | str, what: str) -> dict:
    """:func:`parse_json`, and the document must be a JSON object."""
    doc = parse_json(raw, what)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: the body must be a JSON object")
    return doc


async def json_object(request: web.BaseRequest, what: str, *, required: bool = True) -> dict:
    """The request body as a JSON object (see :func:`parse_json`); ``InvalidArgument`` (400)
    for anything else. An absent body is ``{}`` when not ``required``."""
    if not required and not request.body_exists:
        return {}
    return json_document(await request.read(), what)


async def json_answer(response: aiohttp.ClientResponse, who: str) -> Any:
    """Another node's JSON answer, read with :func:`parse_json` whatever its status. A document
    that is not JSON (or too deep) is that node's fault: ``NodeUnavailable`` (503), naming
    ``who``."""
    raw = await response.read()
    try:
        return parse_json(raw, f"the answer of {who}")
    except InvalidArgument as exc:
        raise NodeUnavailable(exc.message) from None


def int_query(request: web.BaseRequest, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"query parameter {key!r} must be an integer") from None
    if not lo <= value <= hi:
        raise InvalidArgument(f"query parameter {key!r} must be between {lo} and {hi}")
    return value


MAX_PAGE = 10000


def page_limit(request: web.BaseRequest) -> int:
    """The ``limit`` of a listing page: default 1000, at most ``MAX_PAGE``."""
    return int_query(request, "limit", 1000, 1, MAX_PAGE)


def bool_query(request: web.BaseRequest, key: str) -> bool:
    if no_params(request):
        return False
    return request.query.get(key, "").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1024)
def http_date(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


def object_headers(meta: ObjectMetadata) -> dict[str, str]:
    """Headers of a stored object. A copy cached from a source carries the source's ETag (what
    clients of that source know) and its version id; ``X-Aisync-Checksum`` is always ours."""
    attrs = meta.attrs or {}
    headers = {
        "ETag": f'"{attrs.get("etag") or meta.etag}"',
        "X-Aisync-Checksum": meta.checksum,
        "X-Aisync-Mtime-Ns": str(meta.mtime_ns),
        "Last-Modified": http_date(meta.mtime_ns // 1_000_000_000),
        "Accept-Ranges": "bytes",
    }
    if meta.source:
        if meta.source.get("etag"):
            headers["ETag"] = f'"{meta.source["etag"]}"'
        if meta.source.get("last_modified"):
            headers["Last-Modified"] = http_date(int(meta.source["last_modified"]))
        if meta.source.get("version_id"):
            headers["X-Aisync-Source-Version"] = str(meta.source["version_id"])
        # the whole token: what a peer cluster compares before it reads this copy
        headers["X-Aisync-Source-Token"] = json.dumps(meta.source, separators=(",", ":"))
    if attrs:
        if attrs.get("type"):
            headers["Content-Type"] = attrs["type"]
        for key, value in (attrs.get("headers") or {}).items():
            headers[key] = value
        for key, value in (attrs.get("meta") or {}).items():
            headers[f"x-amz-meta-{key}"] = value
    return headers


#: Standard headers an S3 PUT may set and every GET of the object returns.
STORED_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding",
                  "Content-Language", "Expires")


#: What a header value may hold: no control characters (CR, LF, NUL), no lone surrogates.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\ud7ff\ue000-\U0010ffff]*")
_META_KEY = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _stored_attrs(doc: dict) -> dict:
    """The attributes an object may store, checked for shape: every later GET sends them as
    headers, so a value a response cannot carry (CR, LF, a number) is refused at the PUT."""
    attrs: dict = {}
    kind = doc.get("type")
    if kind:
        if not isinstance(kind, str) or not _HEADER_VALUE.fullmatch(kind):
            raise InvalidArgument("X-Aisync-Attrs: type must be a header value")
        attrs["type"] = kind
    stored = {h.lower(): h for h in STORED_HEADERS}
    for field, valid_key in (("meta", _META_KEY.fullmatch),
                             ("headers", lambda k: k.lower() in stored)):
        value = doc.get(field)
        if not value:
            continue
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and valid_key(k) and isinstance(v, str)
                and _HEADER_VALUE.fullmatch(v) for k, v in value.items()):
            raise InvalidArgument(f"X-Aisync-Attrs: {field} must map header names to values")
        attrs[field] = value if field == "meta" else {stored[k.lower()]: v
                                                        for k, v in value.items()}
    return attrs


def put_attrs(request: web.BaseRequest) -> tuple[dict, str | None]:
    """The S3 attributes a PUT carries (from the S3 front end): ``X-Aisync-Attrs`` (JSON:
    type, meta, headers; see :func:`_stored_attrs`) and ``X-Aisync-Md5`` (``want``: compute the
    MD5 ETag; hex: also check the content against it). Returns (attrs, md5 or None)."""
    raw = request.headers.get("X-Aisync-Attrs")
    attrs = _stored_attrs(json_document(raw, "X-Aisync-Attrs")) if raw else {}
    md5 = request.headers.get("X-Aisync-Md5")
    if md5 is not None:
        md5 = "" if md5 == "want" else md5.lower()
        if md5 and (len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5)):
            raise InvalidArgument("X-Aisync-Md5 must be 'want' or 32 hex digits")
    return attrs, md5


def source_headers(version) -> dict[str, str]:
    """Headers of an object read from its source (cold GET or HEAD not cached yet)."""
    headers = {"Accept-Ranges": "bytes", "X-Aisync-Cache": "miss"}
    if version.etag:
        headers["ETag"] = f'"{version.etag}"'
    if version.last_modified:
        headers["Last-Modified"] = http_date(int(version.last_modified))
    if version.version_id:
        headers["X-Aisync-Source-Version"] = str(version.version_id)
    return headers


_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
#: Positions of more digits than this are past the end of any object: they are compared, never
#: converted (an int() of 4,301 digits or more raises; this bound keeps every one cheap).
MAX_POSITION_DIGITS = 20
BEYOND_ANY_SIZE = 10 ** MAX_POSITION_DIGITS


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return BEYOND_ANY_SIZE if len(digits) > MAX_POSITION_DIGITS else int(digits)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(offset, length)`` for a single-range ``Range`` header, or None for the whole object.

    Follows RFC 9110: ``A-B``, ``A-`` and ``-N`` (ASCII digits); an end past the size is
    clamped; a start at or past the size is unsatisfiable (416); a suffix longer than the
    object is the whole object. A position of any length is read as a number: one of more
    than :data:`MAX_POSITION_DIGITS` digits is past the end (a start: 416; an end or suffix:
    clamped), exactly as its value would be. Multi-range requests are answered with the whole
    object, which the RFC allows.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header.strip().replace(" ", ""))
    if not match:
        if header.strip().startswith("bytes=") and "," in header:
            return None
        raise InvalidRange(f"malformed Range header {header[:100]!r}")
    start_s, end_s = match.groups()
    if start_s == "" and end_s == "":
        raise InvalidRange(f"malformed Range header {header[:100]!r}")
    if start_s == "":
        suffix = _position(end_s)
        if suffix == 0:
            raise InvalidRange("a zero-length suffix range is unsatisfiable", size=size)
        start = max(0, size - suffix)
        return start, size - start
    start = _position(start_s)
    last = None if end_s == "" else _position(end_s)
    if start >= size or (last is not None and last < start):
        raise InvalidRange(f"range {header[:100]!r} is not satisfiable for {size} bytes",
                           size=size)
    end = size - 1 if last is None else min(last, size - 1)
    return start, end - start + 1


def content_range(offset: int, length: int, size: int) -> str:
    return f"bytes {offset}-{offset + length - 1}/{size}"


def owner_location(request: web.BaseRequest, cluster_map, ref: BucketRef, name: str,
                   self_id: str) -> str | None:
    """Where this request belongs when node ``self_id`` does not own the object, else None."""
    if cluster_map is None:
        return None
    owner = cluster_map.owner(ref, name)
    return None if owner.id == self_id else f"{owner.url}{request.raw_path}"


def misdirected_put(request: web.BaseRequest, cluster_map, bucket_map, self_id: str) -> web.Response | None:
    """For ``Expect: 100-continue``: a 307 to the owner when this target does not own the
    object (so the body never comes here), else None (the body may flow)."""
    if bucket_map is None:
        return None
    ref = bucket_ref(request)
    if bucket_map.get(ref) is None:
        return None  # the handler answers BucketNotFound
    location = owner_location(request, cluster_map, ref, object_name(request), self_id)
    return None if location is None else web.Response(status=307,
                                                      headers={"Location": location})
