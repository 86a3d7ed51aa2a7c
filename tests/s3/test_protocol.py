"""HTTP and S3 protocol edges against a live cluster: a final answer to ``Expect: 100-continue``
before the body never desynchronizes the connection; SigV4 regions, dates and expiry are S3's
4xx; hostile XML bodies (DTDs, entities, UTF-16) are MalformedXML and change nothing.

The Expect exchanges are written on raw sockets, so what the server does with the connection
is visible: after an early final answer it must say ``Connection: close`` and close, without
ever reading the client's next request as the held-back body; after ``100 Continue`` and the
body, the next request on the same connection must get its own, right answer.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from aisync.client import Client
from tests import harness
from tests.harness import FAST_FAILURE_DETECTION, LocalCluster, http_json, wait_for
from tests.s3.conftest import ACCESS_KEY, SECRET_KEY, boto3_client
from tests.unit.test_s3_xml import BILLION_LAUGHS, EXTERNAL_ENTITY, INTERNAL_ENTITY, encodings

BUCKET = "protocol"
REGION = "us-east-1"
TOKEN = getattr(harness, "TEST_TOKEN", None)


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(targets=1, proxies=1) as c:
        with Client(c.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "protocol tests")
        boto3_client(c.endpoint).create_bucket(Bucket=BUCKET)
        yield c


@pytest.fixture(scope="module")
def targetless():
    """A proxy whose only target stopped: every object request is 503 ServiceUnavailable."""
    with LocalCluster(targets=1, proxies=1, extra=FAST_FAILURE_DETECTION) as c:
        with Client(c.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "protocol tests")
        boto3_client(c.endpoint).create_bucket(Bucket=BUCKET)
        c.stop_node(c.targets[0])
        wait_for(lambda: not c.active_targets(), 30, "the target to leave the map")
        yield c


@pytest.fixture(scope="module")
def s3(cluster):
    return boto3_client(cluster.endpoint)


# ---------------------------------------------------------------- raw HTTP/1.1


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


def read_answer(reader, method: str) -> Answer:
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if method == "HEAD" or status < 200 or status in (204, 304) \
        else int(headers.get("content-length", "0"))
    return Answer(status, headers, reader.read(length) if length else b"")


def head_of(method: str, target: str, port: int, length: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Content-Length: {length}", "Expect: 100-continue"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def expect_then_next(port: int, method: str, target: str, body: bytes,
                     next_request: bytes, next_method: str, *,
                     headers: dict[str, str] | None = None) -> tuple[Answer, bool, Answer | None]:
    """An Expect request, then ``next_request`` on the same connection: (the final answer,
    whether it came before the body, the next request's answer or None if the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        sock.sendall(head_of(method, target, port, len(body), headers or {}))
        answer = read_answer(reader, method)
        early = answer.status != 100
        if not early:
            sock.sendall(body)
            answer = read_answer(reader, method)
        else:
            assert answer.closes, f"an early {answer.status} leaves the connection open"
        sock.sendall(next_request)
        if answer.closes:
            sock.shutdown(socket.SHUT_WR)  # as a client does; the server's drain then ends
            rest = reader.read()
            assert rest == b"", f"the next request was answered as a body: {rest[:300]!r}"
            return answer, early, None
        return answer, early, read_answer(reader, next_method)


def presigned(endpoint: str, method: str, key: str | None = None, *,
              secret: str = SECRET_KEY, region: str = REGION, **params) -> str:
    """The path and query of a presigned URL (the SDK's signer, the real clock)."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret,
                          config=Config(s3={"addressing_style": "path"},
                                        signature_version="s3v4"))
    operation = {"PUT": "put_object", "GET": "get_object", "HEAD": "head_object"}[method] \
        if key is not None else "head_bucket"
    args = {"Bucket": BUCKET, **({"Key": key} if key is not None else {}), **params}
    url = urlsplit(client.generate_presigned_url(operation, Params=args))
    return f"{url.path}?{url.query}"


def request_bytes(method: str, target: str, port: int, headers: dict[str, str] | None = None
                  ) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def native_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


# ---------------------------------------------------------------- Expect: 100-continue


def test_boto3_wrong_secret_put_then_head_bucket_on_the_same_client(cluster):
    intruder = boto3_client(cluster.endpoint, secret_key="not-the-secret")
    for _ in range(3):
        with pytest.raises(ClientError) as put:
            intruder.put_object(Bucket=BUCKET, Key="never", Body=b"x" * 4096)
        assert put.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        with pytest.raises(ClientError) as head:
            intruder.head_bucket(Bucket=BUCKET)
        # 403, not the 400 of a request line read from the middle of a stale body
        assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    good = boto3_client(cluster.endpoint)
    assert good.head_bucket(Bucket=BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as missing:
        good.head_object(Bucket=BUCKET, Key="never")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_s3_403_before_the_body_closes_the_connection(cluster):
    port = cluster.primary.port
    body = b"b" * 1000
    next_request = request_bytes("HEAD", presigned(cluster.endpoint, "HEAD"), port)
    for target in (presigned(cluster.endpoint, "PUT", "k403", secret="wrong"),
                   f"/{BUCKET}/k403"):  # wrong signature; no signature at all
        answer, early, after = expect_then_next(port, "PUT", target, body, next_request, "HEAD")
        assert answer.status == 403 and early and after is None
        assert b"<Code>" in answer.body
    with pytest.raises(ClientError):
        boto3_client(cluster.endpoint).head_object(Bucket=BUCKET, Key="k403")


def test_s3_503_without_targets_keeps_the_connection_consistent(targetless):
    port = targetless.primary.port
    body = b"c" * 1000
    next_request = request_bytes("HEAD", presigned(targetless.endpoint, "HEAD"), port)
    answer, early, after = expect_then_next(port, "PUT", presigned(targetless.endpoint, "PUT",
                                                                     "k503"),
                                            body, next_request, "HEAD")
    assert answer.status == 503 and b"ServiceUnavailable" in answer.body
    assert after is None or after.status == 200, (early, after)


def test_native_307_before_the_body_closes_the_connection(cluster):
    port = cluster.primary.port
    body = b"d" * 1000
    next_request = request_bytes("GET", "/v1/health", port)
    answer, early, after = expect_then_next(port, "PUT", f"/v1/objects/{BUCKET}/k307", body,
                                            next_request, "GET", headers=native_headers())
    assert answer.status == 307 and early and after is None
    assert "/v1/objects/" in answer.headers["location"]


def test_native_503_before_the_body_closes_the_connection(targetless):
    port = targetless.primary.port
    next_request = request_bytes("GET", "/v1/health", port)
    answer, early, after = expect_then_next(port, "PUT", f"/v1/objects/{BUCKET}/k", b"e" * 1000,
                                            next_request, "GET", headers=native_headers())
    assert answer.status == 503 and early and after is None


def test_after_100_continue_the_next_request_is_a_request(cluster):
    port = cluster.primary.port
    body = b"f" * 1000
    next_request = request_bytes("HEAD", presigned(cluster.endpoint, "HEAD", "k100"), port)
    answer, early, after = expect_then_next(port, "PUT", presigned(cluster.endpoint, "PUT",
                                                                     "k100"),
                                            body, next_request, "HEAD")
    assert (answer.status, early) == (200, False)
    assert after is not None and after.status == 200
    assert after.headers["content-length"] == str(len(body))


# ---------------------------------------------------------------- SigV4 regions and dates


def signed(endpoint: str, method: str, path: str, body: bytes = b"", *, region: str = REGION,
           headers: dict[str, str] | None = None, query: str = "") -> tuple[int, bytes]:
    """A header-signed request (the SDK's signer, the real clock), sent as is."""
    url = f"{endpoint}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", region).add_auth(request)
    return send(url, method, dict(request.headers.items()), body)


def send(url: str, method: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("region", ["eu-west-1", "xx-fake-9"])
def test_a_signature_for_another_region_names_the_expected_one(cluster, region):
    status, body = signed(cluster.endpoint, "GET", f"/{BUCKET}", query="list-type=2",
                          region=region)
    assert status == 400
    assert b"<Code>AuthorizationHeaderMalformed</Code>" in body
    assert f"the region '{region}' is wrong; expecting '{REGION}'".encode() in body
    assert f"<Region>{REGION}</Region>".encode() in body
    assert signed(cluster.endpoint, "GET", f"/{BUCKET}", query="list-type=2")[0] == 200


def test_a_presigned_url_for_another_region_names_the_expected_one(cluster, s3):
    s3.put_object(Bucket=BUCKET, Key="regional", Body=b"r")
    status, body = send(cluster.endpoint + presigned(cluster.endpoint, "GET", "regional",
                                                     region="eu-west-1"), "GET", {})
    assert status == 400
    assert b"<Code>AuthorizationQueryParametersError</Code>" in body
    assert f"<Region>{REGION}</Region>".encode() in body
    assert send(cluster.endpoint + presigned(cluster.endpoint, "GET", "regional"), "GET",
                {}) == (200, b"r")


@pytest.mark.parametrize("amz_date", ["20240309T250000Z", "20240309T126000Z", "20240230T000000Z",
                                      "garbage"])
def test_a_malformed_x_amz_date_is_access_denied(cluster, amz_date):
    # any known key with any signature reached the date parser: a 500 before
    day = amz_date[:8] if amz_date[:8].isdigit() else "20240309"
    credential = f"{ACCESS_KEY}/{day}/{REGION}/s3/aws4_request"
    headers = {"x-amz-date": amz_date, "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
               "Authorization": f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders="
                                f"host;x-amz-content-sha256;x-amz-date, Signature={'0' * 64}"}
    for method in ("GET", "PUT"):
        status, body = send(f"{cluster.endpoint}/{BUCKET}/dated", method, headers,
                            b"x" if method == "PUT" else b"")
        assert status == 403 and b"<Code>AccessDenied</Code>" in body, body


@pytest.mark.parametrize(("param", "value"), [
    ("X-Amz-Date", "20240309T240000Z"), ("X-Amz-Date", "2024"), ("X-Amz-Expires", "-1"),
    ("X-Amz-Expires", "9" * 5000), ("X-Amz-Expires", "soon"), ("X-Amz-Expires", "604801"),
])
def test_a_malformed_presigned_date_or_expiry_is_refused(cluster, s3, param, value):
    s3.put_object(Bucket=BUCKET, Key="presigned", Body=b"p")
    path, _, query = presigned(cluster.endpoint, "GET", "presigned").partition("?")
    pairs = [p.partition("=") for p in query.split("&")]
    query = "&".join(f"{n}={quote(value, safe='') if n == param else v}" for n, _, v in pairs)
    status, body = send(f"{cluster.endpoint}{path}?{query}", "GET", {})
    assert status == 400 and b"<Code>AuthorizationQueryParametersError</Code>" in body, body


# ---------------------------------------------------------------- XML bodies


HOSTILE_XML = {f"{kind} {encoding}": data
               for kind, document in (("internal entity", INTERNAL_ENTITY),
                                      ("external entity", EXTERNAL_ENTITY),
                                      ("billion laughs", BILLION_LAUGHS))
               for encoding, data in encodings(document).items()
               if encoding in ("utf-8", "utf-16", "utf-16-be")}


@pytest.mark.parametrize("case", list(HOSTILE_XML))
def test_hostile_multi_delete_bodies_delete_nothing(cluster, s3, case):
    s3.put_object(Bucket=BUCKET, Key="name", Body=b"kept")
    s3.put_object(Bucket=BUCKET, Key="expanded", Body=b"kept")
    status, answer = signed(cluster.endpoint, "POST", f"/{BUCKET}", HOSTILE_XML[case],
                            query="delete=",
                            headers={"Content-Type": "application/xml"})
    assert status == 400 and b"<Code>MalformedXML</Code>" in answer, answer
    for key in ("name", "expanded"):
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"kept"


@pytest.mark.parametrize("case", list(HOSTILE_XML))
def test_hostile_complete_multipart_bodies_complete_nothing(cluster, s3, case):
    key = "multipart-" + case.replace(" ", "-")
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1,
                          Body=b"part")["ETag"]
    status, answer = signed(cluster.endpoint, "POST", f"/{BUCKET}/{key}", HOSTILE_XML[case],
                            query=f"uploadId={quote(upload, safe='')}",
                            headers={"Content-Type": "application/xml"})
    assert status == 400 and b"<Code>MalformedXML</Code>" in answer, answer
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key=key)
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag}]})  # the upload is intact
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"part"


def test_a_utf16_multi_delete_without_dtd_works(cluster, s3):
    s3.put_object(Bucket=BUCKET, Key="utf16-victim", Body=b"gone soon")
    document = '<Delete><Object><Key>utf16-victim</Key></Object></Delete>'
    status, answer = signed(cluster.endpoint, "POST", f"/{BUCKET}",
                            encodings(document)["utf-16"], query="delete=",
                            headers={"Content-Type": "application/xml"})
    assert status == 200 and b"<Key>utf16-victim</Key>" in answer, answer
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="utf16-victim")


def test_create_bucket_configuration_is_parsed_safely(cluster, s3):
    status, answer = signed(cluster.endpoint, "PUT", "/protocol-dtd",
                            encodings(INTERNAL_ENTITY.replace("Delete", "CreateBucket"
                                                              "Configuration"))["utf-16"])
    assert status == 400 and b"<Code>MalformedXML</Code>" in answer
    assert "protocol-dtd" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    s3.create_bucket(Bucket="protocol-located",
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert http_json(f"{cluster.endpoint}/v1/buckets/protocol-located")[0] == 200
