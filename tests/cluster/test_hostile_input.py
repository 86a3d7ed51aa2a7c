"""Client mistakes a fuzzer found to be 500s (or 502s) are clear 4xx errors, and change nothing.

* JSON nested 1,000+ deep (and NaN, 1e999, 5,000-digit numbers, bad UTF-8) on every JSON route
  of proxies and targets, for clients and for cluster members → 400 ``InvalidArgument``;
* ``X-Aisync-Attrs`` that is too deep or holds what no response header can carry → 400, and the
  object is not stored (every later GET would have failed);
* ``Range: bytes=<5,000 digits>-`` at a target, through the reverse proxy and S3 → 416, and a
  last position or suffix of any length is clamped as its value says;
* an ``fs://`` object name with a path component over 255 bytes → 400 ``InvalidObjectName``
  (S3: ``KeyTooLongError``), never a 502 or 500.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from aisync.client import Client
from tests.harness import LocalCluster, bearer, http_json, member_headers, raw_http
from tests.s3.conftest import ACCESS_KEY, SECRET_KEY, boto3_client

DEEP_BODIES = {
    "arrays-5000": b"[" * 5_000 + b"]" * 5_000,
    "objects-1500": b'{"a":' * 1_500 + b"{}" + b"}" * 1_500,
    "inside-a-field": b'{"kind": "sync", "bucket": ' + b"[" * 2_000 + b"]" * 2_000 + b"}",
    "utf16-arrays": ("[" * 3_000 + "]" * 3_000).encode("utf-16"),
    "nan": b'{"name": NaN}',
    "inf": b'{"max_staleness": 1e999, "map_version": 1e999}',
    "digits": b'{"map_version": ' + b"9" * 5_000 + b"}",
    "bad-utf8": b'{"name": "\xc3\x28\xff"}',
}
#: Every route that takes a JSON body from a client (the admin token), on the proxy.
CLIENT_ROUTES = [("PUT", "/v1/buckets/hostile-new"), ("PATCH", "/v1/buckets/{bucket}"),
                 ("POST", "/v1/jobs"), ("POST", "/v1/schedules"),
                 ("PUT", "/v1/remotes/hostile"), ("POST", "/v1/auth/keys")]
#: Routes that take JSON from cluster members: (node role, method, path).
MEMBER_ROUTES = [("proxy", "PUT", "/v1/metasync"), ("proxy", "POST", "/v1/cluster/join"),
                 ("target", "PUT", "/v1/metasync"), ("target", "POST", "/v1/jobs/j1/batch")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Local reads off and a read worker per target: S3 GETs relay over HTTP and a worker may
    serve a target's GETs (two more places a Range is parsed)."""
    with LocalCluster(targets=2, proxies=1,
                      extra={"http": {"local_reads": False, "read_workers": 1}}) as c:
        with Client(c.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "tests")
        yield c


@pytest.fixture(scope="module")
def bucket(cluster):
    name = f"hostile-{uuid.uuid4().hex[:6]}"
    with Client(cluster.endpoint) as client:
        client.create_bucket(f"ais://{name}")
        client.put_object(f"ais://{name}", "ten", b"0123456789")
    return name


@pytest.fixture(scope="module")
def s3(cluster):
    return boto3_client(cluster.endpoint)




def code_of(headers, data: bytes) -> str:
    if data[:1] == b"{":
        return json.loads(data)["code"]
    return headers.get("X-Aisync-Error-Code", "")


def state(cluster) -> dict:
    """What a refused request must leave as it was."""
    snapshot = {}
    for path in ("/v1/buckets", "/v1/jobs", "/v1/schedules", "/v1/remotes", "/v1/auth/keys",
                 "/v1/cluster/map"):
        status, body = http_json(f"{cluster.endpoint}{path}")
        assert status == 200, (path, body)
        snapshot[path] = body
    return snapshot


def redirected(cluster, method: str, path: str) -> tuple[str, str]:
    """(target URL, path and signed query) of the proxy's redirect for ``method path``."""
    status, headers, data = raw_http(cluster.endpoint, method, path, headers=bearer())
    assert status == 307, data
    location = urlsplit(headers["Location"])
    return f"http://{location.netloc}", f"{location.path}?{location.query}"


@pytest.mark.parametrize("kind", list(DEEP_BODIES))
def test_hostile_json_on_client_routes_is_400_and_changes_nothing(cluster, bucket, kind):
    before = state(cluster)
    for method, path in CLIENT_ROUTES:
        status, headers, data = raw_http(cluster.endpoint, method, path.format(bucket=bucket),
                                    DEEP_BODIES[kind],
                                    {"Content-Type": "application/json", **bearer()})
        assert (status, code_of(headers, data)) == (400, "InvalidArgument"), (method, path, data)
    assert state(cluster) == before


@pytest.mark.parametrize("kind", list(DEEP_BODIES))
def test_hostile_json_from_members_is_400_and_changes_nothing(cluster, kind):
    before = state(cluster)
    body = DEEP_BODIES[kind]
    for role, method, path in MEMBER_ROUTES:
        node = next(n for n in cluster.nodes if n.role == role)
        headers = {"Content-Type": "application/json",
                   **member_headers(cluster.cluster_secret, method, path, body)}
        status, answer, data = raw_http(node.url, method, path, body, headers)
        assert (status, code_of(answer, data)) == (400, "InvalidArgument"), (role, path, data)
    assert state(cluster) == before


@pytest.mark.parametrize("attrs", [
    "[" * 3_000 + "]" * 3_000,
    '{"meta": ' + "[" * 100 + "]" * 100 + "}",
    '["type", "meta"]',
    '{"type": 5}',
    '{"meta": ["a", "b"]}',
    '{"meta": {"k": 1}}',
    '{"meta": {"bad key": "v"}}',
    '{"meta": {"k": "line\\r\\nX-Injected: 1"}}',
    '{"meta": {"k": "\\udc80"}}',
    '{"headers": {"X-Not-Stored": "v"}}',
    '{"headers": {"Cache-Control": "a\\nb"}}',
    '{"headers": "Cache-Control: x"}',
])
def test_bad_stored_attributes_are_400_and_store_nothing(cluster, bucket, attrs):
    name = f"attrs-{uuid.uuid4().hex[:8]}"
    path = f"/v1/objects/{bucket}/{name}"
    url, target = redirected(cluster, "PUT", path)
    status, headers, data = raw_http(url, "PUT", target, b"payload", {"X-Aisync-Attrs": attrs})
    assert (status, code_of(headers, data)) == (400, "InvalidArgument"), data
    status, _, _ = raw_http(cluster.endpoint, "GET", f"{path}?mode=reverse", headers=bearer())
    assert status == 404


def test_good_stored_attributes_are_kept(cluster, bucket):
    path = f"/v1/objects/{bucket}/attrs-good"
    url, target = redirected(cluster, "PUT", path)
    attrs = {"type": "text/plain", "meta": {"origin": "caf\u00e9"},
             "headers": {"cache-control": "max-age=5"}}
    status, _, data = raw_http(url, "PUT", target, b"payload", {"X-Aisync-Attrs": json.dumps(attrs)})
    assert status == 200, data
    status, headers, data = raw_http(cluster.endpoint, "GET", f"{path}?mode=reverse",
                                headers=bearer())
    assert (status, data) == (200, b"payload")
    assert headers["Content-Type"] == "text/plain"
    assert headers["Cache-Control"] == "max-age=5"


HUGE = "9" * 5_000


@pytest.mark.parametrize("header,status,body", [
    (f"bytes={HUGE}-", 416, b""),
    ("bytes=" + "1" * 4_301 + "-" + "2" * 3_000, 416, b""),  # within aiohttp's 8 KiB field
    (f"bytes=2-{HUGE}", 206, b"23456789"),
    (f"bytes=-{HUGE}", 206, b"0123456789"),
], ids=["huge-start", "huge-both", "huge-end", "huge-suffix"])
def test_range_positions_of_any_length(cluster, bucket, s3, header, status, body):
    path = f"/v1/objects/{bucket}/ten"
    answers = {"reverse proxy": raw_http(cluster.endpoint, "GET", f"{path}?mode=reverse",
                                    headers={"Range": header, **bearer()})}
    for _ in range(3):  # the target's main process or its read worker (SO_REUSEPORT)
        url, target = redirected(cluster, "GET", path)
        answers["target"] = raw_http(url, "GET", target, headers={"Range": header})
        assert answers["target"][0] == status
    for where, (got, headers, data) in answers.items():
        assert got == status, (where, data[:200])
        if status == 416:
            assert code_of(headers, data) == "InvalidRange"
            assert headers["Content-Range"] == "bytes */10"
        else:
            assert data == body
    if status == 416:
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=bucket, Key="ten", Range=header)
        assert exc.value.response["Error"]["Code"] == "InvalidRange"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    else:
        assert s3.get_object(Bucket=bucket, Key="ten", Range=header)["Body"].read() == body


def test_fs_name_component_over_255_bytes_is_invalid_object_name(cluster, s3, tmp_path):
    root = tmp_path / "fs-source"
    root.mkdir()
    (root / "present").write_bytes(b"here")
    name = f"longnames-{uuid.uuid4().hex[:6]}"
    with Client(cluster.endpoint) as client:
        client.create_bucket(f"fs://{name}", settings={"path": str(root)})
    long_name = "dir/" + "n" * 256
    path = f"/v1/objects/{name}/{long_name}?provider=fs&mode=reverse"
    for method, body in (("PUT", b"data"), ("GET", None), ("HEAD", None), ("DELETE", None)):
        status, headers, data = raw_http(cluster.endpoint, method, path, body, bearer())
        assert (status, code_of(headers, data)) == (400, "InvalidObjectName"), (method, data)
    for call, kwargs in ((s3.put_object, {"Body": b"data"}), (s3.get_object, {}),
                         (s3.delete_object, {})):
        with pytest.raises(ClientError) as exc:
            call(Bucket=name, Key=long_name, **kwargs)
        error = exc.value.response
        assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == \
            (400, "KeyTooLongError"), call
    assert sorted(p.name for p in root.iterdir()) == ["present"]  # nothing written
    assert s3.get_object(Bucket=name, Key="present")["Body"].read() == b"here"
