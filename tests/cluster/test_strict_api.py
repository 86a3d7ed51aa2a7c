"""The native API never acts on a request it does not understand: every route of a proxy and of
a target refuses a query parameter it does not declare, a parameter given twice, a body where it
takes none and a JSON body that is not its shape, with 400 ``InvalidArgument``, and nothing in
the cluster changes.

The routes come from the routers themselves (a ``ProxyNode`` and a ``TargetNode`` built in this
process from a throwaway config, never started), so a route added later is walked by itself; a
path variable the walk does not know how to fill fails the test instead of being skipped. Path
variables are filled with names that exist (a bucket holding an object, a finished job, a
schedule, an access key, a multipart upload with a part) and every request carries the
credential its route takes and the body it would act on, so without the rules most of them
would do something: destroy the bucket, overwrite the object, start a job, admit a node, push a
map. After each test the cluster's state (buckets, the object's bytes and the listing, the
upload and its parts, cluster and bucket map versions at the proxy and the target, keys,
schedules, jobs, remotes) is what it was.

Also here: the two requests of the official ``aistore`` SDK that once destroyed a bucket (a
multi-object delete) and overwrote an object with nothing (a copy), sent by that SDK.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aistore.sdk import Client as AistoreClient
from aistore.sdk.errors import AISError
from aistore.sdk.retry_config import RetryConfig
from tenacity import Retrying, stop_after_attempt
from urllib3.util.retry import Retry

from aisync.auth import Access
from aisync.auth.redirects import PARAM as REDIRECT_PARAM
from aisync.client import Client
from aisync.node.router import BODY_KINDS, Route, Router
from tests.harness import LocalCluster, http_json, member_headers, wait_job
from tests.routes import Answer, cluster_state, raw_request
from tests.routes import declared_routes as routes_of_nodes

BUCKET = "strict"
NEW_BUCKET = "strict-new"
SOURCE = "fs://strict-src"
OBJECT = "obj"
UPLOADED = "obj-up"
DATA = b"bytes no misunderstood request may change " * 50
SCHEDULE = "strict-nightly"
REMOTE = "strict-remote"
#: A query parameter no route takes.
UNKNOWN = "strict_unknown"
#: What the aistore SDK sends to delete two objects (it once destroyed the whole bucket).
LISTRANGE = {"action": "delete-listrange", "value": {"objnames": [OBJECT, "other"]}}
#: A value each declared parameter takes, for the repeated-parameter requests.
VALUES = {"provider": "ais", "limit": "1", "since": "0", "wait": "0", "part": "1",
          "part_marker": "0", "max_parts": "1", "mode": "redirect"}


# ------------------------------------------------------------------------------------ routes


@dataclass(frozen=True)
class Case:
    role: str  # "proxy" or "target": whose router declares it
    method: str
    pattern: str
    route: Route

    @property
    def id(self) -> str:
        return f"{self.role} {self.method} {self.pattern}"

    @property
    def query(self) -> frozenset[str]:
        assert self.route.query is not None
        return self.route.query


def declared_routes() -> tuple[list[Case], list[tuple[str, str, Route]]]:
    """Every route of a proxy's and a target's router, and of a target's read worker (see
    :mod:`tests.routes`)."""
    nodes, reader_routes = routes_of_nodes()
    return [Case(role, method, pattern, route) for role, method, pattern, route in nodes], \
        reader_routes


CASES, READER_ROUTES = declared_routes()


def find(role: str, method: str, pattern: str) -> Case:
    return next(c for c in CASES if (c.role, c.method, c.pattern) == (role, method, pattern))


# ---------------------------------------------------------------------------------- requests


@dataclass
class World:
    """The live cluster and the real names path variables, queries and bodies are filled
    with."""

    cluster: LocalCluster
    job_id: str
    access_key: str
    upload_id: str
    part_etag: str

    def node_url(self, case: Case) -> str:
        return self.cluster.primary.url if case.role == "proxy" else self.cluster.targets[0].url

    def path(self, case: Case) -> str:
        values = {"bucket": NEW_BUCKET if (case.method, case.pattern) == (
                      "PUT", "/v1/buckets/{bucket}") else BUCKET,
                  "job": self.job_id, "alias": REMOTE, "access_key": self.access_key}
        out = []
        for segment in case.pattern.strip("/").split("/"):
            if not segment.startswith("{"):
                out.append(segment)
                continue
            var = segment[1:-1].split(":")[0]
            if var == "name":  # a schedule's name, an upload's object or an object
                value = SCHEDULE if case.pattern.startswith("/v1/schedules/") else \
                    UPLOADED if case.pattern.startswith("/v1/uploads/") else OBJECT
            elif var in values:
                value = values[var]
            else:
                raise AssertionError(f"{case.id}: the walk does not know what real value the "
                                     f"path variable {{{var}}} takes: add it here")
            out.append(urllib.parse.quote(value, safe=""))
        return "/" + "/".join(out)

    def query(self, case: Case) -> dict[str, str]:
        """The parameters that make the request mean what it would act on."""
        query = {}
        if "upload_id" in case.query:
            query["upload_id"] = self.upload_id
        if case.pattern.startswith("/v1/uploads/{bucket}/") and case.method == "PUT":
            query["part"] = "1"  # would replace the upload's part
        if case.pattern.startswith("/v1/uploads/{bucket}/") and case.method == "POST":
            query["complete"] = "1"  # would complete the upload
        return query

    def body(self, case: Case) -> bytes | None:
        """The body the route would act on (None for a route that takes none)."""
        if case.route.body == "none":
            return None
        if case.route.body == "stream":
            return b"bytes that must not land"
        key = (case.method, case.pattern)
        if key == ("PUT", "/v1/metasync"):  # a newer bucket map without the bucket
            _, bucket_map = http_json(f"{self.node_url(case)}/v1/cluster/bucket-map")
            bucket_map["version"] += 1
            bucket_map["buckets"] = {k: v for k, v in bucket_map["buckets"].items() if BUCKET not in k}
            doc: object = {"bucket_map": bucket_map}
        elif key == ("POST", "/v1/uploads/{bucket}/{name:.+}"):
            doc = {"parts": [{"part": 1, "etag": self.part_etag}]}
        else:
            doc = {
                ("PUT", "/v1/buckets/{bucket}"): {},
                ("PATCH", "/v1/buckets/{bucket}"): {"anonymous_read": True},
                ("POST", "/v1/jobs"): {"kind": "sync", "bucket": SOURCE},
                ("POST", "/v1/schedules"): {"name": "strict-other", "cron": "0 3 * * *",
                                            "job": {"kind": "sync", "bucket": SOURCE}},
                ("PUT", "/v1/remotes/{alias}"): {"urls": ["http://127.0.0.1:9"]},
                ("POST", "/v1/auth/keys"): {"description": "minted by a misunderstanding"},
                ("POST", "/v1/cluster/join"): {"id": "strict-rogue", "role": "target",
                                               "url": "http://127.0.0.1:9"},
                ("POST", "/v1/jobs/{job}/batch"): {
                    "spec": {"kind": "sync", "bucket": f"ais://{BUCKET}"}, "targets": 1,
                    "actions": [{"op": "delete", "name": OBJECT}]},
            }.get(key)
            if doc is None:
                raise AssertionError(f"{case.id}: the walk does not know what JSON body this "
                                     f"route acts on: add it here")
        return json.dumps(doc).encode()

    def request(self, case: Case, query: dict[str, str] | list[tuple[str, str]],
                body: bytes | None, *, chunked: bool = False) -> Answer:
        """``case`` with the credential its route takes (member routes and a target's object
        routes: signed as a member; the others: the admin token)."""
        target = self.path(case)
        if query:
            target += "?" + urllib.parse.urlencode(query)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if case.route.access in (Access.MEMBER, Access.OBJECT):
            headers.update(member_headers(self.cluster.cluster_secret, case.method, target,
                                          b"" if chunked else body or b"", member="proxy-0"))
        elif case.route.access is Access.CLIENT:
            headers["Authorization"] = f"Bearer {self.cluster.token}"
        return raw_request(self.node_url(case), case.method, target, body, headers, chunked=chunked)


def snapshot(world: World) -> dict:
    """Everything a misunderstood request could change, as the proxy and the target tell it:
    the state every refused request must leave (:func:`tests.routes.cluster_state`), and the
    multipart upload in progress."""
    cluster = world.cluster
    target = cluster.targets[0].url

    def member_get(path: str) -> dict:
        answer = raw_request(target, "GET", path,
                             headers=member_headers(cluster.cluster_secret, "GET", path))
        assert answer.status == 200, (path, answer)
        return answer.doc

    upload = member_get(f"/v1/uploads/{BUCKET}/{UPLOADED}?upload_id={world.upload_id}")
    return {
        **cluster_state(cluster.primary.url, target, BUCKET, OBJECT),
        "uploads": member_get(f"/v1/uploads/{BUCKET}"),
        "parts": [(p["part"], p["etag"], p["size"]) for p in upload["parts"]],
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with LocalCluster(targets=1, proxies=1) as cluster:
        share = tmp_path_factory.mktemp("strict-share")
        (share / "src-object").write_bytes(b"from the share")
        with Client(cluster.endpoint, timeout=30) as client:
            client.create_bucket(BUCKET)
            client.put_object(BUCKET, OBJECT, DATA)
            client.create_bucket(SOURCE, settings={"path": str(share)})
            job = client.start_job(kind="sync", bucket=SOURCE)
            assert wait_job(cluster, job["id"])["state"] == "succeeded"
            client.add_schedule(SCHEDULE, job={"kind": "sync", "bucket": SOURCE},
                                cron="0 2 * * *")
            key = client.create_access_key(description="strict routes")
        target = cluster.targets[0].url
        path = f"/v1/uploads/{BUCKET}/{UPLOADED}"
        created = raw_request(target, "POST", path,
                       headers=member_headers(cluster.cluster_secret, "POST", path))
        assert created.status == 201, created
        upload_id = created.doc["upload_id"]
        part_path = f"{path}?upload_id={upload_id}&part=1"
        part = raw_request(target, "PUT", part_path, b"part one",
                    member_headers(cluster.cluster_secret, "PUT", part_path, b"part one"))
        assert part.status == 200, part
        yield World(cluster, job["id"], key["access_key"], upload_id, part.doc["etag"])


@pytest.fixture
def unchanged(world) -> Iterator[None]:
    """The test's requests changed nothing (checked after the test)."""
    before = snapshot(world)
    yield
    assert snapshot(world) == before


def expect_invalid(failures: list[str], case: Case, answer: Answer, *words: str) -> None:
    """400 ``InvalidArgument`` whose message holds ``words`` (a HEAD answer has no body: its
    code travels in a header)."""
    if case.method == "HEAD":
        if answer.status != 400 or answer.code != "InvalidArgument":
            failures.append(f"{case.id}: {answer.status} {answer.code}")
        return
    message = str(answer.doc.get("message", ""))
    if answer.status != 400 or answer.doc.get("code") != "InvalidArgument" or not all(
            w in message for w in words):
        failures.append(f"{case.id}: {answer.status} {answer.doc}")


def check(failures: list[str]) -> None:
    assert not failures, "requests not refused as they should be:\n" + "\n".join(failures)


# ------------------------------------------------------------------------ the declarations


def test_every_route_declares_its_query_and_its_body():
    assert len(CASES) > 50  # the routers were really read
    assert {c.role for c in CASES} == {"proxy", "target"}
    for case in CASES:
        assert isinstance(case.route.query, frozenset), case.id
        assert case.route.body in BODY_KINDS, case.id
        assert (REDIRECT_PARAM in case.query) == (case.route.access is Access.OBJECT), case.id


def test_a_route_without_a_declaration_is_refused_at_once():
    router = Router()

    async def handler(request):
        raise AssertionError("never called")

    with pytest.raises(TypeError):
        router.add("GET", "/v1/new", handler)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        router.add("GET", "/v1/new", handler, query="provider")
    with pytest.raises(ValueError):
        router.add("GET", "/v1/new", handler, query=(), body="yaml")
    assert router.routes() == []


def test_what_a_proxy_forwards_its_target_accepts():
    """A proxy hands an object request on with its query as sent (a redirect, a reverse
    relay), and a target's read worker hands it on to the main process: all three accept the
    same parameters for each method."""
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        pattern = "/v1/objects/{bucket}/{name:.+}"
        proxy, target = find("proxy", method, pattern), find("target", method, pattern)
        assert proxy.query | {REDIRECT_PARAM} == target.query, method
        assert proxy.route.body == target.route.body, method
    reader = {(m, p): r for m, p, r in READER_ROUTES}
    assert set(reader) == {(m, "/v1/objects/{bucket}/{name:.+}") for m in ("GET", "HEAD", "PUT")}
    for (method, pattern), route in reader.items():
        assert route.query == find("target", method, pattern).query, method
        assert route.body == find("target", method, pattern).route.body, method


# --------------------------------------------------------------------------- the live walk


def test_unknown_query_parameters_are_refused(world, unchanged):
    """Each request is the one its route would act on, plus a parameter it does not take:
    refused, naming the parameter and the ones the route accepts."""
    failures = []
    for case in CASES:
        query = {**world.query(case), UNKNOWN: "1"}
        answer = world.request(case, query, world.body(case))
        expect_invalid(failures, case, answer, UNKNOWN, "accepted")
        if case.method != "HEAD" and answer.status == 400:
            details = answer.doc.get("details") or {}
            if details.get("unknown") != [UNKNOWN] or details.get("accepted") != sorted(
                    case.query - {REDIRECT_PARAM}):
                failures.append(f"{case.id}: details {details}")
    check(failures)


def test_the_aistore_sdk_object_parameters_are_refused(world, unchanged):
    """The copy that overwrote an object with 0 bytes, as raw requests to the proxy and to the
    target (the SDK test below sends it through the SDK)."""
    failures = []
    for role in ("proxy", "target"):
        case = find(role, "PUT", "/v1/objects/{bucket}/{name:.+}")
        query = {"provider": "ais", "object_to": f"ais/@#/{BUCKET}/dst", "latest": "false",
                 "sync": "false"}
        expect_invalid(failures, case, world.request(case, query, None), "object_to", "sync")
    check(failures)


def test_repeated_query_parameters_are_refused(world, unchanged):
    failures = []
    for case in CASES:
        declared = sorted(case.query - {REDIRECT_PARAM, "upload_id"})
        if not declared:
            continue
        name = declared[0]
        query = [*world.query(case).items(), (name, VALUES.get(name, "")),
                 (name, VALUES.get(name, ""))]
        answer = world.request(case, query, world.body(case))
        expect_invalid(failures, case, answer, "more than once", name)
    check(failures)


def test_a_body_where_the_route_takes_none_is_refused(world, unchanged):
    """The aistore SDK's multi-object delete body, and a chunked body, on every route that
    takes no body (DELETE of a bucket among them: it once destroyed the bucket)."""
    failures = []
    body = json.dumps(LISTRANGE).encode()
    for case in CASES:
        if case.route.body != "none":
            continue
        for chunked in (False, True):
            answer = world.request(case, world.query(case), body, chunked=chunked)
            expect_invalid(failures, case, answer, "takes no body")
    check(failures)


def test_json_routes_refuse_what_is_not_their_shape(world, unchanged):
    """Not JSON, JSON that is not an object, and an object with a field the route does not
    know: each refused before anything happens."""
    failures = []
    for case in CASES:
        if case.route.body != "json":
            continue
        good = json.loads(world.body(case) or b"{}")
        for body, words in ((b"{not json", ("not valid JSON",)),
                            (b"[1, 2]", ("JSON object",)),
                            (json.dumps({**good, "strict_field": 1}).encode(),
                             ("strict_field",))):
            answer = world.request(case, world.query(case), body)
            expect_invalid(failures, case, answer, *words)
    check(failures)


def test_json_bodies_of_the_wrong_types_are_refused(world, unchanged):
    """Known fields of the wrong type (a string for a flag, a number for a list, an object
    for an integer)."""
    failures = []
    wrong = {
        ("proxy", "PUT", "/v1/buckets/{bucket}"): {"settings": "path=/"},
        ("proxy", "PATCH", "/v1/buckets/{bucket}"): {"anonymous_read": 1},
        ("proxy", "POST", "/v1/jobs"): {"kind": "sync", "bucket": SOURCE, "delete": [True]},
        ("proxy", "POST", "/v1/schedules"): {"name": "strict-other", "cron": "0 3 * * *",
                                             "replace": "yes",
                                             "job": {"kind": "sync", "bucket": SOURCE}},
        ("proxy", "PUT", "/v1/remotes/{alias}"): {"urls": 7},
        ("proxy", "POST", "/v1/auth/keys"): {"description": ["a", "list"]},
        ("proxy", "POST", "/v1/cluster/join"): {"id": "strict-rogue", "role": "target",
                                                "url": "http://127.0.0.1:9",
                                                "map_version": "12"},
        ("proxy", "PUT", "/v1/metasync"): {"bucket_map": [1]},
        ("target", "PUT", "/v1/metasync"): {"cluster_map": "the newest"},
        ("target", "POST", "/v1/jobs/{job}/batch"): {
            "spec": {"kind": "sync", "bucket": f"ais://{BUCKET}"}, "targets": True,
            "actions": [{"op": "delete", "name": OBJECT}]},
        ("target", "POST", "/v1/uploads/{bucket}/{name:.+}"): {
            "parts": [{"part": "1", "etag": world.part_etag}]},
    }
    json_routes = {(c.role, c.method, c.pattern) for c in CASES if c.route.body == "json"}
    assert set(wrong) == json_routes, "a JSON route without a wrong-type case: add one here"
    for (role, method, pattern), doc in wrong.items():
        case = find(role, method, pattern)
        answer = world.request(case, world.query(case), json.dumps(doc).encode())
        expect_invalid(failures, case, answer)
    check(failures)


# ------------------------------------------------------------------------- the aistore SDK


def aistore_client(world: World) -> AistoreClient:
    """The official SDK at the proxy, with the admin token; no retries (a 400 is final)."""
    no_retries = RetryConfig(http_retry=Retry(total=0),
                             network_retry=Retrying(stop=stop_after_attempt(1), reraise=True))
    return AistoreClient(world.cluster.endpoint, token=world.cluster.token,
                         retry_config=no_retries, timeout=30)


def bucket_with_objects(world: World, names: list[str]) -> tuple[str, dict[str, bytes]]:
    bucket = f"sdk-{secrets.token_hex(4)}"
    contents = {name: f"{name}: {secrets.token_hex(16)}".encode() for name in names}
    with Client(world.cluster.endpoint, timeout=30) as client:
        client.create_bucket(bucket)
        for name, data in contents.items():
            client.put_object(bucket, name, data)
    return bucket, contents


def stored(world: World, bucket: str) -> dict[str, bytes]:
    with Client(world.cluster.endpoint, timeout=30) as client:
        return {e.name: client.get_object(bucket, e.name) for e in client.iter_objects(bucket)}


def test_aistore_sdk_deleting_two_objects_keeps_the_bucket(world):
    bucket, contents = bucket_with_objects(world, ["a", "b", "c"])
    sdk = aistore_client(world)
    with pytest.raises(AISError) as refused:
        sdk.bucket(bucket).objects(obj_names=["a", "b"]).delete()
    assert refused.value.status_code == 400
    assert "takes no body" in refused.value.message
    with Client(world.cluster.endpoint, timeout=30) as client:
        assert client.head_bucket(bucket)
    assert stored(world, bucket) == contents


def test_aistore_sdk_copying_an_object_leaves_it_as_it_was(world):
    bucket, contents = bucket_with_objects(world, ["src"])
    sdk = aistore_client(world)
    with pytest.raises(AISError) as refused:
        sdk.bucket(bucket).object("src").copy(sdk.bucket(bucket).object("dst"))
    assert refused.value.status_code == 400
    assert re.search(r"object_to", refused.value.message)
    assert stored(world, bucket) == contents  # src unchanged, no dst
