"""A local HTTP server speaking the part of the OCI Object Storage REST API (20160918) that
aisync's ``oci`` provider calls, for tests.

No usable OCI Object Storage emulator can be installed here (the one public toy serves stale bytes
after an overwrite), so this small aiohttp app was written from OCI's public API reference, with
OCI's semantics:

* ``GET /n`` (namespace); ``POST /n/{ns}/b`` (create bucket, 409 ``BucketAlreadyExists``),
  ``GET|HEAD /n/{ns}/b/{bucket}``; a wrong namespace is 404 ``NamespaceNotFound``.
* ``PUT|GET|HEAD|DELETE /n/{ns}/b/{bucket}/o/{object}``: object names are URL-encoded (``/``
  arrives as ``%2F``, a raw ``/`` is accepted too). Every write gets a new ``etag``; a bucket
  created with ``versioning: Enabled`` also returns a new ``version-id`` per write. Responses carry
  ``content-length``, ``last-modified``, ``opc-content-md5`` (base64; multipart objects send
  ``opc-multipart-md5`` = ``<base64>-<parts>`` instead) and ``opc-request-id``. PUT needs a
  ``Content-Length`` (411) and verifies ``Content-MD5`` (400 ``UnmatchedContentMD5``).
* Conditional requests: ``if-match`` on GET/HEAD/PUT/DELETE (412 ``IfMatchFailed``, also when the
  object does not exist on PUT), ``if-none-match`` (GET/HEAD: 304; PUT: only ``*``, 412
  ``IfNoneMatchFailed``). A single ``Range`` on GET is 206 with ``content-range``; a range
  starting past the end is 416 ``InvalidRange``; a malformed one is ignored (HTTP semantics).
* ``GET /n/{ns}/b/{bucket}/o`` lists in UTF-8 byte order with ``prefix``, ``start`` (inclusive),
  ``startAfter``, ``end``, ``limit`` (1..1000) and ``fields`` (``name`` always; ``size``, ``etag``,
  ``md5``, ``timeCreated``, ``timeModified`` on request); ``nextStartWith`` names the first object
  of the next page. ``delimiter=/`` folds deeper names into ``prefixes``.
* Multipart uploads: ``POST /n/{ns}/b/{bucket}/u`` (create), ``PUT .../u/{object}?uploadId=&
  uploadPartNum=`` (part; ``etag`` and ``opc-content-md5`` per part), ``POST .../u/{object}?
  uploadId=`` (commit the listed parts in part-number order; each etag must match, else 400
  ``InvalidUploadPart``), ``DELETE .../u/{object}?uploadId=`` (abort); unknown ids are 404
  ``UploadNotFound``. No minimum part size is enforced.
* Errors are JSON ``{"code", "message"}`` (no body for HEAD, as on the wire): 404
  ``ObjectNotFound`` / ``BucketNotFound``, 412, 416, 409, 401 ``NotAuthenticated``.

Authentication: every request must carry an ``authorization`` header (the SDK signs requests with
HTTP Signatures), else 401 ``NotAuthenticated``; the signature itself is NOT verified.

Not implemented (501 ``NotImplemented``): version-addressed reads (``versionId``), SSE-C,
bucket deletion and everything else the provider does not call. Objects live in memory; a GET
streams the version that was current when it started, never a mix.

Test hooks: :meth:`OciTestServer.inject` answers the next requests with a given error, and
``request_count`` / ``uploads`` let tests check what the client did.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import unquote

from aiohttp import web

MAX_LIST = 1000
LIST_FIELDS = {"name", "size", "etag", "md5", "timeCreated", "timeModified"}
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9._-]{1,256}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class OciError(Exception):
    def __init__(self, status: int, code: str, message: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message or code)
        self.status, self.code, self.message = status, code, message or code
        self.headers = headers or {}


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str
    md5: str | None               # base64 MD5 of the content (single-part uploads)
    multipart_md5: str | None     # "<base64>-<parts>" (multipart uploads)
    version_id: str | None
    created: float
    content_type: str


@dataclass
class Part:
    data: bytes
    etag: str
    md5: bytes


@dataclass
class Upload:
    upload_id: str
    name: str
    created: float
    content_type: str
    parts: dict[int, Part] = field(default_factory=dict)


@dataclass
class Bucket:
    name: str
    compartment: str
    versioning: bool
    created: float
    etag: str = field(default_factory=lambda: str(uuid.uuid4()))
    objects: dict[str, StoredObject] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _http_date(t: float) -> str:
    return formatdate(t, usegmt=True)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


class OciTestServer:
    """The app in a background thread with its own event loop, on a free port of 127.0.0.1."""

    def __init__(self, namespace: str = "aisynctest") -> None:
        self.namespace = namespace
        self.buckets: dict[str, Bucket] = {}
        self.request_count = 0
        self._faults: list[tuple] = []
        self._lock = threading.Lock()  # guards _faults and request_count (touched by tests)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle --
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OciTestServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            app = web.Application(middlewares=[self._middleware], client_max_size=1 << 40)
            app.router.add_route("*", "/{tail:.*}", self._dispatch)
            app.on_response_prepare.append(self._stamp)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="oci-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the OCI test server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> OciTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test hooks --
    def inject(self, status: int, code: str, times: int = 1, *, method: str | None = None,
               path: str | None = None, message: str = "") -> None:
        """Answer the next ``times`` requests (of that method, whose raw path contains
        ``path``, when given) with this error instead of serving them."""
        with self._lock:
            self._faults += [(method, path, status, code, message or f"injected {code}")] * times

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def uploads(self, bucket: str) -> list[str]:
        return list(self.buckets[bucket].uploads)

    def seed(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Store objects directly (on the server's loop), as many single-part PUTs would."""
        async def store() -> None:
            for name, data in objects.items():
                self._store(self._bucket(bucket), name, data, "",
                            _b64(hashlib.md5(data).digest()), None)

        asyncio.run_coroutine_threadsafe(store(), self._loop).result(30)

    # -- plumbing --
    @staticmethod
    async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
        """Every response, streamed ones included, names its request."""
        response.headers["opc-request-id"] = uuid.uuid4().hex.upper()
        if "opc-client-request-id" in request.headers:
            response.headers["opc-client-request-id"] = request.headers["opc-client-request-id"]

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        fault = None
        with self._lock:
            self.request_count += 1
            for i, (method, path, *error) in enumerate(self._faults):
                if method in (None, request.method) and (path is None or path in request.raw_path):
                    fault = error
                    del self._faults[i]
                    break
        try:
            if "authorization" not in request.headers:
                raise OciError(401, "NotAuthenticated", "The required information to complete "
                               "authentication was not provided.")
            if fault is not None:
                await request.read()
                raise OciError(*fault)
            response = await handler(request)
        except OciError as err:
            response = web.json_response({"code": err.code, "message": err.message},
                                         status=err.status, headers=err.headers)
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0]
        seg = raw.split("/")[1:]
        method = request.method
        if seg and seg[-1] == "" and len(seg) <= 4:  # "/n/" and "/n/{ns}/b/"
            seg = seg[:-1]
        if seg == ["n"] and method == "GET":
            return web.json_response(self.namespace)
        if len(seg) < 3 or seg[0] != "n" or seg[2] != "b":
            raise OciError(404, "NotFound", f"no such resource: {raw}")
        if unquote(seg[1]) != self.namespace:
            raise OciError(404, "NamespaceNotFound",
                           f"You do not have authorization to perform this request, or the "
                           f"requested resource could not be found ({unquote(seg[1])}).")
        if len(seg) == 3 and method == "POST":
            return await self._create_bucket(request)
        if len(seg) < 4:
            raise OciError(501, "NotImplemented", f"{method} {raw}")
        bucket = self._bucket(unquote(seg[3]))
        if len(seg) == 4 and method in ("GET", "HEAD"):
            return web.json_response(self._bucket_json(bucket), headers={"etag": bucket.etag})
        kind = seg[4] if len(seg) > 4 else ""
        name = unquote("/".join(seg[5:]))
        if kind == "o" and len(seg) == 5 and method == "GET":
            return self._list(bucket, request)
        if kind == "u" and len(seg) == 5 and method == "POST":
            return await self._create_upload(bucket, request)
        if not name:
            raise OciError(501, "NotImplemented", f"{method} {raw}")
        if "versionId" in request.query:
            raise OciError(501, "NotImplemented", "versionId is not supported by this server")
        handlers = {("o", "PUT"): self._put, ("o", "GET"): self._get, ("o", "HEAD"): self._get,
                    ("o", "DELETE"): self._delete, ("u", "PUT"): self._upload_part,
                    ("u", "POST"): self._commit, ("u", "DELETE"): self._abort}
        handler = handlers.get((kind, method))
        if handler is None:
            raise OciError(501, "NotImplemented", f"{method} {raw}")
        return await handler(bucket, name, request)

    def _bucket(self, name: str) -> Bucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            raise OciError(404, "BucketNotFound", f"Either the bucket named '{name}' does not "
                           f"exist in the namespace '{self.namespace}' or you are not authorized "
                           "to access it")
        return bucket

    @staticmethod
    def _object(bucket: Bucket, name: str) -> StoredObject:
        obj = bucket.objects.get(name)
        if obj is None:
            raise OciError(404, "ObjectNotFound", f"The object '{name}' was not found in the "
                           f"bucket '{bucket.name}'")
        return obj

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        if request.content_length is None:
            raise OciError(411, "ContentLengthRequired", "Content-Length is required")
        buf = bytearray()
        async for chunk in request.content.iter_chunked(1 << 20):
            buf += chunk
        if len(buf) != request.content_length:
            raise OciError(400, "InvalidContentLength", "the body is shorter than declared")
        declared = request.headers.get("content-md5")
        if declared is not None:
            actual = _b64(hashlib.md5(buf).digest())
            if declared != actual:
                raise OciError(400, "UnmatchedContentMD5", f"The computed MD5 of the request "
                               f"body ({actual}) does not match the Content-MD5 header "
                               f"({declared})")
        return bytes(buf)

    @staticmethod
    async def _json_body(request: web.Request) -> dict:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            raise OciError(400, "InvalidJSON", str(exc)) from None
        if not isinstance(body, dict):
            raise OciError(400, "InvalidJSON", "a JSON object was expected")
        return body

    @staticmethod
    def _check_write(request: web.Request, current: StoredObject | None) -> None:
        """``if-match`` / ``if-none-match`` of a write, against the object it would replace."""
        if_match = request.headers.get("if-match")
        if if_match is not None and (current is None or not _etag_matches(if_match, current.etag)):
            raise OciError(412, "IfMatchFailed", "The If-Match header does not match the "
                           "current ETag of the object")
        if_none = request.headers.get("if-none-match")
        if if_none is not None:
            if if_none.strip() != "*":
                raise OciError(400, "InvalidConditionalHeaders", "if-none-match must be '*'")
            if current is not None:
                raise OciError(412, "IfNoneMatchFailed", "The object already exists")

    def _store(self, bucket: Bucket, name: str, data: bytes, content_type: str,
               md5: str | None, multipart_md5: str | None) -> StoredObject:
        obj = StoredObject(data=data, etag=str(uuid.uuid4()), md5=md5,
                           multipart_md5=multipart_md5,
                           version_id=str(uuid.uuid4()) if bucket.versioning else None,
                           created=time.time(),
                           content_type=content_type or "application/octet-stream")
        bucket.objects[name] = obj
        return obj

    @staticmethod
    def _object_headers(obj: StoredObject) -> dict[str, str]:
        headers = {"etag": obj.etag, "last-modified": _http_date(obj.created)}
        if obj.md5 is not None:
            headers["opc-content-md5"] = obj.md5
        if obj.multipart_md5 is not None:
            headers["opc-multipart-md5"] = obj.multipart_md5
        if obj.version_id is not None:
            headers["version-id"] = obj.version_id
        return headers

    # -- buckets --
    async def _create_bucket(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        name, compartment = body.get("name"), body.get("compartmentId")
        if not isinstance(name, str) or not _BUCKET_NAME.match(name):
            raise OciError(400, "InvalidBucketName", f"invalid bucket name {name!r}")
        if not compartment:
            raise OciError(400, "MissingCompartmentId", "compartmentId is required")
        if name in self.buckets:
            raise OciError(409, "BucketAlreadyExists", f"Either the bucket '{name}' in "
                           f"namespace '{self.namespace}' already exists or you are not "
                           "authorized to create it")
        bucket = Bucket(name=name, compartment=compartment, created=time.time(),
                        versioning=body.get("versioning") == "Enabled")
        self.buckets[name] = bucket
        return web.json_response(self._bucket_json(bucket), headers={
            "etag": bucket.etag, "location": f"/n/{self.namespace}/b/{name}"})

    def _bucket_json(self, bucket: Bucket) -> dict:
        return {"namespace": self.namespace, "name": bucket.name,
                "compartmentId": bucket.compartment, "createdBy": "ocid1.user.oc1..test",
                "timeCreated": _rfc3339(bucket.created), "etag": bucket.etag,
                "publicAccessType": "NoPublicAccess", "storageTier": "Standard",
                "versioning": "Enabled" if bucket.versioning else "Disabled",
                "objectEventsEnabled": False, "metadata": {}}

    # -- objects --
    async def _put(self, bucket: Bucket, name: str, request: web.Request) -> web.Response:
        data = await self._body(request)
        # no await between the precondition check and the store: writes are atomic
        self._check_write(request, bucket.objects.get(name))
        obj = self._store(bucket, name, data, request.headers.get("content-type", ""),
                          _b64(hashlib.md5(data).digest()), None)
        return web.Response(status=200, headers=self._object_headers(obj))

    async def _get(self, bucket: Bucket, name: str, request: web.Request) -> web.StreamResponse:
        obj = self._object(bucket, name)  # this version is served to the end, whatever happens
        headers = self._object_headers(obj)
        if_match = request.headers.get("if-match")
        if if_match is not None and not _etag_matches(if_match, obj.etag):
            raise OciError(412, "IfMatchFailed", "The If-Match header does not match the "
                           "current ETag of the object")
        if_none = request.headers.get("if-none-match")
        if if_none is not None and _etag_matches(if_none, obj.etag):
            return web.Response(status=304, headers=headers)
        size = len(obj.data)
        first, last, status = 0, size - 1, 200
        wanted = self._range(request.headers.get("range"), size)
        if wanted is not None:
            (first, last), status = wanted, 206
            headers["content-range"] = f"bytes {first}-{last}/{size}"
        headers.update({"accept-ranges": "bytes", "content-type": obj.content_type})
        if request.method == "HEAD":
            headers["content-length"] = str(size)
            return web.Response(status=200, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = last - first + 1
        await response.prepare(request)
        view = memoryview(obj.data)
        try:
            for offset in range(first, last + 1, 256 * 1024):
                await response.write(view[offset:min(offset + 256 * 1024, last + 1)])
            await response.write_eof()
        except ConnectionError:  # the client closed early (e.g. a stream closed after a chunk)
            pass
        return response

    @staticmethod
    def _range(header: str | None, size: int) -> tuple[int, int] | None:
        match = _RANGE.match(header.strip()) if header else None
        if match is None or not (match[1] or match[2]):
            return None  # no range, or one this server does not understand: the whole object
        unsatisfiable = OciError(416, "InvalidRange", f"The requested range is not "
                                 f"satisfiable (object size {size})",
                                 headers={"content-range": f"bytes */{size}"})
        if not match[1]:  # the last N bytes
            count = int(match[2])
            if count == 0 or size == 0:
                raise unsatisfiable
            return max(0, size - count), size - 1
        first = int(match[1])
        last = int(match[2]) if match[2] else size - 1
        if last < first:
            return None
        if first >= size:
            raise unsatisfiable
        return first, min(last, size - 1)

    async def _delete(self, bucket: Bucket, name: str, request: web.Request) -> web.Response:
        obj = self._object(bucket, name)
        if_match = request.headers.get("if-match")
        if if_match is not None and not _etag_matches(if_match, obj.etag):
            raise OciError(412, "IfMatchFailed", "The If-Match header does not match the "
                           "current ETag of the object")
        del bucket.objects[name]
        headers = {"last-modified": _http_date(time.time())}
        if bucket.versioning:
            headers.update({"version-id": str(uuid.uuid4()), "is-delete-marker": "true"})
        return web.Response(status=204, headers=headers)

    def _list(self, bucket: Bucket, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", MAX_LIST))
        except ValueError:
            raise OciError(400, "InvalidLimit", "limit must be an integer") from None
        if not 1 <= limit <= MAX_LIST:
            raise OciError(400, "InvalidLimit", f"limit must be between 1 and {MAX_LIST}")
        fields = set(q.get("fields", "name").split(",")) | {"name"}
        if not fields <= LIST_FIELDS:
            raise OciError(400, "InvalidObjectProperty",
                           f"unknown fields: {sorted(fields - LIST_FIELDS)}")
        delimiter = q.get("delimiter")
        if delimiter not in (None, "/"):
            raise OciError(400, "InvalidDelimiter", "only '/' is supported as a delimiter")
        prefix = q.get("prefix", "")
        start, after, end = q.get("start"), q.get("startAfter"), q.get("end")

        def key(name: str) -> bytes:
            return name.encode("utf-8", "surrogatepass")

        names = sorted((n for n in bucket.objects if n.startswith(prefix)), key=key)
        objects, prefixes, next_start = [], [], None
        for name in names:
            if start is not None and key(name) < key(start):
                continue
            if after is not None and key(name) <= key(after):
                continue
            if end is not None and key(name) >= key(end):
                break
            if delimiter and delimiter in name[len(prefix):]:
                folded = name[:name.index(delimiter, len(prefix)) + 1]
                if folded not in prefixes:
                    prefixes.append(folded)
                continue
            if len(objects) == limit:
                next_start = name
                break
            obj = bucket.objects[name]
            entry = {"name": name}
            if "size" in fields:
                entry["size"] = len(obj.data)
            if "etag" in fields:
                entry["etag"] = obj.etag
            if "md5" in fields:
                entry["md5"] = obj.md5 if obj.md5 is not None else obj.multipart_md5
            if "timeCreated" in fields:
                entry["timeCreated"] = _rfc3339(obj.created)
            if "timeModified" in fields:
                entry["timeModified"] = _rfc3339(obj.created)
            objects.append(entry)
        body: dict = {"objects": objects, "prefixes": prefixes}
        if next_start is not None:
            body["nextStartWith"] = next_start
        return web.json_response(body)

    # -- multipart uploads --
    async def _create_upload(self, bucket: Bucket, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        name = body.get("object")
        if not isinstance(name, str) or not name:
            raise OciError(400, "MissingObjectName", "object is required")
        self._check_write(request, bucket.objects.get(name))
        upload = Upload(upload_id=str(uuid.uuid4()), name=name, created=time.time(),
                        content_type=body.get("contentType") or "")
        bucket.uploads[upload.upload_id] = upload
        return web.json_response({"namespace": self.namespace, "bucket": bucket.name,
                                  "object": name, "uploadId": upload.upload_id,
                                  "timeCreated": _rfc3339(upload.created),
                                  "storageTier": "Standard"})

    @staticmethod
    def _upload(bucket: Bucket, name: str, request: web.Request) -> Upload:
        upload = bucket.uploads.get(request.query.get("uploadId", ""))
        if upload is None or upload.name != name:
            raise OciError(404, "UploadNotFound", "No such upload")
        return upload

    async def _upload_part(self, bucket: Bucket, name: str, request: web.Request) -> web.Response:
        data = await self._body(request)
        upload = self._upload(bucket, name, request)
        try:
            num = int(request.query.get("uploadPartNum", ""))
        except ValueError:
            num = 0
        if not 1 <= num <= 10000:
            raise OciError(400, "InvalidUploadPartNumber", "uploadPartNum must be 1..10000")
        digest = hashlib.md5(data).digest()
        part = Part(data=data, etag=str(uuid.uuid4()), md5=digest)
        upload.parts[num] = part
        return web.Response(status=200, headers={"etag": part.etag,
                                                 "opc-content-md5": _b64(digest)})

    async def _commit(self, bucket: Bucket, name: str, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        upload = self._upload(bucket, name, request)
        wanted = body.get("partsToCommit") or []
        if not wanted:
            raise OciError(400, "InvalidUploadPart", "no parts to commit")
        chosen: list[Part] = []
        for item in sorted(wanted, key=lambda p: int(p.get("partNum", 0))):
            part = upload.parts.get(int(item.get("partNum", 0)))
            if part is None or item.get("etag") != part.etag:
                raise OciError(400, "InvalidUploadPart",
                               f"part {item.get('partNum')} was not uploaded with that etag")
            chosen.append(part)
        self._check_write(request, bucket.objects.get(name))
        combined = hashlib.md5(b"".join(p.md5 for p in chosen)).digest()
        obj = self._store(bucket, name, b"".join(p.data for p in chosen), upload.content_type,
                          None, f"{_b64(combined)}-{len(chosen)}")
        del bucket.uploads[upload.upload_id]
        return web.Response(status=200, headers=self._object_headers(obj))

    async def _abort(self, bucket: Bucket, name: str, request: web.Request) -> web.Response:
        upload = self._upload(bucket, name, request)
        del bucket.uploads[upload.upload_id]
        return web.Response(status=204)
