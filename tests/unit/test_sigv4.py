"""SigV4 verification (aisync.api.s3.sigv4) against botocore's own signers, the AWS
documentation's published examples, and an aws-chunked encoder written here independently.

The clock is fixed: botocore signs at T0 (its clock function is pinned) and every ``verify`` gets
an explicit ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum
from multidict import CIMultiDict

from aisync.api.s3.sigv4 import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthResult,
    ChunkedDecoder,
    PayloadHasher,
    S3AuthError,
    authenticate,
    parse_request,
    verify,
)

AK, SK = "AKIAAISYNCTEST0001", "s3cr3t/with+slash=and~tilde"
REGION = "us-east-1"
HOST = "127.0.0.1:51080"
T0 = datetime(2024, 3, 9, 12, 30, 15, tzinfo=UTC)
EMPTY = hashlib.sha256(b"").hexdigest()


@pytest.fixture(autouse=True)
def _botocore_signs_at_t0(monkeypatch):
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


KEYS = ["plain.txt", "with space/and  double", "ünïcødé/日本語.bin", "a+b=c~d",
        "runs//of///slashes", "odd!*'()$@:,;&chars", "%41literal-percent"]
QUERIES = [
    "",
    "list-type=2&prefix=dir%2Fsub%20x&continuation-token=abc%3D%3D&delimiter=%2F",
    "uploads",
    "acl=&versionId=",
    "tag=b&tag=a&tag=",
    "prefix=%E6%97%A5%2B%7E",
]


# ---------------------------------------------------------------- botocore, header auth


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
@pytest.mark.parametrize("key", KEYS)
def test_botocore_header_auth_verifies(method, key):
    body = b"payload \x00\xff" if method == "PUT" else b""
    wire = sign(method, key_path("bkt", key), headers={"x-amz-meta-who": "  a   b  "}, body=body)
    result = wire.check()
    assert result.access_key == AK
    assert result.payload_hash == hashlib.sha256(body).hexdigest()
    assert not result.streaming and result.scope == f"20240309/{REGION}/s3/aws4_request"


@pytest.mark.parametrize("query", QUERIES)
def test_botocore_query_in_url_verifies(query):
    assert sign("GET", "/bkt", query).check().access_key == AK


def test_botocore_params_verify_including_repeats_spaces_and_plus():
    params = [("list-type", "2"), ("prefix", "a b+c/d=é"), ("continuation-token", "x/y+z=="),
              ("marker", ""), ("k", "2"), ("k", "1")]
    wire = sign("GET", "/bkt", params=params)
    assert "+" in wire.query  # urlencode put spaces as '+': the verifier reads them as spaces
    assert wire.check().access_key == AK


def test_query_signed_as_sent_with_literal_plus_is_accepted():
    # a client that signs the raw query (botocore does for a URL it was given) and sends '+'
    assert sign("GET", "/bkt", "prefix=a+b&x=%7e").check().access_key == AK


def test_raw_path_with_query_attached_aiohttp_style():
    wire = sign("GET", "/bkt", "list-type=2&prefix=a")
    parsed = parse_request("GET", f"{wire.path}?{wire.query}", "", wire.headers)
    assert verify(parsed, SK, "GET", f"{wire.path}?{wire.query}", "", wire.headers, T0)


def test_path_reescaped_after_signing_is_accepted_but_not_resegmented():
    wire = sign("GET", "/bkt/a%21b~c%2Fd")  # signed in the spec's encoding
    for sent in ("/bkt/a!b~c%2Fd", "/bkt/a%21b%7Ec%2fd"):  # equivalent escapes, same segments
        assert Wire("GET", sent, "", wire.headers).check().access_key == AK
    assert code_of(Wire("GET", "/bkt/a!b~c/d", "", wire.headers).check) == "SignatureDoesNotMatch"


def test_unsigned_payload_and_date_header():
    wire = sign("PUT", "/bkt/k", body=b"data",
                context={"client_config": Config(s3={"payload_signing_enabled": False})})
    assert wire.headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
    assert wire.check().payload_hash == UNSIGNED_PAYLOAD
    dated = sign("GET", "/bkt/k", headers={"Date": "placeholder"})
    assert "x-amz-date" not in dated.headers and dated.check().amz_date == "20240309T123015Z"
    unsigned_date = with_header(dated, "Authorization",
                                dated.headers["Authorization"].replace("date;", ""))
    assert code_of(parse_request, "GET", dated.path, "", unsigned_date) == "AccessDenied"


def tampered(wire: Wire, **changes) -> Wire:
    return Wire(changes.get("method", wire.method), changes.get("path", wire.path),
                changes.get("query", wire.query), changes.get("headers", wire.headers), wire.body)


def with_header(wire: Wire, name: str, value: str) -> CIMultiDict:
    headers = CIMultiDict(wire.headers)
    headers[name] = value
    return headers


@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
def test_tampering_is_refused(presign):
    wire = sign("GET", key_path("bkt", "dir/obj 1"), "list-type=2&prefix=dir%2F",
                headers={"Range": "bytes=0-9"}, presign=presign)
    assert wire.check().access_key == AK
    mismatch = "SignatureDoesNotMatch"
    assert code_of(tampered(wire, path=key_path("bkt", "dir/obj 2")).check) == mismatch
    assert code_of(tampered(wire, path="/bkt/dir//obj%201").check) == mismatch
    assert code_of(tampered(wire, query=wire.query.replace("prefix=dir%2F", "prefix=di")).check) \
        == mismatch
    assert code_of(tampered(wire, query=wire.query + "&extra=1").check) == mismatch
    assert code_of(tampered(wire, method="DELETE").check) == mismatch
    assert code_of(wire.check, secret=SK + "x") == mismatch
    if not presign:  # presigned URLs here sign host only; header auth signs Range too
        assert code_of(tampered(wire, headers=with_header(wire, "Range", "bytes=0-99")).check) \
            == mismatch
    assert code_of(tampered(wire, headers=with_header(wire, "Host", "evil:1")).check) == mismatch
    sig = "X-Amz-Signature=" if presign else "Signature="
    flipped = re.sub(sig + "([0-9a-f])", lambda m: sig + ("0" if m[1] != "0" else "1"),
                     wire.query if presign else wire.headers["Authorization"])
    if presign:
        assert code_of(tampered(wire, query=flipped).check) == mismatch
    else:
        assert code_of(tampered(wire, headers=with_header(wire, "Authorization", flipped)).check) \
            == mismatch


def test_header_auth_clock_skew():
    wire = sign("GET", "/bkt/k")
    assert wire.check(now=T0 + timedelta(seconds=900))
    assert wire.check(now=T0 - timedelta(seconds=900))
    assert code_of(wire.check, now=T0 + timedelta(seconds=901)) == "RequestTimeTooSkewed"
    assert code_of(wire.check, now=T0 - timedelta(minutes=16)) == "RequestTimeTooSkewed"
    assert wire.check(now=T0 + timedelta(hours=1), max_skew_seconds=3600)
    assert wire.check(now=T0.replace(tzinfo=None))  # naive datetimes are UTC


def test_presigned_expiry():
    wire = sign("GET", key_path("bkt", "a b"), presign=True, expires=600)
    assert wire.check(now=T0 + timedelta(seconds=600)).payload_hash == UNSIGNED_PAYLOAD
    with pytest.raises(S3AuthError, match="expired") as exc:
        wire.check(now=T0 + timedelta(seconds=601))
    assert exc.value.code == "AccessDenied" and exc.value.status == 403
    assert code_of(wire.check, now=T0 - timedelta(minutes=16)) == "AccessDenied"  # not valid yet
    week = sign("GET", "/bkt/k", presign=True, expires=604801)
    assert code_of(week.check) == "AuthorizationQueryParametersError"
    other_day = tampered(wire, query=wire.query.replace("%2F20240309%2F", "%2F20240310%2F"))
    assert code_of(other_day.check) == "AuthorizationQueryParametersError"


def test_presigned_put_refuses_unsigned_amz_headers():
    wire = sign("PUT", "/bkt/k", presign=True)
    assert wire.check()
    sneaky = with_header(wire, "x-amz-copy-source", "/other/secret")
    assert code_of(parse_request, "PUT", wire.path, wire.query, sneaky) == "AccessDenied"
    # an unsigned payload hash header is ignored, not trusted
    relaxed = tampered(wire, headers=with_header(wire, "x-amz-content-sha256", "f" * 64))
    assert relaxed.check().payload_hash == UNSIGNED_PAYLOAD


def test_structural_refusals():
    wire = sign("GET", "/bkt/k")
    auth = wire.headers["Authorization"]

    def code_with(**hdrs) -> tuple[str, int]:
        headers = CIMultiDict(wire.headers)
        for name, value in hdrs.items():
            name = name.replace("_", "-")
            if value is None:
                headers.popall(name, None)
            else:
                headers[name] = value
        with pytest.raises(S3AuthError) as exc:
            Wire("GET", wire.path, wire.query, headers).check()
        return exc.value.code, exc.value.status

    assert code_with(x_amz_meta_new="1") == ("AccessDenied", 403)  # present but not signed
    assert code_with(Authorization="AWS AKID:c2lnbmF0dXJl") == ("InvalidRequest", 400)
    assert code_with(Authorization=auth.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")) \
        == ("NotImplemented", 501)
    assert code_with(Authorization=auth.replace("/s3/", "/iam/")) \
        == ("AuthorizationHeaderMalformed", 400)
    assert code_with(Authorization=auth.replace("/20240309/", "/20240308/")) \
        == ("AuthorizationHeaderMalformed", 400)
    assert code_with(Authorization=auth.replace("SignedHeaders=host;", "SignedHeaders=")) \
        == ("AuthorizationHeaderMalformed", 400)
    assert code_with(Authorization=auth.split(", Signature=")[0]) \
        == ("AuthorizationHeaderMalformed", 400)
    assert code_with(x_amz_content_sha256="f" * 64) == ("SignatureDoesNotMatch", 403)
    assert code_with(x_amz_content_sha256="bogus") == ("InvalidArgument", 400)
    assert code_with(x_amz_date=None) == ("AccessDenied", 403)
    unsigned_sha = CIMultiDict(wire.headers)
    del unsigned_sha["x-amz-content-sha256"]
    unsigned_sha["Authorization"] = auth.replace("x-amz-content-sha256;", "")
    assert code_of(parse_request, "GET", wire.path, "", unsigned_sha) == "InvalidRequest"
    both = wire.query + "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    assert code_of(parse_request, "GET", wire.path, both, wire.headers) == "InvalidArgument"
    v2 = "AWSAccessKeyId=AKID&Expires=1&Signature=abc"
    assert code_of(parse_request, "GET", "/b/k", v2, CIMultiDict(Host=HOST)) == "InvalidRequest"
    assert code_of(wire.check, region="eu-west-1") == "AuthorizationHeaderMalformed"
    assert wire.check(region=REGION)


def test_bad_payload_hash_value():
    wire = sign("GET", "/bkt/k", headers={"x-amz-content-sha256": "not-a-hash"},
                signer=_FixedPayload.with_payload("not-a-hash"))
    assert code_of(wire.check) == "InvalidArgument"


def test_anonymous_and_authenticate():
    assert parse_request("GET", "/bkt/k", "list-type=2", CIMultiDict(Host=HOST)) is None
    assert authenticate("GET", "/bkt/k", "", CIMultiDict(Host=HOST), T0, {}.get) is None
    wire = sign("GET", "/bkt/k")
    assert authenticate(wire.method, wire.path, wire.query, wire.headers, T0,
                        {AK: SK}.get).access_key == AK
    with pytest.raises(S3AuthError) as exc:
        authenticate(wire.method, wire.path, wire.query, wire.headers, T0, {}.get)
    assert exc.value.code == "InvalidAccessKeyId" and exc.value.status == 403
    assert SK not in repr(wire.check())


# ---------------------------------------------------------------- AWS documentation examples

DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_CRED = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
DOC_NOW = datetime(2013, 5, 24, 0, 1, tzinfo=UTC)


def test_aws_doc_get_object_example():
    headers = CIMultiDict({
        "Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY, "x-amz-date": "20130524T000000Z",
        "Authorization": f"AWS4-HMAC-SHA256 Credential={DOC_CRED},SignedHeaders=host;range;"
        "x-amz-content-sha256;x-amz-date,Signature="
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"})
    assert Wire("GET", "/test.txt", "", headers).check(DOC_NOW, DOC_SECRET)
    assert code_of(Wire("GET", "/test.txt", "", headers).check, DOC_NOW, SK) \
        == "SignatureDoesNotMatch"


def test_aws_doc_presigned_example():
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" + quote(DOC_CRED, safe="") +
             "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    wire = Wire("GET", "/test.txt", query, CIMultiDict(Host="examplebucket.s3.amazonaws.com"))
    assert wire.check(DOC_NOW, DOC_SECRET).access_key == "AKIAIOSFODNN7EXAMPLE"
    assert code_of(wire.check, DOC_NOW + timedelta(days=1, seconds=1), DOC_SECRET) \
        == "AccessDenied"


DOC_CHUNK_SIGS = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                  "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                  "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]


def doc_streaming_request() -> tuple[Wire, bytes]:
    signed = ("content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
              "x-amz-decoded-content-length;x-amz-storage-class")
    headers = CIMultiDict({
        "Host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY", "x-amz-content-sha256": STREAMING_SIGNED,
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "66560",
        "Content-Length": "66824",
        "Authorization": f"AWS4-HMAC-SHA256 Credential={DOC_CRED},SignedHeaders={signed},"
        "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"})
    body = b"".join(b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), sig.encode(), data)
                    for data, sig in zip([b"a" * 65536, b"a" * 1024, b""], DOC_CHUNK_SIGS,
                                         strict=True))
    return Wire("PUT", "/examplebucket/chunkObject.txt", "", headers, body), body


def test_aws_doc_streaming_example():
    wire, body = doc_streaming_request()
    assert len(body) == 66824  # the example's Content-Length
    auth = wire.check(DOC_NOW, DOC_SECRET)
    assert auth.streaming and auth.seed_signature.startswith("4f232c43")
    decoder = ChunkedDecoder(auth, decoded_content_length=66560)
    out = b"".join(decoder.feed(body[i:i + 4097]) for i in range(0, len(body), 4097))
    assert out == b"a" * 66560 and decoder.finish() == {}
    # each published chunk signature is checked: corrupt the second one
    bad = body.replace(DOC_CHUNK_SIGS[1].encode(), DOC_CHUNK_SIGS[0].encode())
    assert code_of(ChunkedDecoder(auth).feed, bad) == "SignatureDoesNotMatch"


# ---------------------------------------------------------------- aws-chunked round trips


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


class _FixedPayload(S3SigV4Auth):
    """botocore's S3 signer, declaring a given x-amz-content-sha256 (e.g. a STREAMING marker)."""

    marker = STREAMING_SIGNED

    def payload(self, request):
        return self.marker

    @classmethod
    def with_payload(cls, marker: str) -> type[_FixedPayload]:
        return type("Signer", (cls,), {"marker": marker})


def streaming_auth(marker: str, decoded: int, trailer: str | None = None) -> AuthResult:
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded)}
    if trailer:
        headers["x-amz-trailer"] = trailer
    wire = sign("PUT", key_path("bkt", "big obj"), headers=headers,
                signer=_FixedPayload.with_payload(marker))
    auth = wire.check()
    assert auth.streaming and auth.payload_hash == marker
    return auth


def encode_for(auth: AuthResult, payload: bytes, chunk: int, **kw) -> bytes:
    return encode_chunked(payload, chunk, amz_date=auth.amz_date, scope=auth.scope,
                          seed=auth.seed_signature, **kw)


def feed_split(decoder: ChunkedDecoder, body: bytes, rng: random.Random, max_piece: int) -> bytes:
    out, i = bytearray(), 0
    while i < len(body):
        n = rng.randint(1, max_piece)
        out += decoder.feed(body[i:i + n])
        i += n
    return bytes(out)


PAYLOAD = random.Random(7).randbytes(70_001)


@pytest.mark.parametrize("max_piece", [1, 7, 8193, 100_000])
@pytest.mark.parametrize("chunk", [8192, 65536, 70_001, 99_999])
def test_signed_chunked_round_trip_any_split(chunk, max_piece):
    payload = PAYLOAD[:3000] if max_piece == 1 else PAYLOAD  # 1-byte feeds: keep it quick
    auth = streaming_auth(STREAMING_SIGNED, len(payload))
    body = encode_for(auth, payload, chunk)
    decoder = ChunkedDecoder(auth, decoded_content_length=len(payload))
    assert feed_split(decoder, body, random.Random(chunk + max_piece), max_piece) == payload
    assert decoder.finish() == {}


def test_signed_chunks_are_released_only_once_verified():
    auth = streaming_auth(STREAMING_SIGNED, len(PAYLOAD))
    body = encode_for(auth, PAYLOAD, 65536)
    decoder = ChunkedDecoder(auth)
    assert decoder.feed(body[:60_000]) == b""  # first chunk not complete: nothing released
    assert len(decoder.feed(body[60_000:65_700])) == 65536


@pytest.mark.parametrize("damage", ["payload-byte", "chunk-signature", "reordered"])
def test_signed_chunk_damage_is_detected(damage):
    auth = streaming_auth(STREAMING_SIGNED, len(PAYLOAD))
    body = bytearray(encode_for(auth, PAYLOAD, 8192))
    if damage == "payload-byte":
        body[20_000] ^= 0x01
    elif damage == "chunk-signature":
        at = body.index(b"chunk-signature=", 9000) + len(b"chunk-signature=")
        body[at:at + 1] = b"0" if body[at:at + 1] != b"0" else b"1"
    else:  # a correctly signed chunk replayed in the wrong place
        first = bytes(body[:body.index(b"\r\n") + 2 + 8192 + 2])
        body = bytearray(first + first + body[len(first):])
    with pytest.raises(S3AuthError) as exc:
        feed_split(ChunkedDecoder(auth), bytes(body), random.Random(1), 5000)
    assert exc.value.code == "SignatureDoesNotMatch" and exc.value.status == 403


def test_truncated_and_malformed_bodies():
    auth = streaming_auth(STREAMING_SIGNED, len(PAYLOAD))
    body = encode_for(auth, PAYLOAD, 8192)
    final = body.rindex(b"0;chunk-signature=")
    for cut in (len(body) - 1, final, final - 1, 100, 0):
        decoder = ChunkedDecoder(auth)
        decoder.feed(body[:cut])
        assert code_of(decoder.finish) == "IncompleteBody"
    garbage = [b"zz;chunk-signature=" + b"0" * 64 + b"\r\n",   # not hex
               b"10\r\n" + b"x" * 16 + b"\r\n",                   # signed chunk without signature
               b"9" * 5000,                                      # endless header line
               body[:8192 + 100].replace(b"\r\n", b"\n", 1)]     # bare LF
    for bad in garbage:
        assert code_of(ChunkedDecoder(auth).feed, bad) in ("InvalidArgument",
                                                          "SignatureDoesNotMatch")
    assert code_of(ChunkedDecoder(auth).feed, body + b"x") == "InvalidArgument"  # after the end
    data_end = body.index(b"\r\n") + 2 + 8192
    assert body[data_end:data_end + 2] == b"\r\n"
    no_crlf = body[:data_end] + b"XY" + body[data_end + 2:]
    assert code_of(ChunkedDecoder(auth).feed, no_crlf) == "InvalidArgument"
    short = ChunkedDecoder(auth, decoded_content_length=len(PAYLOAD) + 1)
    assert code_of(short.feed, body) == "IncompleteBody"
    long = ChunkedDecoder(auth, decoded_content_length=len(PAYLOAD) - 1)
    assert code_of(long.feed, body) == "InvalidArgument"
    capped = ChunkedDecoder(auth, max_chunk_size=4096)
    assert code_of(capped.feed, body) == "InvalidArgument"


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def crc32_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def botocore_unsigned_trailer(payload: bytes, checksum_cls, name: str) -> tuple[AuthResult, bytes]:
    """A real botocore STREAMING-UNSIGNED-PAYLOAD-TRAILER request and its aws-chunked body."""
    context = {"checksum": {"request_algorithm": {"in": "trailer", "name": name}}}
    wire = sign("PUT", "/bkt/k", headers={"Content-Encoding": "aws-chunked", "x-amz-trailer": name,
                                          "x-amz-decoded-content-length": str(len(payload))},
                context=context)
    auth = wire.check()
    assert auth.payload_hash == STREAMING_UNSIGNED_TRAILER
    wrapped = AwsChunkedWrapper(_Reader(payload), checksum_cls=checksum_cls, checksum_name=name,
                                chunk_size=10_000)
    return auth, wrapped.read()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        out = self._data[self._pos:self._pos + n]
        self._pos += len(out)
        return out


@pytest.mark.parametrize(("cls", "name"), [(Crc32Checksum, "x-amz-checksum-crc32"),
                                           (Sha1Checksum, "x-amz-checksum-sha1"),
                                           (Sha256Checksum, "x-amz-checksum-sha256")])
def test_botocore_unsigned_trailer_checksums(cls, name):
    auth, body = botocore_unsigned_trailer(PAYLOAD, cls, name)
    decoder = ChunkedDecoder(auth, name, decoded_content_length=len(PAYLOAD))
    assert feed_split(decoder, body, random.Random(3), 3001) == PAYLOAD
    assert set(decoder.finish()) == {name}
    wrong = body[:-10] + (b"A" if body[-10:-9] != b"A" else b"B") + body[-9:]
    with pytest.raises(S3AuthError) as exc:
        ChunkedDecoder(auth, name).feed(wrong)
    assert exc.value.code == "BadDigest" and exc.value.status == 400


def test_unsigned_trailer_crc32_right_and_wrong():
    auth = streaming_auth(STREAMING_UNSIGNED_TRAILER, len(PAYLOAD), "x-amz-checksum-crc32")
    good = encode_for(auth, PAYLOAD, 8192, signed=False,
                      trailers={"x-amz-checksum-crc32": crc32_b64(PAYLOAD)})
    decoder = ChunkedDecoder(auth, "x-amz-checksum-crc32")
    assert decoder.feed(good) == PAYLOAD  # unsigned chunks stream through at once
    assert decoder.finish() == {"x-amz-checksum-crc32": crc32_b64(PAYLOAD)}
    bad = encode_for(auth, PAYLOAD, 8192, signed=False,
                     trailers={"x-amz-checksum-crc32": crc32_b64(PAYLOAD + b"!")})
    assert code_of(ChunkedDecoder(auth, "x-amz-checksum-crc32").feed, bad) == "BadDigest"
    # the declared trailer never arrives / an undeclared one does
    bare = encode_for(auth, PAYLOAD, 8192, signed=False)
    missing = ChunkedDecoder(auth, "x-amz-checksum-crc32")
    missing.feed(bare)
    assert code_of(missing.finish) == "IncompleteBody"
    assert code_of(ChunkedDecoder(auth).feed, good) == "MalformedTrailerError"
    ended = bare.replace(b"0\r\n\r\n", b"0\r\n\r\n\r\n")  # a trailer section, but empty
    assert code_of(ChunkedDecoder(auth, "x-amz-checksum-crc32").feed, ended) \
        == "MalformedTrailerError"


def test_unsigned_trailer_crc32c():
    crc32c = pytest.importorskip("google_crc32c")
    value = b64(crc32c.value(PAYLOAD).to_bytes(4, "big"))
    auth = streaming_auth(STREAMING_UNSIGNED_TRAILER, len(PAYLOAD), "x-amz-checksum-crc32c")
    for trailer, ok in ((value, True), (crc32_b64(PAYLOAD), False)):
        body = encode_for(auth, PAYLOAD, 8192, signed=False,
                          trailers={"x-amz-checksum-crc32c": trailer})
        decoder = ChunkedDecoder(auth, "x-amz-checksum-crc32c")
        assert decoder.unverified == []
        if ok:
            assert decoder.feed(body) == PAYLOAD and decoder.finish()
        else:
            assert code_of(decoder.feed, body) == "BadDigest"


def test_unverifiable_checksum_is_reported_not_checked():
    auth = streaming_auth(STREAMING_UNSIGNED_TRAILER, 5, "x-amz-checksum-crc64nvme")
    body = encode_for(auth, b"hello", 8192, signed=False,
                      trailers={"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="})
    decoder = ChunkedDecoder(auth, "x-amz-checksum-crc64nvme")
    assert decoder.unverified == ["x-amz-checksum-crc64nvme"]
    assert decoder.feed(body) == b"hello"


def test_signed_trailer_round_trip_and_tampering():
    name = "x-amz-checksum-sha256"
    auth = streaming_auth(STREAMING_SIGNED_TRAILER, len(PAYLOAD), name)
    right = b64(hashlib.sha256(PAYLOAD).digest())
    body = encode_for(auth, PAYLOAD, 16384, trailers={name: right})
    decoder = ChunkedDecoder(auth, name, decoded_content_length=len(PAYLOAD))
    assert feed_split(decoder, body, random.Random(5), 999) == PAYLOAD
    assert decoder.finish() == {name: right}
    # a checksum edited in transit breaks the trailer signature
    edited = body.replace(right.encode(), b64(hashlib.sha256(b"x").digest()).encode())
    assert code_of(ChunkedDecoder(auth, name).feed, edited) == "SignatureDoesNotMatch"
    # correctly signed but wrong checksum
    wrong = encode_for(auth, PAYLOAD, 16384, trailers={name: b64(hashlib.sha256(b"x").digest())})
    assert code_of(ChunkedDecoder(auth, name).feed, wrong) == "BadDigest"
    # the signature line is mandatory
    unsigned = encode_for(auth, PAYLOAD, 16384, trailers={name: right})
    unsigned = re.sub(rb"x-amz-trailer-signature:[0-9a-f]+\r\n", b"", unsigned)
    assert code_of(ChunkedDecoder(auth, name).feed, unsigned) == "MalformedTrailerError"
    for junk in ("zz", "é" * 64, "A" * 64):
        odd = re.sub(rb"(x-amz-trailer-signature:)[0-9a-f]+", b"\\g<1>" + junk.encode(), body)
        assert code_of(ChunkedDecoder(auth, name).feed, odd) == "MalformedTrailerError"


def test_blank_line_before_trailer_is_tolerated():
    name = "x-amz-checksum-crc32"
    auth = streaming_auth(STREAMING_UNSIGNED_TRAILER, 5, name)
    body = encode_for(auth, b"hello", 8192, signed=False, trailers={name: crc32_b64(b"hello")})
    padded = body.replace(b"0\r\n", b"0\r\n\r\n", 1)
    decoder = ChunkedDecoder(auth, name)
    assert decoder.feed(padded) == b"hello" and decoder.finish() == {name: crc32_b64(b"hello")}


def test_decoder_refuses_non_streaming_auth():
    with pytest.raises(ValueError):
        ChunkedDecoder(sign("GET", "/bkt/k").check())


# ---------------------------------------------------------------- plain bodies


def test_payload_hasher():
    wire = sign("PUT", "/bkt/k", body=b"hello world")
    auth = wire.check()
    hasher = PayloadHasher(auth.payload_hash)
    hasher.update(b"hello ")
    hasher.update(b"world")
    hasher.check()
    wrong = PayloadHasher(auth.payload_hash)
    wrong.update(b"hello world!")
    with pytest.raises(S3AuthError) as exc:
        wrong.check()
    assert exc.value.code == "XAmzContentSHA256Mismatch" and exc.value.status == 400
    anything = PayloadHasher(UNSIGNED_PAYLOAD)
    anything.update(b"whatever")
    anything.check()
    with pytest.raises(ValueError):
        PayloadHasher(STREAMING_SIGNED)
