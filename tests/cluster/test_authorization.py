"""The authorization matrix: every route of a proxy and of a target × every way to knock without
the right credentials → 401, and nothing in the cluster changed.

The routes come from the routers themselves (a ``ProxyNode`` and a ``TargetNode`` built in this
process from a throwaway config, never started), so a route added later joins the matrix by
itself; a path variable the matrix does not know how to fill fails the test instead of being
skipped. Path variables are filled with names that exist (a bucket holding an object, a finished
job, a schedule, an access key) and bodies with what the route would act on, so every request
would succeed with the right credentials. That it would is shown per route by a control: the
same request, rightly signed, plus a query parameter no route takes, passes the gate and is
stopped by the router's query rule (400 ``InvalidArgument``): the attacks below differ from it
only in the credential.

The ways to knock: no credentials; a wrong token; the admin token on a route that serves
cluster members only; a member signature made with the wrong secret; a rightly signed member
request sent a second time (a replay); a signed body digest that is not the body's, or none at
all on a JSON route; a client at a target's object route with no proxy signature; a proxy's
signature for a GET used for another method or another object; an expired signature. After each
kind, the cluster's state (buckets and their properties, the object's bytes and the bucket's
listing, cluster and bucket map versions at the proxy and the target, access keys, schedules,
jobs, remotes) is what it was.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from aisync.auth import Access
from aisync.auth.members import UNSIGNED, MemberSigner
from aisync.auth.redirects import PARAM as REDIRECT_PARAM
from aisync.auth.redirects import RedirectKey
from aisync.client import Client
from tests.harness import LocalCluster, http_json, member_headers, wait_job
from tests.routes import Answer, cluster_state, raw_request
from tests.routes import declared_routes as routes_of_nodes

BUCKET = "authz"
NEW_BUCKET = "authz-new"
OBJECT = "obj"
OTHER_OBJECT = "other"
DATA = b"the bytes nobody may change " * 100
SCHEDULE = "authz-nightly"
REMOTE = "authz-remote"
#: A query parameter no route takes: the control requests' way to stop right after the gate.
PROBE = "authz_probe=1"
HEALTH = {"/v1/health", "/v1/health/ready"}


# ------------------------------------------------------------------------------------ routes


@dataclass(frozen=True)
class RouteCase:
    role: str  # "proxy" or "target": whose router declares it
    method: str
    pattern: str
    access: Access
    body: str  # the router's body kind: none, json or stream

    @property
    def id(self) -> str:
        return f"{self.role} {self.method} {self.pattern}"


def declared_routes() -> list[RouteCase]:
    """Every route of a proxy's and a target's router (see :mod:`tests.routes`)."""
    nodes, _ = routes_of_nodes()
    return [RouteCase(role, method, pattern, route.access, route.body)
            for role, method, pattern, route in nodes]


ROUTES = declared_routes()


def routes(*, access: set[Access] | None = None, body: str | None = None) -> list[RouteCase]:
    return [r for r in ROUTES if r.access is not Access.PUBLIC
            and (access is None or r.access in access) and (body is None or r.body == body)]


# ---------------------------------------------------------------------------------- requests


@dataclass
class World:
    """The live cluster and the real names the matrix fills path variables with."""

    cluster: LocalCluster
    job_id: str
    access_key: str

    @property
    def proxy(self) -> str:
        return self.cluster.primary.url

    @property
    def target(self) -> str:
        return self.cluster.targets[0].url

    def node_url(self, case: RouteCase) -> str:
        return self.proxy if case.role == "proxy" else self.target

    def path(self, case: RouteCase, name: str = OBJECT) -> str:
        values = {"bucket": NEW_BUCKET if (case.method, case.pattern) == (
                      "PUT", "/v1/buckets/{bucket}") else BUCKET,
                  "job": self.job_id, "alias": REMOTE, "access_key": self.access_key}
        out = []
        for segment in case.pattern.strip("/").split("/"):
            if not segment.startswith("{"):
                out.append(segment)
                continue
            var = segment[1:-1].split(":")[0]
            if var == "name":  # a schedule's name, or an object's
                value = SCHEDULE if case.pattern.startswith("/v1/schedules/") else name
            elif var in values:
                value = values[var]
            else:
                raise AssertionError(f"{case.id}: the matrix does not know what real value "
                                     f"the path variable {{{var}}} takes: add it here")
            out.append(urllib.parse.quote(value, safe=""))
        return "/" + "/".join(out)

    def body(self, case: RouteCase) -> bytes | None:
        """What the route would act on: the attacks the issue found, where there was one."""
        if case.body == "none":
            return None
        if case.body == "stream":
            return b"an attacker's bytes"
        key = (case.method, case.pattern)
        if key == ("PUT", "/v1/metasync"):  # a forged bucket map that drops the bucket
            _, bucket_map = http_json(f"{self.node_url(case)}/v1/cluster/bucket-map")
            bucket_map["version"] = 1003
            bucket_map["buckets"] = {k: v for k, v in bucket_map["buckets"].items() if BUCKET not in k}
            doc: object = {"bucket_map": bucket_map}
        elif key == ("POST", "/v1/cluster/join"):  # an active target's id, a rogue URL
            doc = {"id": self.cluster.targets[0].id, "role": "target",
                   "url": "http://127.0.0.1:9", "host": "rogue", "map_version": 0}
        elif key == ("POST", "/v1/jobs/{job}/batch"):  # delete the object through a target
            doc = {"spec": {"kind": "sync", "bucket": f"ais://{BUCKET}"}, "targets": 1,
                   "actions": [{"op": "delete", "name": OBJECT}]}
        else:
            doc = {
                ("POST", "/v1/jobs"): {"kind": "sync", "bucket": f"ais://{BUCKET}"},
                ("POST", "/v1/schedules"): {"name": "authz-evil", "cron": "0 3 * * *",
                                            "job": {"kind": "sync", "bucket": f"ais://{BUCKET}"}},
                ("PUT", "/v1/remotes/{alias}"): {"urls": ["http://127.0.0.1:9"]},
                ("PATCH", "/v1/buckets/{bucket}"): {"anonymous_read": True},
                ("POST", "/v1/auth/keys"): {"description": "minted by a stranger"},
            }.get(key, {})
        return json.dumps(doc).encode()

    def member(self, case: RouteCase, target: str, body: bytes | None,
               secret: str | None = None) -> dict[str, str]:
        return member_headers(secret or self.cluster.cluster_secret, case.method, target,
                              body or b"", member="proxy-0")

    def signed_redirect(self, case: RouteCase, path: str, query: str = "",
                        ttl: float = 60) -> str:
        """A Location query a proxy could have signed for ``case.method`` on ``path``."""
        map_version = self.cluster.cluster_map()["version"]
        key = RedirectKey(self.cluster.cluster_secret.encode())
        return key.sign(case.method, path, query, self.cluster.primary.id, map_version, ttl)


def snapshot(world: World) -> dict:
    """Everything an attack could change, as the proxy and the target tell it."""
    return cluster_state(world.proxy, world.target, BUCKET, OBJECT)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with LocalCluster(targets=1, proxies=1) as cluster:
        share = tmp_path_factory.mktemp("authz-share")
        (share / "src-object").write_bytes(b"from the share")
        with Client(cluster.endpoint, timeout=30) as client:
            client.create_bucket(BUCKET)
            client.put_object(BUCKET, OBJECT, DATA)
            client.put_object(BUCKET, OTHER_OBJECT, b"another object")
            client.create_bucket("fs://authz-src", settings={"path": str(share)})
            job = client.start_job(kind="sync", bucket="fs://authz-src")
            assert wait_job(cluster, job["id"])["state"] == "succeeded"
            client.add_schedule(SCHEDULE, job={"kind": "sync", "bucket": "fs://authz-src"},
                                cron="0 2 * * *")
            key = client.create_access_key(description="authz matrix")
        yield World(cluster, job["id"], key["access_key"])


@pytest.fixture(scope="module")
def before(world) -> dict:
    return snapshot(world)


@pytest.fixture
def unchanged(world, before) -> Iterator[None]:
    """The test's attacks changed nothing (checked after the test)."""
    yield
    assert snapshot(world) == before


def expect_refused(failures: list[str], case: RouteCase, answer: Answer,
                   message: str = "") -> None:
    """401 ``Unauthorized`` (with ``message`` in it); a HEAD answer has no body to read."""
    if case.method == "HEAD":
        if answer.status != 401:
            failures.append(f"{case.id}: {answer.status}")
    elif answer.status != 401 or answer.code != "Unauthorized" or message not in json.dumps(
            answer.doc):
        failures.append(f"{case.id}: {answer.status} {json.dumps(answer.doc)[:200]}")


def check(failures: list[str]) -> None:
    assert not failures, "requests not refused:\n" + "\n".join(failures)


# ------------------------------------------------------------------------------------- tests


def test_the_matrix_covers_both_roles_and_only_health_is_public():
    public = {(r.role, r.method, r.pattern) for r in ROUTES if r.access is Access.PUBLIC}
    assert public == {(role, method, path) for role in ("proxy", "target")
                      for method in ("GET", "HEAD") for path in HEALTH}
    assert {r.role for r in routes(access={Access.MEMBER})} == {"proxy", "target"}
    assert {r.method for r in routes(access={Access.OBJECT})} == {"GET", "HEAD", "PUT", "DELETE"}
    assert all(r.role == "target" for r in routes(access={Access.OBJECT}))
    assert len(routes()) > 40  # the routers were really read


def test_health_answers_without_credentials(world):
    for url in (world.proxy, world.target):
        for path in sorted(HEALTH):
            for method in ("GET", "HEAD"):
                assert raw_request(url, method, path).status == 200, (url, method, path)


def test_the_right_credentials_pass_the_gate(world, unchanged):
    """The control of every attack below: the same request, with the credential the route
    takes and a query parameter no route takes, is refused by the query rule, not the gate."""
    failures = []
    for case in routes():
        path = world.path(case)
        target = f"{path}?{PROBE}"
        body = world.body(case)
        if case.access is Access.CLIENT:
            headers = {"Authorization": f"Bearer {world.cluster.token}"}
        elif case.access is Access.MEMBER:
            headers = world.member(case, target, body)
        else:  # OBJECT: a client with a proxy's signature
            target = f"{path}?{world.signed_redirect(case, path, PROBE)}"
            headers = {}
        answer = raw_request(world.node_url(case), case.method, target, body, headers)
        if answer.status != 400 or case.method != "HEAD" and (
                answer.code != "InvalidArgument" or "authz_probe" not in answer.doc["message"]):
            failures.append(f"{case.id}: {answer.status} {json.dumps(answer.doc)[:200]}")
    assert not failures, "not admitted by the gate:\n" + "\n".join(failures)


def test_no_credentials(world, unchanged):
    failures = []
    for case in routes():
        answer = raw_request(world.node_url(case), case.method, world.path(case), world.body(case))
        expect_refused(failures, case, answer)
    check(failures)


def test_wrong_token(world, unchanged):
    failures = []
    for wrong in (world.cluster.token + "x", secrets.token_urlsafe(24), ""):
        headers = {"Authorization": f"Bearer {wrong}"}
        for case in routes():
            answer = raw_request(world.node_url(case), case.method, world.path(case),
                          world.body(case), headers)
            expect_refused(failures, case, answer)
    check(failures)


def test_admin_token_on_member_routes(world, unchanged):
    """Intra-cluster routes serve members only: the client token does not open them."""
    headers = {"Authorization": f"Bearer {world.cluster.token}"}
    failures = []
    for case in routes(access={Access.MEMBER}):
        answer = raw_request(world.node_url(case), case.method, world.path(case), world.body(case),
                      headers)
        expect_refused(failures, case, answer)
    check(failures)


def test_forged_member_signature(world, unchanged):
    """Signed like a member, with a secret that is not the cluster's."""
    wrong_secret = secrets.token_urlsafe(32)
    failures = []
    for case in routes():
        path, body = world.path(case), world.body(case)
        headers = world.member(case, path, body, secret=wrong_secret)
        answer = raw_request(world.node_url(case), case.method, path, body, headers)
        expect_refused(failures, case, answer)
    check(failures)


def test_replayed_member_request(world, unchanged):
    """The exact same signed request twice: the first passes the gate (and stops at the query
    rule), the second is refused as a replay."""
    failures = []
    for case in routes():
        target, body = f"{world.path(case)}?{PROBE}", world.body(case)
        headers = world.member(case, target, body)
        url = world.node_url(case)
        first = raw_request(url, case.method, target, body, headers)
        if first.status != 400:
            failures.append(f"{case.id}: the first, rightly signed: {first.status} "
                            f"{json.dumps(first.doc)[:200]}")
        expect_refused(failures, case, raw_request(url, case.method, target, body, headers),
                       "replayed")
    check(failures)


def test_body_other_than_its_signed_digest(world, unchanged):
    """A member's signature over one body does not carry another; a JSON route does not take
    an unsigned body."""
    failures = []
    for case in routes(body="json"):
        path, body = world.path(case), world.body(case)
        assert body is not None
        url = world.node_url(case)
        signed_for = json.dumps({"harmless": True}).encode()
        headers = world.member(case, path, signed_for)
        expect_refused(failures, case, raw_request(url, case.method, path, body, headers),
                       "signed digest")
        unsigned = MemberSigner("proxy-0", world.cluster.cluster_secret.encode(),
                                lambda origin: True).headers(case.method, path, UNSIGNED)
        expect_refused(failures, case, raw_request(url, case.method, path, body, unsigned),
                       "signed body digest")
    check(failures)


def test_target_object_routes_need_a_proxy_signature(world, unchanged):
    """A client straight at a target: with the admin token, or with a made-up signature."""
    failures = []
    for case in routes(access={Access.OBJECT}):
        path, body = world.path(case), world.body(case)
        for target, headers in (
                (path, {"Authorization": f"Bearer {world.cluster.token}"}),
                (f"{path}?{REDIRECT_PARAM}=proxy-0~1~9999999999~{'A' * 43}", {}),
                (f"{path}?{REDIRECT_PARAM}=garbage", {})):
            answer = raw_request(world.target, case.method, target, body, headers)
            expect_refused(failures, case, answer)
    check(failures)


def test_a_redirect_signature_does_not_carry_over(world, unchanged):
    """A real Location a proxy signed for GET of the object: not for another method, not for
    another object."""
    answer = raw_request(world.proxy, "GET", f"/v1/objects/{BUCKET}/{OBJECT}",
                  headers={"Authorization": f"Bearer {world.cluster.token}"})
    assert answer.status == 307, answer
    location = urllib.parse.urlsplit(answer.doc["location"])
    assert location.netloc == urllib.parse.urlsplit(world.target).netloc
    assert REDIRECT_PARAM in location.query
    get_case = next(r for r in routes(access={Access.OBJECT}) if r.method == "GET")
    assert raw_request(world.target, "GET", f"{location.path}?{location.query}").status == 200
    failures = []
    for case in routes(access={Access.OBJECT}):
        body = world.body(case)
        if case.method != "GET":
            answer = raw_request(world.target, case.method, f"{location.path}?{location.query}", body)
            expect_refused(failures, case, answer)
        other = world.path(get_case, OTHER_OBJECT)
        answer = raw_request(world.target, case.method, f"{other}?{location.query}", body)
        expect_refused(failures, case, answer)
    check(failures)


def test_an_expired_redirect_signature(world, unchanged):
    failures = []
    for case in routes(access={Access.OBJECT}):
        path = world.path(case)
        query = world.signed_redirect(case, path, ttl=-1)
        answer = raw_request(world.target, case.method, f"{path}?{query}", world.body(case))
        expect_refused(failures, case, answer, "expired")
    check(failures)

