"""What the SigV4 tests share: a fixed clock for botocore's signers, requests as the server
sees them (:class:`Wire`), signing helpers, and an aws-chunked encoder written independently of
``aisync.s3.sigv4`` (also used by the S3 front-end tests)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict

from aisync.s3.sigv4 import STREAMING_SIGNED, AuthResult, S3AuthError, parse_request, verify

AK, SK = "AKIAAISYNCTEST0001", "s3cr3t/with+slash=and~tilde"
REGION = "us-east-1"
HOST = "127.0.0.1:51080"
T0 = datetime(2024, 3, 9, 12, 30, 15, tzinfo=UTC)
EMPTY = hashlib.sha256(b"").hexdigest()


def pin_botocore_clock(monkeypatch) -> None:
    """botocore's signers sign at T0 (its clock function is replaced for the test)."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda remove_tzinfo=True: T0.replace(tzinfo=None))


@dataclass
class Wire:
    """A request as the server sees it: method, raw path, raw query, headers, body."""

    method: str
    path: str
    query: str
    headers: CIMultiDict
    body: bytes = b""

    def check(self, now=T0, secret=SK, **kw) -> AuthResult:
        parsed = parse_request(self.method, self.path, self.query, self.headers)
        assert parsed is not None
        return verify(parsed, secret, self.method, self.path, self.query, self.headers, now, **kw)


def sign(method, path, query="", headers=None, body=b"", *, presign=False, expires=3600,
         params=None, signer=S3SigV4Auth, context=None) -> Wire:
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    req = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body,
                     params=params or {})
    req.context.update(context or {})
    creds = Credentials(AK, SK)
    if presign:
        S3SigV4QueryAuth(creds, "s3", REGION, expires=expires).add_auth(req)
    else:
        signer(creds, "s3", REGION).add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    wire_headers = CIMultiDict(prepared.headers.items())
    wire_headers.setdefault("Host", HOST)  # what the HTTP client puts on the wire
    body = prepared.body or b""
    return Wire(prepared.method, parts.path, parts.query, wire_headers,
                body.encode() if isinstance(body, str) else body)


def key_path(bucket: str, key: str) -> str:
    return f"/{bucket}/" + quote(key, safe="/~")  # how botocore puts a key in the URL


def code_of(fn, *args, **kw) -> str:
    with pytest.raises(S3AuthError) as exc:
        fn(*args, **kw)
    return exc.value.code


def _hmac(key: bytes, msg: str) -> hmac.HMAC:
    return hmac.new(key, msg.encode(), hashlib.sha256)


def encode_chunked(payload: bytes, chunk: int, *, amz_date="", scope="", seed="", secret=SK,
                   signed=True, trailers: dict[str, str] | None = None) -> bytes:
    """Independent aws-chunked encoder: chunk signatures chained from ``seed`` and, when
    ``signed`` and ``trailers`` are given, a trailer signature over ``name:value\\n`` lines."""
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = _hmac(key, part).digest()
    out, prev = bytearray(), seed
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for data in pieces:
        if signed:
            prev = _hmac(key, "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY,
                                         hashlib.sha256(data).hexdigest()])).hexdigest()
            out += b"%x;chunk-signature=%s\r\n" % (len(data), prev.encode())
        else:
            out += b"%x\r\n" % len(data)
        if data or trailers is None:
            out += data + b"\r\n"
    if trailers is not None:
        lines = sorted(trailers.items())
        for name, value in lines:
            out += f"{name}:{value}\r\n".encode()
        if signed:
            digest = hashlib.sha256("".join(f"{n}:{v}\n" for n, v in lines).encode()).hexdigest()
            sig = _hmac(key, "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev,
                                        digest])).hexdigest()
            out += f"x-amz-trailer-signature:{sig}\r\n".encode()
        out += b"\r\n"
    return bytes(out)


class FixedPayload(S3SigV4Auth):
    """botocore's S3 signer, declaring a given x-amz-content-sha256 (e.g. a STREAMING marker)."""

    marker = STREAMING_SIGNED

    def payload(self, request):
        return self.marker

    @classmethod
    def with_payload(cls, marker: str) -> type[FixedPayload]:
        return type("Signer", (cls,), {"marker": marker})
