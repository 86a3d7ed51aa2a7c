"""Multipart uploads through the targets' HTTP routes on a real cluster (1 proxy, 3 targets and
a moto server as the source of a cached bucket): placement, parts, listing, complete with the S3
ETag, S3 errors, races, write-through, bucket destroy, and a kill -9 between parts and complete.
Calls go to the object's HRW owner, found with the cluster map, as the S3 front end does."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from email.message import Message

import pytest
import xxhash

from aisync.client import Client
from aisync.cluster.maps import ClusterMap
from aisync.storage.uploads import MIN_PART_SIZE
from aisync.util.names import BucketRef
from tests.backends.moto_server import admin_client
from tests.harness import http_json, member_headers, wait_for

#: The cluster secret the native upload calls are signed with: uploads are intra-cluster routes
#: (the S3 front end calls them as a member), so this module calls them as a member too.
MEMBER_SECRET: list[str] = []


@pytest.fixture(scope="module")
def cluster(lab_cluster):
    MEMBER_SECRET[:] = [lab_cluster.cluster_secret]
    return lab_cluster


@pytest.fixture
def client(lab_client):
    return lab_client


@pytest.fixture
def bucket(client):
    name = f"mpu-{uuid.uuid4().hex[:8]}"
    client.create_bucket(f"ais://{name}")
    return name


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def call(url: str, method: str = "GET", body: bytes | dict | None = None,
         headers: dict | None = None) -> tuple[int, Message, dict]:
    """One request, redirects not followed: (status, headers (case-insensitive), JSON body)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    headers = dict(headers or {})
    if MEMBER_SECRET:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers.update(member_headers(MEMBER_SECRET[0], method, target, body or b""))
    req = urllib.request.Request(url, method=method, data=body, headers=headers)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=120) as resp:
            status, hdrs, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, raw = exc.code, exc.headers, exc.read()
    try:
        return status, hdrs, json.loads(raw) if raw else {}
    except ValueError:
        return status, hdrs, {"raw": raw.decode(errors="replace")}


def member_get(url: str, target: str) -> tuple[int, dict]:
    status, _, body = call(f"{url}{target}")
    return status, body


def owner_url(cluster, bucket: str, name: str, provider: str = "ais") -> str:
    cluster_map = ClusterMap.model_validate(cluster.cluster_map())
    return cluster_map.owner(BucketRef(name=bucket, provider=provider), name).url


class Upload:
    """The native calls the S3 front end makes, against the object's owner."""

    def __init__(self, cluster, bucket: str, name: str, provider: str = "ais",
                 attrs: dict | None = None) -> None:
        self.cluster, self.bucket, self.name, self.provider = cluster, bucket, name, provider
        headers = {"X-Aisync-Attrs": json.dumps(attrs)} if attrs else {}
        status, _, body = call(self.url(), "POST", headers=headers)
        assert status == 201, body
        self.id = body["upload_id"]

    def url(self, base: str | None = None, **query) -> str:
        base = base or owner_url(self.cluster, self.bucket, self.name, self.provider)
        if self.provider != "ais":
            query["provider"] = self.provider
        qs = urllib.parse.urlencode(query)
        return (f"{base}/v1/uploads/{self.bucket}/{urllib.parse.quote(self.name)}"
                + (f"?{qs}" if qs else ""))

    def part(self, number: int, data: bytes, **headers) -> tuple[int, dict]:
        status, _, body = call(self.url(upload_id=self.id, part=number), "PUT", data,
                               headers=headers)
        return status, body

    def parts(self, **query) -> tuple[int, dict]:
        status, _, body = call(self.url(upload_id=self.id, **query))
        return status, body

    def complete(self, parts: list[tuple[int, str]]) -> tuple[int, Message, dict]:
        return call(self.url(upload_id=self.id, complete=""), "POST",
                    {"parts": [{"part": n, "etag": e} for n, e in parts]})

    def abort(self) -> int:
        return call(self.url(upload_id=self.id), "DELETE")[0]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def s3_etag(parts: list[bytes]) -> str:
    return f"{md5(b''.join(hashlib.md5(p).digest() for p in parts))}-{len(parts)}"


def test_multipart_round_trip(cluster, client, bucket):
    name = "ckpt/step 100 é.pt"
    up = Upload(cluster, bucket, name, attrs={"type": "application/x-tar",
                                               "meta": {"run": "7"}})
    data = [os.urandom(MIN_PART_SIZE + 3), os.urandom(MIN_PART_SIZE), os.urandom(1234)]
    for number in (2, 3, 1):
        status, body = up.part(number, data[number - 1],
                               **{"X-Aisync-Md5": md5(data[number - 1])})
        assert status == 200, body
        assert body == {"part": number, "etag": md5(data[number - 1]),
                        "size": len(data[number - 1])}
    status, listed = up.parts(max_parts=2)
    assert status == 200, listed
    assert [(p["part"], p["etag"], p["size"]) for p in listed["parts"]] == [
        (1, md5(data[0]), len(data[0])), (2, md5(data[1]), len(data[1]))]
    assert (listed["truncated"], listed["next_part_marker"]) == (True, 2)
    assert (listed["bucket"], listed["name"], listed["upload_id"]) == (bucket, name, up.id)
    assert listed["attrs"] == {"type": "application/x-tar", "meta": {"run": "7"}}
    rest = up.parts(part_marker=2)[1]
    assert [p["part"] for p in rest["parts"]] == [3] and rest["truncated"] is False

    status, headers, done = up.complete([(i + 1, f'"{md5(d)}"') for i, d in enumerate(data)])
    assert status == 200, done
    whole = b"".join(data)
    assert done["etag"] == s3_etag(data) and headers["ETag"] == f'"{s3_etag(data)}"'
    assert (done["name"], done["size"]) == (name, len(whole))
    assert done["checksum"] == f"xxh3:{xxhash.xxh3_64_hexdigest(whole)}"
    assert client.get_object(bucket, name) == whole  # through the proxy, like any object
    status, headers, _ = call(f"{cluster.endpoint}/v1/objects/{bucket}/"
                              f"{urllib.parse.quote(name)}?mode=reverse", "HEAD")
    assert status == 200
    assert headers["ETag"] == f'"{s3_etag(data)}"'
    assert headers["Content-Type"] == "application/x-tar" and headers["x-amz-meta-run"] == "7"
    status, body = up.parts()
    assert (status, body["code"]) == (404, "NoSuchUpload")


def test_placement_redirects_and_not_found(cluster, bucket):
    name = "placed"
    owner = owner_url(cluster, bucket, name)
    other = next(t.url for t in cluster.targets if t.url != owner)
    status, headers, _ = call(f"{other}/v1/uploads/{bucket}/{name}", "POST")
    assert status == 307 and headers["Location"].startswith(owner)
    up = Upload(cluster, bucket, name)
    status, headers, _ = call(up.url(other, upload_id=up.id))  # not there: to the owner
    assert status == 307 and headers["Location"].startswith(owner)
    status, _, body = call(up.url(upload_id="0" * 32))
    assert (status, body["code"]) == (404, "NoSuchUpload")
    status, _, body = call(f"{owner}/v1/uploads/no-such-bucket/x", "POST")
    assert (status, body["code"]) == (404, "BucketNotFound")
    assert up.abort() == 204
    assert up.abort() == 404


def test_s3_errors(cluster, bucket):
    up = Upload(cluster, bucket, "errs")
    big, small = os.urandom(MIN_PART_SIZE), os.urandom(10)
    for number, data in ((1, big), (2, small), (3, small)):
        assert up.part(number, data)[0] == 200
    cases = [
        ([(2, md5(small)), (1, md5(big))], "InvalidPartOrder"),
        ([(1, md5(big)), (4, md5(small))], "InvalidPart"),
        ([(1, md5(small))], "InvalidPart"),
        ([(1, md5(big)), (2, md5(small)), (3, md5(small))], "EntityTooSmall"),
    ]
    for parts, code in cases:
        status, _, body = up.complete(parts)
        assert (status, body["code"]) == (400, code), parts
    status, body = up.part(2, b"evil", **{"X-Aisync-Md5": md5(b"good")})
    assert (status, body["code"]) == (400, "BadDigest")
    status, body = up.part(0, b"x")
    assert (status, body["code"]) == (400, "InvalidArgument")
    status, _, body = call(up.url(part=1), "PUT", b"x")  # no upload_id
    assert (status, body["code"]) == (400, "InvalidArgument")
    status, _, body = call(up.url(upload_id=up.id, complete=""), "POST", b"not json")
    assert (status, body["code"]) == (400, "InvalidArgument")
    status, _, done = up.complete([(1, md5(big)), (3, md5(small))])  # the upload is intact
    assert status == 200, done
    assert done["etag"] == s3_etag([big, small])


def test_listing_a_targets_uploads(cluster, bucket):
    names = ["b/2", "a", "b/1", "a"]
    made = [Upload(cluster, bucket, n) for n in names]
    seen = {}
    for target in cluster.targets:
        status, body = member_get(target.url, f"/v1/uploads/{bucket}")
        assert status == 200, body
        keys = [(u["name"].encode(), u["initiated"]) for u in body["uploads"]]
        assert keys == sorted(keys)
        seen.update({u["upload_id"]: u["name"] for u in body["uploads"]})
        prefixed = member_get(target.url, f"/v1/uploads/{bucket}?prefix=b/")[1]["uploads"]
        assert all(u["name"].startswith("b/") for u in prefixed)
    assert seen == {u.id: u.name for u in made}


def test_racing_completes_and_abort(cluster, client, bucket):
    data = os.urandom(MIN_PART_SIZE + 1)
    up = Upload(cluster, bucket, "race")
    assert up.part(1, data)[0] == 200
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: up.complete([(1, md5(data))])[0], range(2)))
    assert sorted(results) == [200, 404]
    assert client.get_object(bucket, "race") == data

    up = Upload(cluster, bucket, "race2")
    assert up.part(1, data)[0] == 200
    with ThreadPoolExecutor(2) as pool:
        done = pool.submit(up.complete, [(1, md5(data))])
        aborted = pool.submit(up.abort)
        outcome = (done.result()[0], aborted.result())
    assert outcome in ((200, 404), (404, 204))
    stored = client.head_object(bucket, "race2") if outcome[0] == 200 else None
    assert stored is None or stored.size == len(data)


def test_cached_bucket_writes_through_to_the_source(cluster, client, moto):
    name = f"s3mpu-{uuid.uuid4().hex[:8]}"
    admin = admin_client(moto)
    admin.create_bucket(Bucket=name)
    client.create_bucket(f"s3://{name}", profile="lab")
    up = Upload(cluster, name, "out/model.bin", provider="s3", attrs={"type": "text/x-test"})
    data = [os.urandom(MIN_PART_SIZE + 11), os.urandom(77)]
    for i, d in enumerate(data, 1):
        assert up.part(i, d)[0] == 200
    status, _, done = up.complete([(i, md5(d)) for i, d in enumerate(data, 1)])
    assert status == 200, done
    assert done["etag"] == s3_etag(data)
    got = admin.get_object(Bucket=name, Key="out/model.bin")
    assert got["Body"].read() == b"".join(data)  # at the source of truth
    assert got["ContentType"] == "text/x-test"
    assert client.get_object(f"s3://{name}", "out/model.bin") == b"".join(data)


def test_failed_write_through_commits_nothing_and_keeps_the_upload(cluster, client, moto):
    name = f"s3gone-{uuid.uuid4().hex[:8]}"
    admin = admin_client(moto)
    admin.create_bucket(Bucket=name)
    client.create_bucket(f"s3://{name}", profile="lab")
    up = Upload(cluster, name, "k", provider="s3")
    assert up.part(1, b"payload")[0] == 200
    admin.delete_bucket(Bucket=name)  # the source refuses the write
    status, _, body = up.complete([(1, md5(b"payload"))])
    assert status >= 400, body
    assert client.list_objects(f"s3://{name}", cached=True).objects == []
    assert up.parts()[0] == 200  # still there, for a retry
    admin.create_bucket(Bucket=name)
    status, _, body = up.complete([(1, md5(b"payload"))])
    assert status == 200, body
    assert admin.get_object(Bucket=name, Key="k")["Body"].read() == b"payload"


def test_gc_worker_is_reported(cluster):
    def gc_status(target) -> dict | None:
        workers = http_json(f"{target.url}/v1/node/status")[1]["workers"]
        gc = next(w for w in workers if w["name"] == "uploads-gc")
        return gc if gc["runs"] >= 1 else None  # the first sweep runs at start

    for target in cluster.targets:
        gc = wait_for(lambda t=target: gc_status(t), 30, f"{target.id}'s first uploads sweep")
        assert gc["state"] == "running" and gc["max_age_s"] == 7 * 86400
        assert gc["last_error"] is None


def test_destroying_a_bucket_drops_its_uploads(cluster, client, bucket):
    up = Upload(cluster, bucket, "doomed")
    assert up.part(1, b"x")[0] == 200
    client.destroy_bucket(bucket)
    client.create_bucket(bucket)
    assert up.parts()[0] == 404
    for target in cluster.targets:
        assert member_get(target.url, f"/v1/uploads/{bucket}")[1]["uploads"] == []


def test_kill_9_between_parts_and_complete(cluster, client, bucket):
    name = "survivor.bin"
    up = Upload(cluster, bucket, name)
    data = [os.urandom(MIN_PART_SIZE + 5), os.urandom(4321)]
    for i, d in enumerate(data, 1):
        assert up.part(i, d)[0] == 200
    owner = next(t for t in cluster.targets
                 if t.url == owner_url(cluster, bucket, name))
    cluster.kill(owner)  # SIGKILL: no clean shutdown
    cluster.start_node(owner)
    cluster.wait_ready()
    status, listed = up.parts()
    assert status == 200 and [p["size"] for p in listed["parts"]] == [len(d) for d in data]
    status, _, done = up.complete([(i, md5(d)) for i, d in enumerate(data, 1)])
    assert status == 200, done
    assert done["etag"] == s3_etag(data)
    with Client(cluster.endpoint) as fresh:
        assert fresh.get_object(bucket, name) == b"".join(data)
