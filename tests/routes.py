"""What the route-walking suites share: the routes the nodes declare, a raw request, and the
cluster state a refused request must leave as it was.

``declared_routes()`` builds a proxy, a target and a target's read worker from a config in a
throwaway directory (never started: only their routers are read), so a route added later joins
every suite that walks them. ``raw_request()`` sends a request target exactly as given on a fresh
connection and never follows a redirect. ``cluster_state()`` is what both the authorization
matrix and the strict-API walk compare before and after every request.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aisync.client import Client
from aisync.config import NodeConfig
from aisync.node.router import Route
from aisync.proxy.node import ProxyNode
from aisync.target.node import TargetNode
from aisync.target.read_worker import ReadWorker
from tests.harness import http_json, raw_http

#: The header that carries an error's code (HEAD answers have no body).
ERROR_CODE_HEADER = "X-Aisync-Error-Code"


def node_config(role: str, data_dir: Path) -> NodeConfig:
    """A config to build a node from without starting it (its own throwaway credentials)."""
    return NodeConfig.model_validate({
        "role": role, "node_id": f"routes-{role}", "host": "127.0.0.1", "port": 1,
        "data_dir": str(data_dir),
        "storage": {"mountpaths": [str(data_dir / "mp0")]} if role == "target" else {},
        "auth": {"admin_token": secrets.token_urlsafe(24),
                 "cluster_secret": secrets.token_urlsafe(32)}})


def declared_routes() -> tuple[list[tuple[str, str, str, Route]], list[tuple[str, str, Route]]]:
    """``([(role, method, pattern, route)] of a proxy and a target, [(method, pattern, route)]
    of a target's read worker)``."""
    nodes: list[tuple[str, str, str, Route]] = []
    with tempfile.TemporaryDirectory(prefix="aisync-routes-") as tmp:
        for role, node_class in (("proxy", ProxyNode), ("target", TargetNode)):
            node = node_class(node_config(role, Path(tmp) / role))
            try:
                nodes.extend((role, method, pattern, route)
                             for method, pattern, route in node.router.routes())
            finally:
                node._blocking.shutdown(wait=True)
                node.catalog.close()  # nothing else opens before start()
        reader = ReadWorker(node_config("target", Path(tmp) / "reader")).router.routes()
    return nodes, reader


@dataclass
class Answer:
    status: int
    doc: dict
    #: The error code of the answer's header (HEAD answers carry no body).
    code: str | None


def raw_request(url: str, method: str, target: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, *, chunked: bool = False) -> Answer:
    """One request on a fresh connection, the target sent exactly as given, never following a
    redirect (a Location lands in ``doc["location"]``). ``chunked``: the body goes with
    ``Transfer-Encoding: chunked``."""
    status, headers, raw = raw_http(url, method, target, body, headers, chunked=chunked)
    code, location = headers.get(ERROR_CODE_HEADER), headers.get("Location")
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {"raw": raw[:200].decode(errors="replace")}
    if not isinstance(doc, dict):
        doc = {"json": doc}
    if location:
        doc["location"] = location
    return Answer(status, doc, code or doc.get("code"))


def cluster_state(proxy: str, target: str, bucket: str, obj: str) -> dict:
    """What a refused request must not change, as the proxy and the target tell it: buckets,
    the object's bytes and the listing, both maps at both nodes, keys, schedules, jobs, remotes."""

    def get(url: str, path: str) -> dict:
        status, doc = http_json(f"{url}{path}", timeout=30)
        assert status == 200, (path, doc)
        return doc

    with Client(proxy, timeout=30) as client:
        data = client.get_object(bucket, obj)
    cluster_map = get(proxy, "/v1/cluster/map")
    return {
        "buckets": get(proxy, "/v1/buckets"),
        "objects": get(proxy, f"/v1/buckets/{bucket}")["objects"],
        "data": data,
        "cluster map": (cluster_map["version"], sorted(
            (i, n["url"], n["state"]) for i, n in cluster_map["nodes"].items())),
        "target cluster map": get(target, "/v1/cluster/map")["version"],
        "bucket map": get(proxy, "/v1/cluster/bucket-map")["version"],
        "target bucket map": get(target, "/v1/cluster/bucket-map")["version"],
        "keys": get(proxy, "/v1/auth/keys"),
        "schedules": sorted(s["name"] for s in get(proxy, "/v1/schedules")["schedules"]),
        "jobs": sorted((j["id"], j["state"]) for j in get(proxy, "/v1/jobs?limit=1000")["jobs"]),
        "remotes": get(proxy, "/v1/remotes"),
    }
