"""S3 access keys on a real cluster with two proxies (``tests/harness.py``): the
``/v1/auth/keys`` routes through the primary and through the other proxy (which forwards), the
SDK, and ``ProxyKeys.secret_for`` — the lookup the S3 front end calls — on non-primary proxies.

``secret_for`` is Python API, so its tests run extra proxies *inside* the test process
(:class:`InProcessProxy`: a real ``ProxyNode`` serving HTTP on its own event-loop thread) that
join the cluster like any proxy. Cache behaviour is shown without clocks: a proxy with
``s3.key_cache_seconds: 0`` sees every change at once, one with an hour keeps its answers (known
and unknown keys alike) until it forwards a change itself. A primary that is gone is shown with
an in-process primary that the test stops. Every node logs at DEBUG with the access log on, and
the last test checks that no secret reached any log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from aisync.client import Client
from aisync.config import NodeConfig
from aisync.proxy.node import ProxyNode
from aisync.util.errors import AccessKeyNotFound, AlreadyExists, InvalidArgument, NodeUnavailable
from tests.harness import TEST_TOKEN, LocalCluster, free_port, http_json, member_json

GENERATED_KEY = re.compile(r"^AK[A-Z0-9]{18}$")
GENERATED_SECRET = re.compile(r"^[A-Za-z0-9_-]{40}$")

#: Every secret this module created: none may appear in any node's log.
SECRETS: list[str] = []


class LogTap(logging.Handler):
    """Keeps every record of the in-process nodes (message and traceback) for inspection."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() + " " + json.dumps(
            {k: str(v) for k, v in vars(record).items() if k not in ("msg", "args")})
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


TAP = LogTap()


class InProcessProxy:
    """A real proxy node in this process: ``ProxyNode`` + aiohttp server on a free port, run by
    an event loop in a daemon thread; it joins ``primary_url`` (or is a primary itself)."""

    def __init__(self, base: Path, name: str, primary_url: str | None,
                 key_cache_seconds: float, cluster_secret: str) -> None:
        cluster = {"name": "test-zone"}
        if primary_url:
            cluster["primary_url"] = primary_url
        self.config = NodeConfig.model_validate({
            "role": "proxy", "node_id": name, "host": "127.0.0.1", "port": free_port(),
            "data_dir": str(base / name), "cluster": cluster,
            "keepalive": {"interval": "300ms", "dead_after": "1500ms", "request_timeout": "1s"},
            "s3": {"key_cache_seconds": key_cache_seconds},
            "auth": {"admin_token": TEST_TOKEN, "cluster_secret": cluster_secret},
        })
        self.url = self.config.url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.node: ProxyNode | None = None
        self.runner: web.ServerRunner | None = None

    def call(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> InProcessProxy:
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.node = ProxyNode(self.config)
        self.runner = web.ServerRunner(web.Server(self.node.router), handle_signals=False)
        await self.runner.setup()
        await self.node.start()
        await web.TCPSite(self.runner, self.config.host, self.config.port).start()
        await asyncio.wait_for(self.node.joined.wait(), 60)

    def secret_for(self, access_key: str) -> str | None:
        assert self.node is not None
        return self.call(self.node.keys.secret_for(access_key))

    def stop(self) -> None:
        if self.runner is not None:
            self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _stop(self) -> None:
        assert self.runner is not None and self.node is not None
        await self.runner.cleanup()
        await self.node.stop()
        self.runner = None


@pytest.fixture(scope="module")
def cluster():
    aisync_log = logging.getLogger("aisync")
    level = aisync_log.level
    aisync_log.setLevel(logging.DEBUG)
    aisync_log.addHandler(TAP)
    try:
        with LocalCluster(targets=1, proxies=2, extra={
                "logging": {"level": "DEBUG", "access_log": True}}) as c:
            yield c
    finally:
        aisync_log.removeHandler(TAP)
        aisync_log.setLevel(level)


@pytest.fixture(scope="module")
def other(cluster):
    """The proxy that is not the primary."""
    return cluster.proxies[1]


@pytest.fixture(scope="module")
def sdk(other):
    with Client(other.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def fresh(cluster, tmp_path_factory):
    """An extra non-primary proxy that never caches (``key_cache_seconds: 0``)."""
    proxy = InProcessProxy(tmp_path_factory.mktemp("fresh"), "proxy-fresh",
                           cluster.primary.url, 0, cluster.cluster_secret).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def cached(cluster, tmp_path_factory):
    """An extra non-primary proxy that trusts an answer for an hour."""
    proxy = InProcessProxy(tmp_path_factory.mktemp("cached"), "proxy-cached",
                           cluster.primary.url, 3600, cluster.cluster_secret).start()
    yield proxy
    proxy.stop()


def call(url: str, method: str, path: str, body: object = None) -> tuple[int, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return http_json(f"{url}{path}", method, data, timeout=30)


def read_secret(cluster: LocalCluster, url: str, access_key: str) -> tuple[int, dict]:
    """``GET /v1/auth/keys/{ak}/secret`` as a cluster member (the only callers it serves)."""
    return member_json(cluster, url, "GET", f"/v1/auth/keys/{access_key}/secret")


def create(url: str, body: object = None) -> dict:
    status, key = call(url, "POST", "/v1/auth/keys", body)
    assert status == 201, key
    SECRETS.append(key["secret_key"])
    return key


def unique(prefix: str = "ak") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------- the REST API


@pytest.mark.parametrize("via", ["primary", "other"])
def test_generated_pair_is_visible_through_both_proxies(cluster, other, via):
    url = cluster.primary.url if via == "primary" else other.url
    key = create(url)  # no body at all
    assert GENERATED_KEY.match(key["access_key"]), key
    assert GENERATED_SECRET.match(key["secret_key"]), key
    assert key["description"] == "" and key["created"].endswith("+00:00")
    for proxy in (cluster.primary, other):
        status, listing = call(proxy.url, "GET", "/v1/auth/keys")
        assert status == 200
        (entry,) = [k for k in listing["keys"] if k["access_key"] == key["access_key"]]
        assert entry == {"access_key": key["access_key"], "description": "",
                         "created": key["created"]}
        assert key["secret_key"] not in json.dumps(listing)
        status, answer = read_secret(cluster, proxy.url, key["access_key"])
        assert (status, answer) == (200, {"secret_key": key["secret_key"]})
        # the admin token does not open it: secrets are for members checking SigV4
        status, err = call(proxy.url, "GET", f"/v1/auth/keys/{key['access_key']}/secret")
        assert status == 401 and err["code"] == "Unauthorized", err
        assert key["secret_key"] not in json.dumps(err)


def test_given_pair_and_duplicates(cluster, other):
    access_key = unique("given")
    body = {"access_key": access_key, "secret_key": "s3cr3t/with+symbols=", "description": "ci"}
    key = create(other.url, body)
    assert key["access_key"] == access_key and key["secret_key"] == "s3cr3t/with+symbols="
    assert key["description"] == "ci"
    for proxy in (other, cluster.primary):
        status, err = call(proxy.url, "POST", "/v1/auth/keys",
                           {"access_key": access_key, "secret_key": "another-secret"})
        assert status == 409 and err["code"] == "AlreadyExists", err
        assert "another-secret" not in json.dumps(err)
    status, answer = read_secret(cluster, cluster.primary.url, access_key)
    assert (status, answer) == (200, {"secret_key": "s3cr3t/with+symbols="})  # the first pair stays
    # one value given, the other generated
    only_key = create(other.url, {"access_key": unique("half")})
    assert GENERATED_SECRET.match(only_key["secret_key"])
    only_secret = create(other.url, {"secret_key": "just-the-secret", "description": None})
    assert GENERATED_KEY.match(only_secret["access_key"])
    assert only_secret["secret_key"] == "just-the-secret" and only_secret["description"] == ""


@pytest.mark.parametrize(("body", "needle"), [
    ({"access_key": "ab"}, "invalid access key"),
    ({"access_key": "has space"}, "invalid access key"),
    ({"access_key": "x" * 129}, "invalid access key"),
    ({"access_key": 12345}, "access key must be a string"),
    ({"secret_key": "short"}, "invalid secret key"),
    ({"secret_key": "has a space in it"}, "invalid secret key"),
    ({"secret_key": "ünïcødé-secret"}, "invalid secret key"),
    ({"secret_key": "x" * 129}, "invalid secret key"),
    ({"description": "d" * 257}, "description is too long"),
    ({"description": ["x"]}, "description must be a string"),
    ({"secret": "typo-of-secret_key"}, "unknown field"),
    (b"not json", "not valid JSON"),
    ([1, 2], "JSON object"),
])
@pytest.mark.parametrize("via", ["primary", "other"])
def test_bad_input_is_400_with_a_clear_message(cluster, other, via, body, needle):
    url = cluster.primary.url if via == "primary" else other.url
    status, err = call(url, "POST", "/v1/auth/keys", body)
    assert status == 400 and err["code"] == "InvalidArgument", err
    assert needle in err["message"], err
    if isinstance(body, dict) and isinstance(body.get("secret_key"), str):
        assert body["secret_key"] not in err["message"]


def test_delete(cluster, other):
    key = create(cluster.primary.url, {"description": "short-lived"})
    ak = key["access_key"]
    status, _ = call(other.url, "DELETE", f"/v1/auth/keys/{ak}")
    assert status == 204
    for proxy in (other, cluster.primary):
        status, err = call(proxy.url, "DELETE", f"/v1/auth/keys/{ak}")
        assert status == 404 and err["code"] == "AccessKeyNotFound", err
        status, err = read_secret(cluster, proxy.url, ak)
        assert status == 404 and err["code"] == "AccessKeyNotFound", err
        listing = call(proxy.url, "GET", "/v1/auth/keys")[1]["keys"]
        assert ak not in {k["access_key"] for k in listing}
    status, err = call(other.url, "DELETE", "/v1/auth/keys/no/such/key")  # malformed: no key
    assert status == 404 and err["code"] == "AccessKeyNotFound", err


def test_sdk(sdk, cluster):
    access_key = unique("sdk")
    key = sdk.create_access_key(access_key, "sdk-secret-1", description="from the SDK")
    SECRETS.append(key["secret_key"])
    assert key["access_key"] == access_key and key["secret_key"] == "sdk-secret-1"
    generated = sdk.create_access_key()
    SECRETS.append(generated["secret_key"])
    assert GENERATED_KEY.match(generated["access_key"])
    listed = {k["access_key"]: k for k in sdk.list_access_keys()}
    assert listed[access_key] == {"access_key": access_key, "description": "from the SDK",
                                  "created": key["created"]}
    assert "secret_key" not in listed[generated["access_key"]]
    with pytest.raises(AlreadyExists):
        sdk.create_access_key(access_key, "sdk-secret-2")
    with pytest.raises(InvalidArgument, match="secret key"):
        sdk.create_access_key(unique("sdk"), "tiny")
    sdk.delete_access_key(access_key)
    with pytest.raises(AccessKeyNotFound):
        sdk.delete_access_key(access_key)
    assert access_key not in {k["access_key"] for k in sdk.list_access_keys()}


# ------------------------------------------------------------- secret_for on non-primary proxies


def test_secret_for_asks_the_primary(cluster, fresh, cached):
    key = create(cluster.primary.url)
    for proxy in (fresh, cached):
        assert proxy.node is not None and not proxy.node.is_primary
        assert proxy.secret_for(key["access_key"]) == key["secret_key"]
        assert proxy.secret_for(unique("never")) is None
        for malformed in ("", "ab", "a/b", "x" * 200, "nul\x00"):
            assert proxy.secret_for(malformed) is None


def test_concurrent_lookups_agree(cluster, fresh):
    key = create(cluster.primary.url)

    async def many() -> list[str | None]:
        assert fresh.node is not None
        lookups = [fresh.node.keys.secret_for(key["access_key"]) for _ in range(50)]
        return await asyncio.gather(*lookups)

    assert fresh.call(many()) == [key["secret_key"]] * 50


def test_removed_key_stops_at_once_without_cache_and_is_cached_otherwise(cluster, fresh,
                                                                          cached):
    key = create(cluster.primary.url)
    ak = key["access_key"]
    assert fresh.secret_for(ak) == cached.secret_for(ak) == key["secret_key"]
    assert call(cluster.primary.url, "DELETE", f"/v1/auth/keys/{ak}")[0] == 204
    assert fresh.secret_for(ak) is None  # key_cache_seconds 0: the removal is seen at once
    assert cached.secret_for(ak) == key["secret_key"]  # trusted for an hour


def test_unknown_key_is_cached_too(cluster, fresh, cached):
    ak = unique("later")
    assert fresh.secret_for(ak) is None and cached.secret_for(ak) is None
    key = create(cluster.primary.url, {"access_key": ak})
    assert fresh.secret_for(ak) == key["secret_key"]
    assert cached.secret_for(ak) is None  # its "no such key" answer still holds


def test_changes_through_a_proxy_drop_its_own_cache_entry(cluster, cached):
    ak = unique("own")
    assert cached.secret_for(ak) is None  # cached as unknown
    key = create(cached.url, {"access_key": ak})  # created through that proxy (forwarded)
    assert cached.secret_for(ak) == key["secret_key"]
    assert call(cached.url, "DELETE", f"/v1/auth/keys/{ak}")[0] == 204
    assert cached.secret_for(ak) is None


def test_unreachable_primary_is_node_unavailable(tmp_path):
    """An in-process primary with two proxies joined to it, then the primary stops: lookups
    raise NodeUnavailable (never "no such key"), except what a proxy has cached."""
    secret = secrets.token_urlsafe(32)
    primary = InProcessProxy(tmp_path, "mini-primary", None, 0, secret).start()
    proxies: list[InProcessProxy] = []
    try:
        assert primary.node is not None and primary.node.is_primary
        no_cache = InProcessProxy(tmp_path, "mini-fresh", primary.url, 0, secret).start()
        proxies.append(no_cache)
        hour = InProcessProxy(tmp_path, "mini-cached", primary.url, 3600, secret).start()
        proxies.append(hour)
        key = create(no_cache.url, {"description": "via a forwarding proxy"})
        ak = key["access_key"]
        assert primary.secret_for(ak) == key["secret_key"]  # the primary: its catalog
        assert primary.secret_for(unique("none")) is None
        assert hour.secret_for(ak) == key["secret_key"]
        primary.stop()
        for proxy in proxies:
            with pytest.raises(NodeUnavailable, match="unreachable"):
                proxy.secret_for(unique("any"))
        with pytest.raises(NodeUnavailable):
            no_cache.secret_for(ak)
        assert hour.secret_for(ak) == key["secret_key"]  # still within its cache time
        assert proxies[0].secret_for("a/b") is None  # malformed: answered without asking
    finally:
        for proxy in proxies:
            proxy.stop()
        if primary.runner is not None:
            primary.stop()


# -------------------------------------------------------------------------------------- logs


def test_no_secret_in_any_log(cluster):
    assert SECRETS, "run with the tests above"
    texts = {node.id: node.log.read_text(errors="replace") for node in cluster.nodes}
    texts["in-process nodes"] = "\n".join(TAP.lines)
    assert "access key" in texts[cluster.primary.id]  # the logs were really written
    for where, text in texts.items():
        for secret in [*SECRETS, cluster.token, cluster.cluster_secret]:
            assert secret not in text, f"a secret reached the log of {where}"
    unhandled = [line for line in TAP.lines if "unhandled error" in line]
    assert not unhandled, unhandled
