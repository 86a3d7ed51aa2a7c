"""SigV4 verification (aisync.s3.sigv4) against botocore's own signers, the AWS
documentation's published examples, and an aws-chunked encoder written here independently.

The clock is fixed: botocore signs at T0 (its clock function is pinned) and every ``verify`` gets
an explicit ``now``.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from botocore.config import Config
from multidict import CIMultiDict

from aisync.s3.sigv4 import (
    STREAMING_SIGNED,
    UNSIGNED_PAYLOAD,
    ChunkedDecoder,
    PayloadHasher,
    S3AuthError,
    amz_time,
    authenticate,
    parse_request,
    verify,
)
from tests.unit.sigv4_wire import (
    AK,
    EMPTY,
    HOST,
    REGION,
    SK,
    T0,
    FixedPayload,
    Wire,
    code_of,
    key_path,
    pin_botocore_clock,
    sign,
)


@pytest.fixture(autouse=True)
def _botocore_signs_at_t0(monkeypatch):
    pin_botocore_clock(monkeypatch)


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
                signer=FixedPayload.with_payload("not-a-hash"))
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


@pytest.mark.parametrize("value", ["20240309T123015Z", "20240229T000000Z", "19991231T235959Z"])
def test_amz_time_is_strptime(value):
    assert amz_time(value) == datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@pytest.mark.parametrize("value", ["20230229T000000Z", "20240309T123015", "2024030XT123015Z",
                                   "20240309 123015Z", "20240309T246015Z", ""])
def test_amz_time_refuses_what_strptime_refuses(value):
    with pytest.raises(ValueError):
        amz_time(value)
