"""Bad names and bad requests get a clear 4xx JSON error with a stable code, never a 500."""

from __future__ import annotations

import http.client
import json
import uuid
from urllib.parse import urlparse

import pytest

from tests.harness import free_port, member_headers


def raw(cluster, method: str, path: str, body: bytes | None = None,
        headers: dict | None = None, as_admin: bool = True) -> tuple[int, dict]:
    """Send exactly ``path`` (no client-side normalization of '..' or '%00'), with the admin
    token unless ``as_admin`` is false (``headers`` then carry the credentials)."""
    u = urlparse(cluster.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path, body=body,
                     headers={**(admin(cluster) if as_admin else {}), **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        code = resp.getheader("X-Aisync-Error-Code")
        payload = json.loads(data) if data and resp.getheader("Content-Type", "").startswith(
            "application/json") else {}
        if code and "code" not in payload:
            payload["code"] = code
        return resp.status, payload
    finally:
        conn.close()


def admin(cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.token}"}


@pytest.fixture(scope="module")
def bucket(cluster):
    name = f"bad-{uuid.uuid4().hex[:8]}"
    assert raw(cluster, "PUT", f"/v1/buckets/{name}")[0] == 201
    return name


@pytest.mark.parametrize("path,code", [
    ("/v1/objects/{b}/a/../b", "InvalidObjectName"),
    ("/v1/objects/{b}/./a", "InvalidObjectName"),
    ("/v1/objects/{b}/a%00b", "InvalidObjectName"),
    ("/v1/objects/{b}/" + "n" * 1025, "InvalidObjectName"),
    ("/v1/objects/{b}//lead", "InvalidObjectName"),
    ("/v1/objects/bad..bucket/x", "InvalidBucketName"),
    ("/v1/objects/-dash/x", "InvalidBucketName"),
    ("/v1/objects/" + "b" * 64 + "/x", "InvalidBucketName"),
    ("/v1/objects/{b}/x?provider=nosuch", "InvalidArgument"),
    ("/v1/objects/{b}/x?mode=sideways", "InvalidArgument"),
])
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_bad_names_get_400(cluster, bucket, path, code, method):
    status, body = raw(cluster, method, path.format(b=bucket), body=b"x" if method == "PUT"
                       else None)
    assert status == 400, body
    assert body["code"] == code
    if method != "HEAD":
        assert body.get("message")


@pytest.mark.parametrize("query", ["limit=0", "limit=ten", "limit=100001", "prefix=a%00"])
def test_bad_listing_parameters_get_400(cluster, bucket, query):
    status, body = raw(cluster, "GET", f"/v1/buckets/{bucket}?{query}")
    assert (status, body["code"]) == (400, "InvalidArgument")


def test_unknown_routes_and_methods(cluster, bucket):
    status, body = raw(cluster, "GET", "/v1/nothing-here")
    assert (status, body["code"]) == (404, "NotFound")
    assert "/v1/nothing-here" in body["message"]
    status, body = raw(cluster, "POST", f"/v1/objects/{bucket}/x")
    assert (status, body["code"]) == (405, "MethodNotAllowed")
    status, body = raw(cluster, "POST", f"/v1/buckets/{bucket}")
    assert status == 405


def test_bad_range_is_416_with_content_range(cluster, bucket):
    assert raw(cluster, "PUT", f"/v1/objects/{bucket}/r?mode=reverse", body=b"0123456789")[0] \
        == 200
    for header in ("bytes=10-", "bytes=abc", "bytes=5-2", "bytes=-0"):
        status, body = raw(cluster, "GET", f"/v1/objects/{bucket}/r?mode=reverse",
                           headers={"Range": header})
        assert (status, body["code"]) == (416, "InvalidRange"), header


def test_short_body_is_rejected_and_not_stored(cluster, bucket):
    u = urlparse(cluster.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("PUT", f"/v1/objects/{bucket}/short?mode=reverse")
    conn.putheader("Content-Length", "1000")
    conn.putheader("Authorization", f"Bearer {cluster.token}")
    conn.endheaders()
    conn.send(b"only-a-few-bytes")
    conn.sock.shutdown(1)  # half-close: the rest never comes
    try:
        conn.getresponse().read()
    except (http.client.HTTPException, ConnectionError):
        pass
    conn.close()
    status, body = raw(cluster, "GET", f"/v1/objects/{bucket}/short?mode=reverse")
    assert (status, body["code"]) == (404, "ObjectNotFound")


def test_bucket_errors(cluster, bucket):
    status, body = raw(cluster, "PUT", f"/v1/buckets/{bucket}")
    assert (status, body["code"]) == (409, "BucketAlreadyExists")
    status, body = raw(cluster, "DELETE", "/v1/buckets/never-made")
    assert (status, body["code"]) == (404, "BucketNotFound")
    status, body = raw(cluster, "HEAD", "/v1/buckets/never-made")
    assert (status, body["code"]) == (404, "BucketNotFound")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: never a real cloud endpoint
    status, body = raw(cluster, "PUT", "/v1/buckets/x?provider=s3",
                       body=json.dumps({"settings": {"endpoint_url": dead}}).encode())
    # endpoints come from the nodes' backend profiles, never from a request: refused before I/O
    assert (status, body["code"]) == (400, "InvalidArgument"), body
    assert "endpoint_url" in body["message"] and "profile" in body["message"]
    status, body = raw(cluster, "PUT", "/v1/buckets/x?provider=s3", body=json.dumps(
        {"settings": {"endpoint_url": dead, "secret_key": "s3cr3t"}}).encode())
    assert (status, body["code"]) == (400, "InvalidArgument")
    assert "s3cr3t" not in body["message"] and "profile" in body["message"]
    for props, code in [({"path": "/x"}, "InvalidArgument"),              # unknown property
                        ({"settings": {"nope": 1}}, "InvalidArgument"),  # fs needs a path
                        ({"profile": "missing"}, "ConfigError")]:
        status, body = raw(cluster, "PUT", "/v1/buckets/y?provider=fs",
                           body=json.dumps(props).encode())
        assert (status, body["code"]) == (400, code), props
    status, body = raw(cluster, "PUT", "/v1/buckets/z", body=b"[1, 2]")
    assert (status, body["code"]) == (400, "InvalidArgument")
    assert raw(cluster, "HEAD", "/v1/buckets/x?provider=s3")[0] == 404  # nothing was created


def test_malformed_metasync_is_400_not_500(cluster):
    """Sent as a member (signed: only members reach these routes' parsers)."""
    for method, path, body in [("PUT", "/v1/metasync", b"{not json"),
                               ("PUT", "/v1/metasync", b'{"cluster_map": {"x": 1}}'),
                               ("POST", "/v1/cluster/join", b"[]")]:
        signed = member_headers(cluster.cluster_secret, method, path, body)
        status, answer = raw(cluster, method, path, body=body, headers=signed, as_admin=False)
        assert (status, answer["code"]) == (400, "InvalidArgument"), (path, body, answer)
        status, answer = raw(cluster, method, path, body=body)  # the admin token: not a member
        assert (status, answer["code"]) == (401, "Unauthorized"), (path, body, answer)
