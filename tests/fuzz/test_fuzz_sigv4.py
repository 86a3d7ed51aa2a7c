"""Fuzz: SigV4. Header and presigned signatures with bad dates (hour 24, minute 60, 30 February,
other scripts' digits), other regions, wrong secrets, expiries out of range, mangled
Authorization headers and query parameters, payload hashes and aws-chunked bodies that lie."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    BUCKET,
    SECRET_KEY,
    build,
    check,
    exchange,
    fuzz_settings,
    presigned_target,
    s3_headers,
)

BAD_DATES = st.one_of(
    st.sampled_from(["20240230T120000Z", "20240101T240000Z", "20240101T236000Z",
                     "20240101T235960Z", "00000101T000000Z", "99991231T235959Z",
                     "2024010T120000Z", "20240101 120000Z", "\u0662\u0660\u0662\u0664" +
                     "0101T120000Z", "", "now", "20240101T120000", "1" * 5_000]),
    st.integers(-10**9, 10**9).map(
        lambda delta: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(max(0, time.time() + delta)))))
#: Half the examples keep each part valid (None: the signer's date, now), so the others are
#: reached one at a time.
dates = st.one_of(st.none(), BAD_DATES)
BAD_REGIONS = st.sampled_from(["eu-west-1", "xx-fake-9", "", "us-east-1/x", "r" * 300,
                               "\u00e9"])
regions = st.one_of(st.just("us-east-1"), BAD_REGIONS)
payloads = st.sampled_from([None, "UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                            "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "0" * 64, "zz", ""])


def mangle(value: str, position: int, insert: str, mode: str) -> str:
    position %= max(1, len(value))
    if mode == "truncate":
        return value[:position]
    if mode == "replace":
        return value[:position] + insert + value[position + 1:]
    if mode == "insert":
        return value[:position] + insert + value[position:]
    return value


@fuzz_settings(450)
@given(method=st.sampled_from(["GET", "HEAD", "PUT", "DELETE"]),
       key=st.sampled_from(["small", "big", "sig-new"]), amz_date=dates, region=regions,
       wrong_secret=st.booleans(), payload=payloads,
       mode=st.one_of(st.just("none"), st.sampled_from(["truncate", "replace", "insert"])),
       position=st.integers(0, 400),
       insert=st.sampled_from([",", "=", " ", "/", "Credential=", "\u00e9", "\x00", "a" * 50]),
       body=st.binary(max_size=300), decoded=st.sampled_from([None, "0", "-1", "9" * 40]))
def test_header_signatures(fuzz, method, key, amz_date, region, wrong_secret, payload, mode,
                           position, insert, body, decoded):
    endpoint = fuzz.s3_port
    target = f"/{BUCKET}/{key}"
    extra = {}
    if decoded is not None:
        extra["x-amz-decoded-content-length"] = decoded
    if payload and payload.startswith("STREAMING"):
        extra["Content-Encoding"] = "aws-chunked"
    headers = s3_headers(method, endpoint.netloc, target, payload=payload, region=region,
                         secret="wrong" + SECRET_KEY if wrong_secret else SECRET_KEY,
                         amz_date=amz_date, extra=extra,
                         body=body if method == "PUT" else b"")
    headers["Authorization"] = mangle(headers["Authorization"], position, insert, mode)
    wire = body if method == "PUT" else b""
    listed = [(k, v) for k, v in headers.items() if k.lower() != "content-length"]
    listed.append(("Content-Length", str(len(wire))))
    status = exchange(endpoint, build(method, target, listed, wire, host=endpoint.netloc))
    check(status, f"{method} {target} signed with {headers!r}"[:2_000])


@fuzz_settings(300)
@given(method=st.sampled_from(["GET", "PUT", "HEAD"]),
       expires=st.sampled_from([1, 60, 604_800, 604_801]),
       replacement=st.sampled_from([None, ("X-Amz-Expires", "-1"), ("X-Amz-Expires", "0"),
                                    ("X-Amz-Expires", "9" * 5_000),
                                    ("X-Amz-Expires", "\u0663"),
                                    ("X-Amz-Date", "20240101T246000Z"),
                                    ("X-Amz-Date", "9" * 100),
                                    ("X-Amz-Credential", "x"),
                                    ("X-Amz-Algorithm", "AWS4-HMAC-SHA1"),
                                    ("X-Amz-SignedHeaders", ""),
                                    ("X-Amz-Signature", "zz")]),
       region=regions, wrong_secret=st.booleans(), duplicate=st.booleans())
def test_presigned_urls(fuzz, method, expires, replacement, region, wrong_secret, duplicate):
    endpoint = fuzz.s3_port
    target = presigned_target(method, endpoint.netloc, f"/{BUCKET}/small", expires=expires,
                              region=region,
                              secret="wrong" + SECRET_KEY if wrong_secret else SECRET_KEY)
    if replacement is not None:
        name, value = replacement
        path, _, query = target.partition("?")
        pairs = [p.partition("=") for p in query.split("&")]
        query = "&".join(f"{k}={value if k == name else v}" for k, _, v in pairs)
        target = f"{path}?{query}"
    if duplicate:
        target += "&" + target.partition("?")[2].split("&")[0]
    body = b"x" if method == "PUT" else b""
    headers = [("Content-Length", str(len(body)))] if method == "PUT" else []
    status = exchange(endpoint, build(method, target, headers, body, host=endpoint.netloc))
    check(status, f"{method} {target[:1_000]}")
