"""Bodies are stored byte for byte, whatever their Content-Encoding, and read back unchanged.

S3 keeps ``Content-Encoding`` as object metadata: the server never inflates a request body,
and every read returns the stored bytes with the stored header (the client decides whether to
decode). Checked through boto3 and raw requests, on every read path: the S3 relay, short-circuit
local reads, the native reverse relay, a target (and its read worker) behind a redirect. Also the
two chunked upload shapes: aws-chunked framing with ``x-amz-decoded-content-length`` over HTTP
chunked transfer (stored), and a plain chunked body without a length (411, as S3 answers).
"""

from __future__ import annotations

import gzip
import http.client
import os
import zlib
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from aisync.client import Client
from tests.harness import LocalCluster, bearer, raw_http
from tests.s3.conftest import ACCESS_KEY, SECRET_KEY, boto3_client
from tests.unit.sigv4_wire import encode_chunked

MiB = 1 << 20
BUCKET = "encodings"
#: (Content-Encoding, body): bodies that are, and are not, what their header claims.
BODIES = {
    "gzip-not-gzip": ("gzip", b"these bytes are not gzip at all"),
    "gzip-valid": ("gzip", gzip.compress(b"hello, compressed world" * 100)),
    "deflate-3-bytes": ("deflate", b"abc"),
    "deflate-valid": ("deflate", zlib.compress(b"deflated " * 100)),
    "br": ("br", b"\x0b\x02\x80not really brotli"),
    "gzip-large": ("gzip", gzip.compress(os.urandom(3 * MiB), compresslevel=1)),  # spliced
    "gzip-mid": ("gzip", os.urandom(300 * 1024)),  # streamed through Python
}


@pytest.fixture(scope="module", params=["local-reads", "http-relays"])
def cluster(request):
    """Local reads on (S3 GETs short-circuit), or off with a read worker per target (S3 GETs
    relay over HTTP; a worker serves a target's GETs and relays its PUTs)."""
    http = {"local_reads": True} if request.param == "local-reads" else \
        {"local_reads": False, "read_workers": 1}
    with LocalCluster(targets=2, proxies=1, extra={"http": http}) as c:
        with Client(c.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "tests")
            client.create_bucket(f"ais://{BUCKET}")
        yield c


@pytest.fixture(scope="module")
def s3(cluster):
    return boto3_client(cluster.endpoint)




def signed(method: str, url: str, headers: dict | None = None, payload: str | None = None,
           body: bytes = b"") -> dict[str, str]:
    """SigV4 headers for a raw request (``payload``: the x-amz-content-sha256 to declare)."""
    class Signer(S3SigV4Auth):
        def payload(self, request):
            return payload if payload is not None else super().payload(request)

    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    Signer(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("case", list(BODIES))
def test_s3_put_stores_the_bytes_sent_and_the_encoding(cluster, s3, case):
    encoding, body = BODIES[case]
    key = f"s3/{case}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentEncoding=encoding)
    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == body
    assert got["ContentEncoding"] == encoding
    assert got["ContentLength"] == len(body)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert (head["ContentEncoding"], head["ContentLength"]) == (encoding, len(body))
    part = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=1-2")
    assert part["Body"].read() == body[1:3]
    status, headers, data = raw_http(cluster.endpoint, "GET", f"/{BUCKET}/{key}",
                                headers=signed("GET", f"{cluster.endpoint}/{BUCKET}/{key}"))
    assert (status, headers["Content-Encoding"], data) == (200, encoding, body)


def test_s3_copy_keeps_the_encoded_bytes(s3):
    encoding, body = BODIES["gzip-valid"]
    s3.put_object(Bucket=BUCKET, Key="copy/src", Body=body, ContentEncoding=encoding)
    s3.copy_object(Bucket=BUCKET, Key="copy/dst", CopySource={"Bucket": BUCKET,
                                                              "Key": "copy/src"})
    got = s3.get_object(Bucket=BUCKET, Key="copy/dst")
    assert (got["Body"].read(), got["ContentEncoding"]) == (body, encoding)


@pytest.mark.parametrize("case", ["gzip-not-gzip", "gzip-valid", "deflate-3-bytes", "br",
                                  "gzip-large"])
def test_native_put_with_content_encoding_stores_the_bytes_sent(cluster, case):
    encoding, body = BODIES[case]
    path = f"/v1/objects/{BUCKET}/native/{case}"
    for mode in ("reverse", "redirect"):
        headers = {"Content-Encoding": encoding, **bearer()}
        if mode == "redirect":  # the proxy's signed redirect, then the body to the target
            status, answer, _ = raw_http(cluster.endpoint, "PUT", path, headers=bearer())
            assert status == 307
            location = urlsplit(answer["Location"])
            url, target = f"http://{location.netloc}", f"{location.path}?{location.query}"
        else:
            url, target = cluster.endpoint, f"{path}?mode=reverse"
        status, answer, data = raw_http(url, "PUT", target, body, headers)
        assert status == 200, data
        assert "Content-Encoding" not in answer  # the JSON answer is not encoded
        status, answer, data = raw_http(cluster.endpoint, "GET", f"{path}?mode=reverse",
                                   headers=bearer())
        assert (status, data) == (200, body)
        status, answer, _ = raw_http(cluster.endpoint, "GET", path, headers=bearer())
        location = urlsplit(answer["Location"])
        status, answer, data = raw_http(f"http://{location.netloc}", "GET",
                                   f"{location.path}?{location.query}")
        assert (status, data) == (200, body), mode


def test_native_get_of_an_encoded_object_through_the_relay(cluster, s3):
    """An object S3 stored with its encoding: the native reverse relay passes bytes and
    header as stored (aiohttp's client would inflate them unless told not to)."""
    encoding, body = BODIES["gzip-large"]
    s3.put_object(Bucket=BUCKET, Key="relay/big", Body=body, ContentEncoding=encoding)
    status, headers, data = raw_http(cluster.endpoint, "GET",
                                f"/v1/objects/{BUCKET}/relay/big?mode=reverse",
                                headers=bearer())
    assert (status, headers["Content-Encoding"]) == (200, encoding)
    assert int(headers["Content-Length"]) == len(body) and data == body


def _chunked_put(url: str, target: str, headers: dict, pieces: list[bytes]):
    """A PUT whose body goes with HTTP chunked transfer, no Content-Length."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for piece in pieces:
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("size", [1000, 700_000])
@pytest.mark.parametrize("encoding,stored", [("aws-chunked", None),
                                             ("aws-chunked,gzip", "gzip")])
def test_aws_chunked_over_http_chunked_transfer_is_stored(cluster, s3, size, encoding, stored):
    payload = os.urandom(size)
    key = f"chunked/{size}-{encoding}"
    url = f"{cluster.endpoint}/{BUCKET}/{key}"
    headers = signed("PUT", url, payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                     headers={"Content-Encoding": encoding,
                              "x-amz-decoded-content-length": str(size)})
    scope = headers["Authorization"].split("Credential=")[1].split(",")[0].split("/", 1)[1]
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    framed = encode_chunked(payload, 65536, amz_date=headers["X-Amz-Date"], scope=scope,
                            seed=seed, secret=SECRET_KEY)
    pieces = [framed[i:i + 7000] for i in range(0, len(framed), 7000)]
    status, body = _chunked_put(cluster.endpoint, f"/{BUCKET}/{key}", headers, pieces)
    assert status == 200, body
    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == payload
    assert got.get("ContentEncoding") == stored  # aws-chunked framed the upload only


def test_plain_chunked_put_without_a_length_is_411_as_in_s3(cluster, s3):
    url = f"{cluster.endpoint}/{BUCKET}/chunked/plain"
    headers = signed("PUT", url, payload="UNSIGNED-PAYLOAD")
    status, body = _chunked_put(cluster.endpoint, f"/{BUCKET}/chunked/plain", headers,
                                [b"no", b" length"])
    assert status == 411 and b"<Code>MissingContentLength</Code>" in body
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="chunked/plain")["KeyCount"] == 0
