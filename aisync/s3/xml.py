"""S3's XML: response documents, the error table, and safe parsing of request bodies.

Every error an S3 client sees comes from :data:`ERRORS` (S3 code → HTTP status) through
:func:`error_response`; :func:`s3_code` translates aisync's typed errors into those codes in
one place. Documents are built with :mod:`xml.etree.ElementTree` (escaping included) in the
S3 namespace (building is safe: only parsing untrusted bytes is not); request bodies (Delete,
CompleteMultipartUpload, CreateBucketConfiguration) are parsed by :func:`parse_xml`, with
defusedxml and a size cap.
"""

from __future__ import annotations

import itertools
import time
import uuid
from xml.etree import ElementTree as ET

from aiohttp import web
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from aisync.util.errors import AisyncError

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BODY = 2 << 20
#: The owner every listing and ACL names: access is by key, not by account.
OWNER = [("ID", "aisync"), ("DisplayName", "aisync")]

#: S3 error code → HTTP status. The only place statuses of S3 errors are decided.
ERRORS: dict[str, int] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchBucketPolicy": 404,
    "NoSuchCORSConfiguration": 404,
    "NoSuchLifecycleConfiguration": 404,
    "NoSuchTagSet": 404,
    "NoSuchWebsiteConfiguration": 404,
    "ServerSideEncryptionConfigurationNotFoundError": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NotImplemented": 501,
    "NotModified": 304,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
}

#: aisync error code → S3 error code, where they differ.
_FROM_AISYNC = {
    "ObjectNotFound": "NoSuchKey",
    "BucketNotFound": "NoSuchBucket",
    "BucketAlreadyExists": "BucketAlreadyOwnedByYou",
    "InvalidObjectName": "KeyTooLongError",
    "PayloadTooLarge": "EntityTooLarge",
    "NodeUnavailable": "ServiceUnavailable",
    "NoActiveTargets": "ServiceUnavailable",
    "BackendUnavailable": "ServiceUnavailable",
    "Throttled": "SlowDown",
    "BackendError": "InternalError",
    "ObjectCorrupted": "InternalError",
    "NotFound": "NoSuchKey",
    "UploadNotFound": "NoSuchUpload",
}


class S3Error(Exception):
    """An S3 error answer: ``code`` must be a key of :data:`ERRORS`."""

    def __init__(self, code: str, message: str, **fields: str) -> None:
        super().__init__(message)
        assert code in ERRORS, code
        self.code, self.message, self.fields = code, message, fields

    @property
    def status(self) -> int:
        return ERRORS[self.code]


def s3_code(exc: AisyncError) -> str:
    code = _FROM_AISYNC.get(exc.code, exc.code)
    if code == "InvalidObjectName" or (code not in ERRORS and exc.status == 400):
        return "InvalidArgument"
    if code not in ERRORS:
        return {403: "AccessDenied", 404: "NoSuchKey", 409: "InvalidRequest",
                412: "PreconditionFailed", 416: "InvalidRange", 501: "NotImplemented",
                503: "ServiceUnavailable"}.get(exc.status, "InternalError")
    return code


_PROCESS_TAG = uuid.uuid4().hex[:6].upper()
REQUEST_ID: web.RequestKey[str] = web.RequestKey("s3_request_id", str)
_REQUEST_NUMBERS = itertools.count(1)


def request_id(request: web.BaseRequest) -> str:
    """Unique per request: a random tag of this process and a counter (cheaper than uuid4)."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        rid = request[REQUEST_ID] = f"{_PROCESS_TAG}{next(_REQUEST_NUMBERS):010X}"
    return rid


def common_headers(request: web.BaseRequest) -> dict[str, str]:
    return {"x-amz-request-id": request_id(request), "Server": "aisync"}


def document(root: str, children: list | None = None) -> ET.Element:
    """``document("ListBucketResult", [("Name", "b"), ("Contents", [...])])``: nested
    ``(tag, text | list)`` pairs; ``None`` values are skipped."""
    element = ET.Element(root, xmlns=NS)
    _fill(element, children or [])
    return element


def _fill(parent: ET.Element, children: list) -> None:
    for tag, value in children:
        if value is None:
            continue
        child = ET.SubElement(parent, tag)
        if isinstance(value, list):
            _fill(child, value)
        elif isinstance(value, bool):
            child.text = "true" if value else "false"
        else:
            child.text = str(value)


def xml_response(request: web.BaseRequest, element: ET.Element, status: int = 200,
                 headers: dict[str, str] | None = None) -> web.Response:
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")
    return web.Response(status=status, body=body, content_type="application/xml",
                        headers={**common_headers(request), **(headers or {})})


def error_response(request: web.BaseRequest, code: str, message: str,
                   **fields: str) -> web.Response:
    status = ERRORS.get(code, 500)
    headers = common_headers(request)
    if request.method == "HEAD" or status == 304:  # no body, as S3 does
        return web.Response(status=status, headers=headers)
    resource = request.raw_path.partition("?")[0]
    children: list = [("Code", code), ("Message", message)]
    children += list(fields.items())
    children += [("Resource", resource), ("RequestId", request_id(request))]
    element = ET.Element("Error")
    _fill(element, children)
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")
    return web.Response(status=status, body=body, content_type="application/xml",
                        headers=headers)


async def read_xml(request: web.BaseRequest) -> ET.Element:
    """The request body as XML (namespace stripped from tags); MalformedXML otherwise."""
    if request.content_length is not None and request.content_length > MAX_XML_BODY:
        raise S3Error("MalformedXML", "the XML body is too large")
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > MAX_XML_BODY:
            raise S3Error("MalformedXML", "the XML body is too large")
    return parse_xml(bytes(body))


def parse_xml(body: bytes) -> ET.Element:
    """A request body as XML, parsed by defusedxml (namespace stripped from tags).

    Any DTD is refused, whatever the document's encoding (UTF-16 included), so no entity is
    ever expanded or fetched; so are bodies that are not well-formed or name an encoding the
    parser cannot read. Every refusal is MalformedXML (400), as S3 answers.
    """
    try:
        root = defused_fromstring(body, forbid_dtd=True)
    except DefusedXmlException:
        raise S3Error("MalformedXML", "DTDs and entities are not accepted") from None
    except (ET.ParseError, ValueError, LookupError) as exc:  # LookupError: unknown encoding
        raise S3Error("MalformedXML", f"the XML you provided was not well-formed: {exc}") \
            from None
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.partition("}")[2]
    return root


def iso_time(seconds: float) -> str:
    """S3's timestamp format in XML: 2026-11-28T18:25:02.000Z."""
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"
