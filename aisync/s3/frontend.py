"""The S3 front end of a proxy: addressing, authentication, dispatch, errors.

Every request outside ``/v1/`` on a proxy's port (and every request on the dedicated S3 port)
comes here. The front end

1. finds the bucket and key: path-style ``/bucket/key`` always, virtual-hosted-style
   (``Host: bucket.<s3.domain>``) when a domain is configured;
2. authenticates: SigV4 in the Authorization header or a presigned query, signed for
   ``s3.region`` and verified against the access keys of the primary's catalog
   (:mod:`aisync.proxy.keys`); unsigned requests only when ``s3.anonymous`` is on, and then only
   reads of buckets with ``anonymous_read``;
3. dispatches on method and sub-resource to :mod:`.objects`, :mod:`.buckets` or
   :mod:`.multipart`, which serve S3 clients **without redirects**: object bytes are streamed
   between the client and the owning target through this proxy;
4. turns every failure into S3 XML (:mod:`.xml`): typed aisync errors through one table, never
   a 500 for bad input.

An S3 bucket name resolves to the ``ais://`` bucket of that name, else to the one cached bucket
of that name, trying providers in the order of :data:`aisync.s3.context.PROVIDER_ORDER`. The
front end sees its proxy only through :class:`aisync.s3.ports.ProxyPort`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import unquote

from aiohttp import web

from aisync.s3 import sigv4
from aisync.s3.buckets import BucketOps
from aisync.s3.context import ADMITTED, S3Context, S3Request
from aisync.s3.multipart import MultipartOps
from aisync.s3.objects import ObjectOps
from aisync.s3.ports import ProxyPort
from aisync.s3.xml import ERRORS, S3Error, error_response, s3_code
from aisync.util.errors import AisyncError

log = logging.getLogger("aisync.s3")

READ_ONLY = ("GET", "HEAD")
#: Bucket sub-resources aisync does not keep: reads answer S3's "not configured" error.
UNCONFIGURED = {"policy": "NoSuchBucketPolicy", "cors": "NoSuchCORSConfiguration",
                "lifecycle": "NoSuchLifecycleConfiguration", "tagging": "NoSuchTagSet",
                "website": "NoSuchWebsiteConfiguration",
                "encryption": "ServerSideEncryptionConfigurationNotFoundError"}


class S3Frontend:
    def __init__(self, proxy: ProxyPort) -> None:
        self.context = context = S3Context(proxy)
        self.proxy = proxy
        self.config = context.config
        self.resolve = context.resolve
        self.local_reads = context.local_reads
        self.objects = ObjectOps(context)
        self.buckets = BucketOps(context)
        self.multipart = MultipartOps(context, self.objects)

    # -- entry points --
    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            s3 = request.get(ADMITTED)
            if s3 is None:
                s3 = request[ADMITTED] = await self._admit(request)
            return await self._dispatch(s3)
        except Exception as exc:
            return self._error(request, exc)

    async def expect(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """``Expect: 100-continue``: authenticate and check the bucket before the body moves;
        a refusal is the final answer (the body is never read, so the router closes the
        connection after it)."""
        try:
            request[ADMITTED] = await self._admit(request)
        except Exception as exc:
            return self._error(request, exc)
        return None

    @staticmethod
    def _error(request: web.BaseRequest, exc: Exception) -> web.Response:
        """The one place a failure becomes an S3 answer."""
        if isinstance(exc, S3Error):
            return error_response(request, exc.code, exc.message, **exc.fields)
        if isinstance(exc, sigv4.S3AuthError):
            code = exc.code if exc.code in ERRORS else \
                ("AccessDenied" if exc.status == 403 else "InvalidRequest")
            return error_response(request, code, exc.message, **exc.fields)
        if isinstance(exc, AisyncError):
            return error_response(request, s3_code(exc), exc.message)
        if isinstance(exc, ConnectionError | TimeoutError):  # reset, broken pipe, ...
            log.info("S3 client went away: %s %s (%s)", request.method, request.path, exc)
            if request.transport is not None:
                request.transport.close()
            return error_response(request, "IncompleteBody", "the client went away")
        log.error("unhandled error in S3 %s %s", request.method, request.path, exc_info=exc)
        return error_response(request, "InternalError", "internal error; see the node log")

    # -- addressing and authentication --
    def _address(self, request: web.BaseRequest) -> tuple[str, str]:
        raw_path = request.raw_path.partition("?")[0]
        domain = self.config.domain
        host = request.host.rpartition(":")[0] if ":" in request.host else request.host
        if domain and host.endswith("." + domain):
            bucket, key = host[: -len(domain) - 1], raw_path[1:]
        else:
            bucket, _, key = raw_path[1:].partition("/")
            bucket = unquote(bucket)
        return bucket, unquote(key)

    async def _admit(self, request: web.BaseRequest) -> S3Request:
        bucket, key = self._address(request)
        auth = await self._authenticate(request)
        s3 = S3Request(request, bucket, key, auth)
        if auth is None:
            self._check_anonymous(s3)
        return s3

    async def _authenticate(self, request: web.BaseRequest) -> sigv4.AuthResult | None:
        raw_path, _, raw_query = request.raw_path.partition("?")
        parsed = sigv4.parse_request(request.method, raw_path, raw_query, request.headers)
        if parsed is None:
            if not self.config.anonymous:
                raise S3Error("AccessDenied", "Access Denied: anonymous requests are not "
                              "accepted here; sign them with an aisync access key (SigV4)")
            return None
        sigv4.check_region(parsed, self.config.region)
        secret = await self.proxy.keys.secret_for(parsed.access_key)
        if secret is None:
            raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not "
                          "exist in our records.")
        return sigv4.verify(parsed, secret, request.method, raw_path, raw_query,
                            request.headers, datetime.now(UTC),
                            int(self.config.max_clock_skew))

    def _check_anonymous(self, s3: S3Request) -> None:
        if s3.request.method not in READ_ONLY or not s3.bucket:
            raise S3Error("AccessDenied", "Access Denied: anonymous requests may only read")
        allowed = {"list-type", "prefix", "delimiter", "max-keys", "continuation-token",
                   "start-after", "marker", "encoding-type", "fetch-owner", "location",
                   "partNumber", "versionId"} | {k for k in s3.query if k.startswith("response-")}
        if set(s3.query) - allowed:
            raise S3Error("AccessDenied", "Access Denied: anonymous requests may only read")
        _, props = self.resolve(s3.bucket)
        if not props.anonymous_read:
            raise S3Error("AccessDenied", "Access Denied: the bucket does not allow anonymous "
                          "reads")

    # -- dispatch --
    async def _dispatch(self, s3: S3Request) -> web.StreamResponse:
        method, query = s3.request.method, s3.query
        if not s3.bucket:
            if method == "GET":
                return await self.buckets.list_buckets(s3)
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on the service")
        if not s3.key:
            return await self._bucket_op(s3, method, query)
        if "uploadId" in query:
            return await self.multipart.dispatch(s3)
        if method in READ_ONLY:
            if "acl" in query:
                return await self.objects.get_acl(s3)
            self._unsupported(query, ("tagging", "attributes", "torrent", "retention",
                                      "legal-hold"))
            return await self.objects.get(s3)
        if method == "PUT":
            self._unsupported(query, ("acl", "tagging", "retention", "legal-hold"))
            if "x-amz-copy-source" in s3.request.headers:
                return await self.objects.copy(s3)
            return await self.objects.put(s3)
        if method == "DELETE":
            self._unsupported(query, ("tagging",))
            return await self.objects.delete(s3)
        if method == "POST" and "uploads" in query:
            return await self.multipart.create(s3)
        raise S3Error("NotImplemented", f"{method} with these parameters is not implemented")

    async def _bucket_op(self, s3: S3Request, method: str, query) -> web.StreamResponse:
        if method == "GET":
            if "location" in query:
                return await self.buckets.location(s3)
            if "versioning" in query:
                return await self.buckets.versioning(s3)
            if "uploads" in query:
                return await self.multipart.list_uploads(s3)
            if "acl" in query:
                return await self.objects.get_acl(s3)
            for name, code in UNCONFIGURED.items():
                if name in query:  # what S3 answers for a bucket without that configuration
                    self.resolve(s3.bucket)
                    raise S3Error(code, f"The bucket has no {name} configuration",
                                  BucketName=s3.bucket)
            if "requestPayment" in query:
                return await self.buckets.request_payment(s3)
            self._unsupported(query, ("versions", "logging", "notification",
                                      "replication", "object-lock", "policyStatus",
                                      "ownershipControls", "publicAccessBlock",
                                      "accelerate", "requestPayment", "analytics",
                                      "inventory", "metrics", "intelligent-tiering"))
            return await self.buckets.list_objects(s3)
        if method == "HEAD":
            return await self.buckets.head(s3)
        if method == "PUT":
            if query:
                raise S3Error("NotImplemented", f"PUT ?{'&'.join(query)} on a bucket is not "
                              "implemented")
            return await self.buckets.create(s3)
        if method == "DELETE":
            if query:
                raise S3Error("NotImplemented", f"DELETE ?{'&'.join(query)} on a bucket is not "
                              "implemented")
            return await self.buckets.delete(s3)
        if method == "POST" and "delete" in query:
            return await self.objects.delete_many(s3)
        raise S3Error("NotImplemented", f"{method} on a bucket is not implemented")

    @staticmethod
    def _unsupported(query, names: tuple[str, ...]) -> None:
        for name in names:
            if name in query:
                raise S3Error("NotImplemented", f"the {name} sub-resource is not implemented")
