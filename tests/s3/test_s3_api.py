"""The S3 front end through boto3 against a live cluster, with a moto server as the oracle
where S3's behaviour is subtle (listing pages, delimiters, multipart ETags).

Each operation of the issue's list is exercised on both of the proxy's S3 addresses where it
matters (the dedicated port and the root of the native port)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import time
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from aisync.client import Client
from tests.harness import http_json
from tests.s3.conftest import ACCESS_KEY, SECRET_KEY, boto3_client
from tests.unit.sigv4_wire import encode_chunked

MiB = 1 << 20


def code(exc_info) -> str:
    return exc_info.value.response["Error"]["Code"]


def status(exc_info) -> int:
    return exc_info.value.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def oracle(moto):
    return boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture
def bucket(s3, request):
    tag = hashlib.md5(request.node.name.encode()).hexdigest()[:6]
    name = f"t-{request.node.name[5:24].replace('_', '-').lower().strip('-')}-{tag}"
    s3.create_bucket(Bucket=name)
    return name


def raw(endpoint: str, method: str, path: str, headers: dict | None = None,
        body: bytes | None = None) -> tuple[int, dict, bytes]:
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# -- buckets --

def test_bucket_lifecycle(s3):
    name = f"life-{os.getpid()}"
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] in (None, "")
    assert "Status" not in s3.get_bucket_versioning(Bucket=name)
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=name)
    assert code(exc) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket=name, Key="k", Body=b"v")
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=name)
    assert (code(exc), status(exc)) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=name)
    assert status(exc) == 404
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=name)
    assert code(exc) == "NoSuchBucket"
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="-starts-with-a-dash")
    assert code(exc) == "InvalidBucketName"


def test_unsupported_operations_answer_not_implemented(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_policy(Bucket=bucket, Policy="{}")
    assert (code(exc), status(exc)) == ("NotImplemented", 501)
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": []})
    assert code(exc) == "NotImplemented"
    with pytest.raises(ClientError) as exc:
        s3.list_object_versions(Bucket=bucket)
    assert code(exc) == "NotImplemented"


def test_unconfigured_bucket_settings_read_as_s3_says(s3, bucket):
    for call, expected in ((s3.get_bucket_policy, "NoSuchBucketPolicy"),
                           (s3.get_bucket_cors, "NoSuchCORSConfiguration"),
                           (s3.get_bucket_lifecycle_configuration,
                            "NoSuchLifecycleConfiguration"),
                           (s3.get_bucket_tagging, "NoSuchTagSet"),
                           (s3.get_bucket_website, "NoSuchWebsiteConfiguration"),
                           (s3.get_bucket_encryption,
                            "ServerSideEncryptionConfigurationNotFoundError")):
        with pytest.raises(ClientError) as exc:
            call(Bucket=bucket)
        assert (code(exc), status(exc)) == (expected, 404), call
    assert s3.get_bucket_request_payment(Bucket=bucket)["Payer"] == "BucketOwner"
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_policy(Bucket="no-such-bucket-for-policy")
    assert code(exc) == "NoSuchBucket"


# -- objects --

def test_put_get_head_with_metadata_and_content_md5(s3, bucket):
    body = os.urandom(300_000)
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    put = s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=body, ContentMD5=md5,
                        ContentType="application/x-test", Metadata={"origin": "unit", "n": "7"},
                        CacheControl="max-age=60", ContentDisposition="attachment")
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"origin": "unit", "n": "7"}
    assert got["CacheControl"] == "max-age=60" and got["ContentDisposition"] == "attachment"
    head = s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="dir/bad.bin", Body=body, ContentMD5=wrong)
    assert code(exc) == "BadDigest"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="dir/bad.bin")
    assert status(exc) == 404  # nothing stored


def test_names_s3_clients_use(s3, bucket):
    for key in ("folder/", "with space/a+b=c", "ünïcode/ключ", "a//double", "~tilde*(x)"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert set(keys) == {"folder/", "with space/a+b=c", "ünïcode/ключ", "a//double",
                         "~tilde*(x)"}


def test_ranges_conditionals_and_overrides(s3, bucket):
    body = bytes(range(256)) * 40
    etag = s3.put_object(Bucket=bucket, Key="r", Body=body)["ETag"]
    part = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert part["Body"].read() == body[10:20] and part["ContentRange"] == \
        f"bytes 10-19/{len(body)}"
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-5")["Body"].read() == body[-5:]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(body)}-")
    assert (code(exc), status(exc)) == ("InvalidRange", 416)
    assert s3.get_object(Bucket=bucket, Key="r", IfMatch=etag)["Body"].read() == body
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r", IfMatch='"0000"')
    assert status(exc) == 412
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r", IfNoneMatch=etag)
    assert status(exc) == 304
    modified = s3.head_object(Bucket=bucket, Key="r")["LastModified"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r", IfModifiedSince=modified)
    assert status(exc) == 304
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r",
                      IfUnmodifiedSince=modified.replace(year=modified.year - 1))
    assert status(exc) == 412
    over = s3.get_object(Bucket=bucket, Key="r", ResponseContentType="text/x-over",
                         ResponseContentDisposition="inline; filename=x")
    assert over["ContentType"] == "text/x-over"
    assert over["ContentDisposition"] == "inline; filename=x"


def test_not_found_errors(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="missing")
    assert (code(exc), status(exc)) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="no-such-bucket-here", Key="k")
    assert code(exc) == "NoSuchBucket"
    s3.delete_object(Bucket=bucket, Key="missing")  # S3: deleting nothing succeeds


def test_delete_objects_quiet_and_verbose(s3, bucket):
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"d/{i}", Body=b"x")
    verbose = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "d/0"}, {"Key": "d/1"}, {"Key": "d/none"}]})
    assert sorted(d["Key"] for d in verbose["Deleted"]) == ["d/0", "d/1", "d/none"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "d/2"}, {"Key": "d/3"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["d/4"]


def test_copy_object_copy_and_replace_directives(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", ContentType="text/a",
                  Metadata={"m": "1"})
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket,
                                                                  "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"payload").hexdigest()}"'
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert (head["ContentType"], head["Metadata"]) == ("text/a", {"m": "1"})
    s3.copy_object(Bucket=bucket, Key="dst2", CopySource=f"{bucket}/src",
                   MetadataDirective="REPLACE", ContentType="text/b", Metadata={"m": "2"})
    head = s3.head_object(Bucket=bucket, Key="dst2")
    assert (head["ContentType"], head["Metadata"]) == ("text/b", {"m": "2"})
    assert s3.get_object(Bucket=bucket, Key="dst2")["Body"].read() == b"payload"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src")
    assert code(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="x", CopySource=f"{bucket}/src",
                       CopySourceIfMatch='"nope"')
    assert status(exc) == 412


# -- listings, against moto --

LIST_KEYS = ["a", "a/b", "a/b/c", "a/c", "b/x", "b/y/z", "c", "d/", "d/e", "é/f", "z z/1"]


def test_listings_match_moto(s3, bucket, oracle):
    oracle.create_bucket(Bucket=bucket)
    for key in LIST_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
        oracle.put_object(Bucket=bucket, Key=key, Body=b"1")

    def v2_pages(client, **kw):
        out, token = [], None
        while True:
            args = dict(kw, **({"ContinuationToken": token} if token else {}))
            page = client.list_objects_v2(Bucket=bucket, **args)
            out.append(([o["Key"] for o in page.get("Contents", [])],
                        [p["Prefix"] for p in page.get("CommonPrefixes", [])],
                        page["IsTruncated"], page["KeyCount"]))
            if not page["IsTruncated"]:
                return out
            token = page["NextContinuationToken"]

    def v1_pages(client, **kw):
        out, marker = [], None
        while True:
            args = dict(kw, **({"Marker": marker} if marker else {}))
            page = client.list_objects(Bucket=bucket, **args)
            keys = [o["Key"] for o in page.get("Contents", [])]
            prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            out.append((keys, prefixes, page["IsTruncated"]))
            if not page["IsTruncated"]:
                return out
            marker = page.get("NextMarker") or keys[-1]

    cases = [{}, {"Prefix": "a"}, {"Prefix": "a/"}, {"Delimiter": "/"},
             {"Prefix": "a/", "Delimiter": "/"}, {"MaxKeys": 2}, {"MaxKeys": 1, "Delimiter": "/"},
             {"StartAfter": "b/x"}, {"Prefix": "nothing"}, {"MaxKeys": 0}]
    for case in cases:
        assert v2_pages(s3, **case) == v2_pages(oracle, **case), case
    # (moto ignores MaxKeys in V1 listings with a delimiter: not compared there)
    for case in [{}, {"Delimiter": "/"}, {"MaxKeys": 3}, {"Prefix": "b", "Delimiter": "/"}]:
        assert v1_pages(s3, **case) == v1_pages(oracle, **case), case
    # asked for explicitly, boto3 leaves the keys encoded
    encoded = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Prefix="z")
    assert [o["Key"] for o in encoded["Contents"]] == ["z%20z/1"]
    encoded = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Prefix="\u00e9")
    assert [o["Key"] for o in encoded["Contents"]] == ["%C3%A9/f"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="a/b/c")["Contents"][0]
    assert listed["Size"] == 1 and listed["ETag"] == f'"{hashlib.md5(b"1").hexdigest()}"'


# -- multipart --

def test_multipart_upload_matches_s3_etags(s3, bucket, oracle):
    oracle.create_bucket(Bucket=bucket)
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]

    def upload(client) -> tuple[str, str]:
        uid = client.create_multipart_upload(Bucket=bucket, Key="mp/obj",
                                             ContentType="video/x", Metadata={"k": "v"})
        uid = uid["UploadId"]
        etags = [client.upload_part(Bucket=bucket, Key="mp/obj", UploadId=uid, PartNumber=n,
                                    Body=data)["ETag"] for n, data in enumerate(parts, 1)]
        listed = client.list_parts(Bucket=bucket, Key="mp/obj", UploadId=uid)["Parts"]
        assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == \
            [(n, e, len(d)) for n, (e, d) in enumerate(zip(etags, parts, strict=True), 1)]
        done = client.complete_multipart_upload(
            Bucket=bucket, Key="mp/obj", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                       for n, e in enumerate(etags, 1)]})
        return uid, done["ETag"]

    _, ours = upload(s3)
    _, theirs = upload(oracle)
    assert ours == theirs and ours.endswith('-3"')
    got = s3.get_object(Bucket=bucket, Key="mp/obj")
    assert got["Body"].read() == b"".join(parts)
    assert (got["ContentType"], got["Metadata"], got["ETag"]) == ("video/x", {"k": "v"}, ours)


def test_multipart_checks_abort_and_listing(s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m2")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="m2", UploadId=uid, PartNumber=1,
                        Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="m2", UploadId=uid, PartNumber=2,
                        Body=b"tail")["ETag"]
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("m2", uid)]

    def complete(parts):
        with pytest.raises(ClientError) as exc:
            s3.complete_multipart_upload(Bucket=bucket, Key="m2", UploadId=uid,
                                         MultipartUpload={"Parts": parts})
        return code(exc)

    assert complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]) == \
        "EntityTooSmall"
    assert complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]) == \
        "InvalidPartOrder"
    assert complete([{"PartNumber": 1, "ETag": '"deadbeef"'}]) == "InvalidPart"
    s3.abort_multipart_upload(Bucket=bucket, Key="m2", UploadId=uid)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="m2", UploadId=uid, PartNumber=1, Body=b"x")
    assert code(exc) == "NoSuchUpload"


def test_upload_part_copy_and_transfer_manager(s3, bucket, tmp_path):
    source = os.urandom(6 * MiB + 5)
    s3.put_object(Bucket=bucket, Key="whole", Body=source)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    e1 = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "whole"},
                             CopySourceRange=f"bytes=0-{5 * MiB - 1}")["CopyPartResult"]["ETag"]
    e2 = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "whole"},
                             CopySourceRange=f"bytes={5 * MiB}-{len(source) - 1}"
                             )["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                                            {"PartNumber": 2, "ETag": e2}]})
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == source
    # boto3's transfer manager: multipart upload and ranged parallel download
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                            max_concurrency=4)
    path = tmp_path / "up.bin"
    path.write_bytes(os.urandom(17 * MiB + 3))
    s3.upload_file(str(path), bucket, "tm/up.bin", Config=config)
    out = tmp_path / "down.bin"
    s3.download_file(bucket, "tm/up.bin", str(out), Config=config)
    assert out.read_bytes() == path.read_bytes()
    assert s3.head_object(Bucket=bucket, Key="tm/up.bin")["ETag"].endswith('-4"')


# -- authentication --

def test_wrong_keys_and_tampering_get_403_never_data(s3, s3_endpoint, bucket):
    s3.put_object(Bucket=bucket, Key="secret", Body=b"classified")
    bad = boto3_client(s3_endpoint, secret_key="not-the-secret-at-all")
    with pytest.raises(ClientError) as exc:
        bad.get_object(Bucket=bucket, Key="secret")
    assert (code(exc), status(exc)) == ("SignatureDoesNotMatch", 403)
    unknown = boto3_client(s3_endpoint, access_key="AKNOSUCHKEY0000")
    with pytest.raises(ClientError) as exc:
        unknown.list_buckets()
    assert code(exc) == "InvalidAccessKeyId"
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "secret"},
                                    ExpiresIn=300)
    parts = urlsplit(url)
    good = raw(s3_endpoint, "GET", f"{parts.path}?{parts.query}")
    assert good[0] == 200 and good[2] == b"classified"
    s3.put_object(Bucket=bucket, Key="secreT", Body=b"other")
    tampered = raw(s3_endpoint, "GET", f"{parts.path[:-1]}T?{parts.query}")
    assert tampered[0] == 403 and b"SignatureDoesNotMatch" in tampered[2]
    assert b"other" not in tampered[2]
    expired = s3.generate_presigned_url("get_object", ExpiresIn=1,
                                        Params={"Bucket": bucket, "Key": "secret"})
    query = urlsplit(expired).query.replace("X-Amz-Date=", "X-Amz-Date=2020")  # malformed
    answer = raw(s3_endpoint, "GET", f"{parts.path}?{query}")
    assert answer[0] in (400, 403) and b"classified" not in answer[2]


def _signed(method: str, url: str, body: bytes = b"", headers: dict | None = None,
            payload: str | None = None, when: float | None = None) -> dict:
    class Signer(S3SigV4Auth):
        def payload(self, request):
            return payload if payload is not None else super().payload(request)

        def _modify_request_before_signing(self, request):
            if when is not None:
                request.context["timestamp"] = time.strftime("%Y%m%dT%H%M%SZ",
                                                             time.gmtime(when))
            super()._modify_request_before_signing(request)

    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    Signer(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def test_payload_hash_mismatch_stores_nothing(s3, s3_endpoint, bucket):
    url = f"{s3_endpoint}/{bucket}/hashed"
    headers = _signed("PUT", url, b"signed body")
    status_, _, body = raw(s3_endpoint, "PUT", f"/{bucket}/hashed", headers, b"other body!")
    assert status_ == 400 and b"XAmzContentSHA256Mismatch" in body
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="hashed")
    assert status(exc) == 404
    big = os.urandom(1 << 20)  # streamed to the target: the held-back tail never goes
    headers = _signed("PUT", f"{s3_endpoint}/{bucket}/hashed-big", big)
    tampered = big[:-1] + bytes([big[-1] ^ 1])
    status_, _, body = raw(s3_endpoint, "PUT", f"/{bucket}/hashed-big", headers, tampered)
    assert status_ == 400 and b"XAmzContentSHA256Mismatch" in body
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="hashed-big")
    assert status(exc) == 404
    headers = _signed("PUT", url, b"signed body")
    assert raw(s3_endpoint, "PUT", f"/{bucket}/hashed", headers, b"signed body")[0] == 200
    old = _signed("GET", url, when=time.time() - 3600)
    status_, _, body = raw(s3_endpoint, "GET", f"/{bucket}/hashed", old)
    assert status_ == 403 and b"RequestTimeTooSkewed" in body


@pytest.mark.parametrize("size", [200_000, 700_000])  # read whole / streamed with hold-back
def test_aws_chunked_signed_payload(s3, s3_endpoint, bucket, size):
    payload = os.urandom(size)
    url = f"{s3_endpoint}/{bucket}/chunked"
    base = {"Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(payload))}
    headers = _signed("PUT", url, headers=base, payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    scope = headers["Authorization"].split("Credential=")[1].split(",")[0].split("/", 1)[1]
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    encoded = encode_chunked(payload, 65536, amz_date=headers["X-Amz-Date"], scope=scope,
                             seed=seed, secret=SECRET_KEY)
    assert raw(s3_endpoint, "PUT", f"/{bucket}/chunked", headers, encoded)[0] == 200
    assert s3.get_object(Bucket=bucket, Key="chunked")["Body"].read() == payload
    # one flipped byte in the second chunk: refused, and the stored object is unchanged
    headers = _signed("PUT", url, headers=base, payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    encoded = bytearray(encode_chunked(os.urandom(size), 65536,
                                       amz_date=headers["X-Amz-Date"], scope=scope, seed=seed,
                                       secret=SECRET_KEY))
    encoded[size - 1000] ^= 1  # in the last data chunk
    status_, _, body = raw(s3_endpoint, "PUT", f"/{bucket}/chunked", headers, bytes(encoded))
    assert status_ == 403 and b"SignatureDoesNotMatch" in body
    assert s3.get_object(Bucket=bucket, Key="chunked")["Body"].read() == payload


def test_presigned_put_with_unsigned_payload(s3, s3_endpoint, bucket):
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre"},
                                    ExpiresIn=60)
    parts = urlsplit(url)
    assert raw(s3_endpoint, "PUT", f"{parts.path}?{parts.query}", {}, b"via url")[0] == 200
    assert s3.get_object(Bucket=bucket, Key="pre")["Body"].read() == b"via url"


def test_anonymous_reads_only_where_allowed(s3, s3_cluster, s3_endpoint, bucket):
    s3.put_object(Bucket=bucket, Key="pub", Body=b"public")
    assert raw(s3_endpoint, "GET", f"/{bucket}/pub")[0] == 403
    with Client(s3_cluster.endpoint) as client:
        client.set_bucket_props(f"ais://{bucket}", anonymous_read=True)
    got = raw(s3_endpoint, "GET", f"/{bucket}/pub")
    assert got[0] == 200 and got[2] == b"public"
    assert raw(s3_endpoint, "GET", f"/{bucket}?list-type=2")[0] == 200
    put = raw(s3_endpoint, "PUT", f"/{bucket}/pub", {}, b"vandal")
    assert put[0] == 403 and b"AccessDenied" in put[2]
    assert raw(s3_endpoint, "DELETE", f"/{bucket}/pub")[0] == 403
    assert raw(s3_endpoint, "GET", "/")[0] == 403  # no anonymous ListBuckets
    assert s3.get_object(Bucket=bucket, Key="pub")["Body"].read() == b"public"


# -- addressing and bucket kinds --

def test_native_port_serves_s3_at_root(s3_cluster, bucket):
    native = boto3_client(s3_cluster.endpoint)
    native.put_object(Bucket=bucket, Key="both", Body=b"ports")
    assert native.get_object(Bucket=bucket, Key="both")["Body"].read() == b"ports"
    assert http_json(f"{s3_cluster.endpoint}/v1/health")[0] == 200  # native API unchanged


def test_cached_bucket_reads_through_and_writes_through(s3, s3_cluster, oracle):
    name = f"cached-{os.getpid()}"
    oracle.create_bucket(Bucket=name)
    oracle.put_object(Bucket=name, Key="at-source", Body=b"from the source")
    with Client(s3_cluster.endpoint) as client:
        client.create_bucket(f"s3://{name}", profile="lab")
    assert s3.get_object(Bucket=name, Key="at-source")["Body"].read() == b"from the source"
    large = os.urandom(5 * MiB + 17)  # a cold read spliced to the client as the target fetches
    oracle.put_object(Bucket=name, Key="large-at-source", Body=large)
    assert s3.get_object(Bucket=name, Key="large-at-source")["Body"].read() == large
    assert s3.get_object(Bucket=name, Key="large-at-source",
                         Range="bytes=100-199")["Body"].read() == large[100:200]
    s3.put_object(Bucket=name, Key="via-aisync", Body=b"written through",
                  ContentType="text/plain")
    assert oracle.get_object(Bucket=name, Key="via-aisync")["Body"].read() == \
        b"written through"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]]
    assert keys == ["at-source", "large-at-source", "via-aisync"]
    big = io.BytesIO(os.urandom(11 * MiB))
    s3.upload_fileobj(big, name, "mp-through")
    assert oracle.get_object(Bucket=name, Key="mp-through")["Body"].read() == big.getvalue()
    s3.delete_object(Bucket=name, Key="via-aisync")
    with pytest.raises(ClientError):
        oracle.head_object(Bucket=name, Key="via-aisync")


def test_second_proxy_verifies_with_keys_from_the_primary(s3, s3_cluster, bucket):
    second = s3_cluster.proxies[1]
    assert second.url != s3_cluster.endpoint
    other = boto3_client(second.url)
    other.put_object(Bucket=bucket, Key="via-second", Body=b"two proxies")
    assert s3.get_object(Bucket=bucket, Key="via-second")["Body"].read() == b"two proxies"
    bad = boto3_client(second.url, secret_key="wrong-secret-for-the-second-proxy")
    with pytest.raises(ClientError) as exc:
        bad.get_object(Bucket=bucket, Key="via-second")
    assert code(exc) == "SignatureDoesNotMatch"


def test_virtual_hosted_style(s3, s3_endpoint, bucket):
    s3.put_object(Bucket=bucket, Key="vh/key", Body=b"virtual host")
    port = urlsplit(s3_endpoint).port
    url = f"http://{bucket}.s3.test:{port}/vh/key"
    headers = {**_signed("GET", url), "Host": f"{bucket}.s3.test:{port}"}
    status_, _, body = raw(s3_endpoint, "GET", "/vh/key", headers)
    assert (status_, body) == (200, b"virtual host")
    headers = {**_signed("GET", f"http://{bucket}.s3.test:{port}/?list-type=2"),
               "Host": f"{bucket}.s3.test:{port}"}
    status_, _, body = raw(s3_endpoint, "GET", "/?list-type=2", headers)
    assert status_ == 200 and b"<Key>vh/key</Key>" in body


def test_expect_continue_refused_before_the_body(s3_endpoint, bucket):
    """A PUT with bad credentials and ``Expect: 100-continue`` is answered before any body
    byte is sent (the client never gets a 100)."""
    url = f"{s3_endpoint}/{bucket}/never"
    headers = _signed("PUT", url, b"x" * 1024)
    headers["Authorization"] = headers["Authorization"][:-4] + "0000"
    headers.update({"Expect": "100-continue", "Content-Length": "1024"})
    parts = urlsplit(s3_endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("PUT", f"/{bucket}/never", skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()  # headers only: the body waits for 100 Continue
        resp = conn.getresponse()
        assert resp.status == 403 and b"SignatureDoesNotMatch" in resp.read()
    finally:
        conn.close()


def test_no_unhandled_errors(s3_cluster):
    assert s3_cluster.unhandled_errors() == []
