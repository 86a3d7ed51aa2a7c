"""Fuzz: request lines and headers. Random methods and paths (``..``, ``%2e%2e``, NUL, names
over 1 KiB and 4 KiB, bad UTF-8) on every port; object requests with hostile Range,
Content-Length, chunked bodies that lie, encodings, huge and numerous headers, through the
proxy's reverse relay, straight to a target (with the proxy's signed redirect) and through S3."""

from __future__ import annotations

import gzip

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    BUCKET,
    build,
    check,
    exchange,
    fuzz_settings,
    s3_headers,
    token,
)

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "TRACE",
           "get", "CONNECT", "G\x00T", "\u00c9T"]
SEGMENTS = ["v1", "objects", "buckets", "uploads", "jobs", "schedules", "auth", "keys",
            "secret", "remotes", "cluster", "map", "bucket-map", "join", "metasync", "node",
            "status", "health", "ready", "info", "changes", "batch", "abort", "report",
            BUCKET, "small", "big", "missing", "..", ".", "%2e%2e", "%2E%2e", "%2e", "%00",
            "a%00b", "\x00", "%ff%fe", "%c3%28", "\udcff\udcfe", "caf\u00e9", "%2f", "", "~",
            "n" * 1025, "n" * 4097, "%" + "e9" * 300, "{bucket}", "*"]
QUERY_KEYS = ["provider", "mode", "namespace", "limit", "token", "prefix", "since", "wait",
              "latest", "cached", "verify", "upload_id", "part", "complete", "uploadId",
              "partNumber", "list-type", "delete", "uploads", "max-keys", "state", "acl",
              "X-Amz-Expires", "X-Amz-Date", "response-content-type", "x\x00", "%00"]
QUERY_VALUES = ["", "fs", "ais", "s3", "nosuch", "reverse", "redirect", "-1", "0", "1",
                "9" * 5_000, "%00", "true", "abc", "\u0663", "%ff", "n" * 2_000]
AUTH = ["none", "token", "wrong-token", "Basic eDp5", "Bearer", "AWS4-HMAC-SHA256 x"]


def authorization(kind: str) -> list[tuple[str, str]]:
    if kind == "none":
        return []
    if kind == "token":
        return [("Authorization", f"Bearer {token()}")] if token() else []
    if kind == "wrong-token":
        return [("Authorization", "Bearer not-the-token")]
    return [("Authorization", kind)]


queries = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), st.sampled_from(QUERY_VALUES)),
                   max_size=4).map(lambda pairs: "&".join(f"{k}={v}" if v else k
                                                          for k, v in pairs))


@fuzz_settings(700)
@given(method=st.sampled_from(METHODS),
       segments=st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=6),
       query=queries, where=st.sampled_from(["proxy", "s3-port", "target-0", "target-1"]),
       auth=st.sampled_from(AUTH), body=st.one_of(st.none(), st.binary(max_size=64)))
def test_methods_and_paths(fuzz, method, segments, query, where, auth, body):
    endpoint = {"proxy": fuzz.proxy, "s3-port": fuzz.s3_port, "target-0": fuzz.targets[0],
                "target-1": fuzz.targets[1]}[where]
    path = "/" + "/".join(segments) + (f"?{query}" if query else "")
    headers = authorization(auth)
    if body is not None:
        headers.append(("Content-Length", str(len(body))))
    check(exchange(endpoint, build(method, path, headers, body or b"", host=endpoint.netloc)),
          f"{method} {path[:200]!r} at {where}")


# -- object requests with hostile headers --

def _digits() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(0, 2**70).map(str), st.text("0123456789", max_size=25),
                     st.integers(4_290, 5_000).map(lambda n: "9" * n),
                     st.integers(19, 30).map(lambda n: "0" * n + "7"),
                     st.sampled_from(["\u0663", "1\u0663", " 1", "-1", "+1", "0x10", "1e3"]))


ranges = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", _digits(), _digits()),
    st.builds(lambda a: f"bytes=-{a}", _digits()),
    st.lists(st.builds(lambda a, b: f"{a}-{b}", _digits(), _digits()), min_size=2,
             max_size=4).map(lambda specs: "bytes=" + ",".join(specs)),
    st.sampled_from(["bytes=", "bytes", "items=0-1", "bytes=0-1,", "bytes 0-1", "",
                     "bytes=--1", "bytes=1-0", "bytes=0-0", "bytes=\u00e9-"]))
content_lengths = ["honest", "longer", "shorter", "-1", "abc", "9" * 30, "1, 1", "+5",
                   "\u0663"]
framings = ["content-length", "chunked", "chunked-lying", "chunked-bad-size", "none"]
encodings = ["gzip", "deflate", "br", "identity", "gzip, deflate", "aws-chunked", "x-fake",
             "gzip,aws-chunked"]
extra_header_kinds = st.sampled_from(["none", "huge-value", "many", "expect", "if-junk",
                                      "md5-junk", "checksum-junk", "decoded-length-junk",
                                      "attrs-junk", "huge-name"])
ATTRS_JUNK = ["[" * 3_000 + "]" * 3_000, '{"meta": {"k": 5}}', '{"headers": {"X": "y"}}',
              "{", '{"type": "\\r\\nX: y"}', '{"meta": {"k": "\\udc80"}}', "1e999"]


def extra_headers(kind: str, draw_index: int) -> list[tuple[str, str]]:
    if kind == "huge-value":
        return [("X-Huge", "v" * 9_000)]
    if kind == "huge-name":
        return [("X-" + "n" * 9_000, "v")]
    if kind == "many":
        return [(f"X-Many-{i}", "v") for i in range(200)]
    if kind == "expect":
        return [("Expect", ["100-continue", "200-ok", "100-Continue, foo"][draw_index % 3])]
    if kind == "if-junk":
        return [("If-None-Match", '"' * 50), ("If-Modified-Since", "Feb 30 99999 25:61"),
                ("If-Unmodified-Since", "\u0663\u0663")]
    if kind == "md5-junk":
        return [("Content-MD5", ["!!!", "AAAA", "", "=" * 30][draw_index % 4])]
    if kind == "checksum-junk":
        return [("x-amz-checksum-crc32", "\u00e9"), ("x-amz-checksum-sha256", "A" * 500)]
    if kind == "decoded-length-junk":
        return [("x-amz-decoded-content-length", ["-1", "9" * 5_000, "\u0663", ""][
            draw_index % 4])]
    if kind == "attrs-junk":
        return [("X-Aisync-Attrs", ATTRS_JUNK[draw_index % len(ATTRS_JUNK)])]
    return []


def framed(body: bytes, framing: str, content_length: str) -> tuple[list, bytes, bool]:
    """(headers, bytes on the wire, whether the server may close without an answer)."""
    if framing == "chunked":
        wire = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                        for i in range(0, len(body), 100)) + b"0\r\n\r\n"
        return [("Transfer-Encoding", "chunked")], wire, False
    if framing == "chunked-lying":
        return [("Transfer-Encoding", "chunked")], b"%x\r\n" % (len(body) + 100) + body, True
    if framing == "chunked-bad-size":
        return [("Transfer-Encoding", "chunked")], b"zz\r\n" + body + b"\r\n0\r\n\r\n", False
    if framing == "none":
        return [], body, False
    value = {"honest": str(len(body)), "longer": str(len(body) + 100),
             "shorter": str(max(0, len(body) - 1))}.get(content_length, content_length)
    return [("Content-Length", value)], body, content_length == "longer"


@fuzz_settings(800)
@given(route=st.sampled_from(["reverse", "target", "s3", "s3-port", "fs"]),
       method=st.sampled_from(["GET", "HEAD", "PUT"]),
       key=st.sampled_from(["small", "big", "new", "dir/" + "k" * 256, "present"]),
       range_header=st.one_of(st.none(), ranges),
       encoding=st.one_of(st.none(), st.sampled_from(encodings)),
       body=st.binary(max_size=2_000), gzipped=st.booleans(),
       framing=st.sampled_from(framings), content_length=st.sampled_from(content_lengths),
       extra=extra_header_kinds, index=st.integers(0, 11))
def test_object_requests_with_hostile_headers(fuzz, route, method, key, range_header,
                                              encoding, body, gzipped, framing,
                                              content_length, extra, index):
    if gzipped:
        body = gzip.compress(body)
    headers: list[tuple[str, str]] = []
    if route in ("reverse", "fs"):
        endpoint = fuzz.proxy
        bucket_query = "provider=fs&" if route == "fs" else ""
        bucket = fuzz.fs_bucket if route == "fs" else BUCKET
        target = f"/v1/objects/{bucket}/{key}?{bucket_query}mode=reverse"
        headers += authorization("token")
    elif route == "target":
        endpoint, target = fuzz.signed_location(method, f"/v1/objects/{BUCKET}/{key}")
    else:
        endpoint = fuzz.proxy if route == "s3" else fuzz.s3_port
        target = f"/{BUCKET}/{key}"
        signed = s3_headers(method, endpoint.netloc, target, payload="UNSIGNED-PAYLOAD")
        headers += [(k, v) for k, v in signed.items() if k.lower() != "content-length"]
    if range_header is not None:
        headers.append(("Range", range_header))
    if encoding is not None:
        headers.append(("Content-Encoding", encoding))
    headers += extra_headers(extra, index)
    may_close = False
    wire = b""
    if method == "PUT":
        framing_headers, wire, may_close = framed(body, framing, content_length)
        headers += framing_headers
    data = build(method, target, headers, wire, host=endpoint.netloc)
    check(exchange(endpoint, data, half_close=may_close),
          f"{method} {target[:120]} via {route} with {headers[-4:]!r}"[:2_000],
          may_close=may_close)
