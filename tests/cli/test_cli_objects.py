"""CLI bucket/object commands against a small in-test fake node (docs/api.md subset).

The fake serves everything itself (no redirects: the SDK tests cover those) on a free port of
the test's event loop; each CLI invocation runs in a worker thread (the CLI has its own loop).
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from aiohttp import web
from click.testing import CliRunner

from aisync.cli.main import cli
from aisync.util.errors import AisyncError, BucketAlreadyExists, BucketNotFound, ObjectNotFound


class FakeNode:
    def __init__(self) -> None:
        self.buckets: set[str] = set()
        self.objects: dict[tuple[str, str], bytes] = {}
        self.list_calls = 0
        self.deletes = 0
        app = web.Application(middlewares=[self.errors], client_max_size=1 << 26)
        r = app.router
        r.add_get("/v1/buckets", self.list_buckets)
        r.add_route("PUT", "/v1/buckets/{b}", self.create)
        r.add_get("/v1/buckets/{b}/info", self.info)
        r.add_route("DELETE", "/v1/buckets/{b}", self.destroy)
        r.add_get("/v1/buckets/{b}", self.list_objects)
        obj = "/v1/objects/{b}/{name:.+}"
        r.add_put(obj, self.put)
        r.add_get(obj, self.get, allow_head=False)
        r.add_head(obj, self.head)
        r.add_delete(obj, self.delete)
        r.add_get("/v1/cluster/status", self.status)
        self.app = app
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeNode:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @web.middleware
    async def errors(self, request, handler):
        try:
            return await handler(request)
        except AisyncError as err:
            if request.method == "HEAD":
                return web.Response(status=err.status, headers={"X-Aisync-Error-Code": err.code})
            return web.json_response(err.to_dict(), status=err.status)

    def _bucket(self, request) -> str:
        name = request.match_info["b"]
        if name not in self.buckets:
            raise BucketNotFound(f"bucket ais://{name} does not exist")
        return name

    def _obj(self, request) -> tuple[str, str, bytes]:
        b = self._bucket(request)
        name = request.match_info["name"]
        if (b, name) not in self.objects:
            raise ObjectNotFound(f"ais://{b}/{name}: no such object")
        return b, name, self.objects[(b, name)]

    async def list_buckets(self, request):
        return web.json_response({"buckets": [{"name": b, "provider": "ais", "namespace": "",
                                               "created": "2026-01-01T00:00:00+00:00"}
                                              for b in sorted(self.buckets)], "version": 1})

    async def create(self, request):
        name = request.match_info["b"]
        if name in self.buckets:
            raise BucketAlreadyExists(f"bucket ais://{name} already exists")
        self.buckets.add(name)
        return web.json_response({"name": name, "provider": "ais"}, status=201)

    async def info(self, request):
        b = self._bucket(request)
        sizes = [len(d) for (bb, _), d in self.objects.items() if bb == b]
        return web.json_response({"name": b, "provider": "ais", "namespace": "",
                                  "created": "2026-01-01", "objects": len(sizes),
                                  "bytes": sum(sizes)})

    async def destroy(self, request):
        b = self._bucket(request)
        self.buckets.discard(b)
        for key in [k for k in self.objects if k[0] == b]:
            del self.objects[key]
        return web.Response(status=204)

    async def list_objects(self, request):
        b = self._bucket(request)
        self.list_calls += 1
        prefix, token = request.query.get("prefix", ""), request.query.get("token", "")
        limit = int(request.query.get("limit", "1000"))
        keys = sorted(k for (bb, k) in self.objects if bb == b and k.startswith(prefix)
                      and k > token)
        page = keys[:limit]
        return web.json_response({
            "objects": [{"name": k, "size": len(self.objects[(b, k)]), "checksum": "xxh3:0",
                         "mtime_ns": 1_700_000_000 * 10**9} for k in page],
            "next_token": page[-1] if len(keys) > limit else None})

    async def put(self, request):
        b = self._bucket(request)
        name = request.match_info["name"]
        data = await request.read()
        self.objects[(b, name)] = data
        return web.json_response({"bucket": b, "provider": "ais", "name": name,
                                  "size": len(data), "checksum": "xxh3:0", "mtime_ns": 1})

    def _headers(self, data: bytes) -> dict[str, str]:
        return {"X-Aisync-Checksum": "xxh3:0", "ETag": '"0"', "X-Aisync-Mtime-Ns": "1"}

    async def get(self, request):
        _, _, data = self._obj(request)
        rng = request.headers.get("Range")
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) if last else len(data) - 1
            headers = self._headers(data)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return web.Response(status=206, body=data[start:end + 1], headers=headers)
        return web.Response(body=data, headers=self._headers(data))

    async def head(self, request):
        _, _, data = self._obj(request)
        headers = self._headers(data)
        headers["Content-Length"] = str(len(data))
        return web.Response(headers=headers)

    async def delete(self, request):
        b, name, _ = self._obj(request)
        del self.objects[(b, name)]
        self.deletes += 1
        return web.Response(status=204)

    async def status(self, request):
        return web.json_response({
            "cluster": "zone-a", "map_version": 4, "bucket_map_version": 2,
            "primary": "proxy-0",
            "nodes": [
                {"id": "proxy-0", "role": "proxy", "url": self.url, "state": "active",
                 "primary": True, "map_version": 4},
                {"id": "target-0", "role": "target", "url": "http://127.0.0.1:2",
                 "state": "active", "primary": False, "map_version": 4, "objects": 12,
                 "disks": [{"mountpath": "/d0", "total": 2 * 1024**3, "used": 1024**3,
                            "free": 1024**3}]},
            ]})


@pytest.fixture
async def node():
    fake = await FakeNode().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def invoke(node, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AISYNC_ENDPOINT", node.url)
    runner = CliRunner()

    async def call(*args: str, input: bytes | None = None):
        return await asyncio.to_thread(runner.invoke, cli, list(args), input=input)

    return call


async def test_bucket_commands(node, invoke):
    r = await invoke("bucket", "create", "ais://train")
    assert r.exit_code == 0 and "created ais://train" in r.stdout
    r = await invoke("bucket", "create", "train")
    assert r.exit_code == 1 and r.stderr.strip() == "error: bucket ais://train already exists"
    r = await invoke("bucket", "ls")
    assert r.exit_code == 0 and "ais://train" in r.stdout
    r = await invoke("bucket", "ls", "--json")
    assert [b["name"] for b in json.loads(r.stdout)] == ["train"]
    node.objects[("train", "a")] = b"12345"
    r = await invoke("bucket", "show", "ais://train")
    assert r.exit_code == 0 and "objects:" in r.stdout and "5 (5 B)" in r.stdout
    r = await invoke("bucket", "rm", "ais://train", "--dry-run")
    assert r.exit_code == 0 and "would destroy ais://train: 1 object(s), 5 B" in r.stdout
    assert "train" in node.buckets
    r = await invoke("bucket", "rm", "ais://train")  # no --yes, no terminal: refused
    assert r.exit_code == 2 and "without --yes" in r.stderr and "train" in node.buckets
    r = await invoke("bucket", "rm", "ais://train", "--yes")
    assert r.exit_code == 0 and node.buckets == set() and node.objects == {}
    r = await invoke("bucket", "show", "ais://train")
    assert r.exit_code == 1 and r.stderr.startswith("error: bucket ais://train does not exist")


async def test_put_get_head_single_file(node, invoke, tmp_path):
    node.buckets.add("b")
    data = os.urandom(300_000)
    (tmp_path / "in.bin").write_bytes(data)
    r = await invoke("object", "put", "in.bin", "ais://b/dir/")
    assert r.exit_code == 0, r.output
    assert node.objects[("b", "dir/in.bin")] == data
    r = await invoke("object", "put", "in.bin", "ais://b/renamed.bin")
    assert r.exit_code == 0 and ("b", "renamed.bin") in node.objects
    r = await invoke("object", "get", "ais://b/dir/in.bin")  # default: base name in cwd
    assert r.exit_code == 0, r.output
    out = tmp_path / "in.bin"
    assert out.read_bytes() == data
    (tmp_path / "sub").mkdir()
    r = await invoke("object", "get", "ais://b/dir/in.bin", "-o", "sub")
    assert r.exit_code == 0 and (tmp_path / "sub" / "in.bin").read_bytes() == data
    r = await invoke("object", "get", "ais://b/dir/in.bin", "-o", "-", "--range", "10-19")
    assert r.exit_code == 0 and r.stdout_bytes == data[10:20]
    r = await invoke("object", "get", "ais://b/dir/in.bin", "-")
    assert r.exit_code == 0 and r.stdout_bytes == data
    r = await invoke("object", "head", "ais://b/dir/in.bin", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["size"] == len(data)
    r = await invoke("object", "get", "ais://b/missing")
    assert r.exit_code == 1 and r.stderr.strip() == "error: ais://b/missing: no such object"
    assert not (tmp_path / "missing").exists()
    r = await invoke("object", "head", "ais://b/missing")
    assert r.exit_code == 1 and r.stderr.startswith("error: ")


async def test_put_stdin(node, invoke):
    node.buckets.add("b")
    r = await invoke("object", "put", "-", "ais://b/from-stdin", input=b"piped bytes")
    assert r.exit_code == 0, r.output
    assert node.objects[("b", "from-stdin")] == b"piped bytes"
    r = await invoke("object", "put", "-", "ais://b/", input=b"x")
    assert r.exit_code == 2 and "full object name" in r.stderr


async def test_recursive_put_ls_and_rm(node, invoke, tmp_path):
    node.buckets.add("b")
    src = tmp_path / "tree"
    files = {"a.txt": b"a", "sub/b.txt": b"bb", "sub/deeper/c.bin": os.urandom(2000)}
    for rel, content in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(content)
    r = await invoke("object", "put", str(src), "ais://b/data", "--recursive", "--jobs", "2")
    assert r.exit_code == 0, r.output
    assert "uploaded 3 file(s)" in r.stdout and "MiB/s" in r.stdout
    assert {k: v for (_, k), v in node.objects.items()} == {
        f"data/{rel}": content for rel, content in files.items()}
    node.objects[("b", "other")] = b"o"

    node.list_calls = 0
    r = await invoke("object", "ls", "ais://b/data/", "--page-size", "2")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MODIFIED"]
    assert [line.split()[0] for line in lines[1:]] == [
        "data/a.txt", "data/sub/b.txt", "data/sub/deeper/c.bin"]
    assert node.list_calls == 2  # streamed page by page
    assert "3 object(s)" in r.stderr
    r = await invoke("object", "ls", "ais://b", "--prefix", "data/sub/", "--json")
    assert [o["name"] for o in json.loads(r.stdout)] == ["data/sub/b.txt",
                                                          "data/sub/deeper/c.bin"]
    r = await invoke("object", "ls", "ais://b", "--limit", "1", "--json")
    assert [o["name"] for o in json.loads(r.stdout)] == ["data/a.txt"]
    r = await invoke("object", "ls", "ais://b/x/", "--prefix", "y")
    assert r.exit_code == 2

    r = await invoke("object", "rm", "ais://b/data/", "--recursive", "--dry-run")
    assert r.exit_code == 0 and "would delete 3 object(s)" in r.stdout
    assert node.deletes == 0 and len(node.objects) == 4
    r = await invoke("object", "rm", "ais://b/data/")
    assert r.exit_code == 2 and "--recursive" in r.stderr
    r = await invoke("object", "rm", "ais://b", "--recursive", "--prefix", "data/")
    assert r.exit_code == 0 and "deleted 3 object(s)" in r.stdout, r.output
    assert list(node.objects) == [("b", "other")]
    r = await invoke("object", "rm", "ais://b/other")
    assert r.exit_code == 0 and node.objects == {}


async def test_cluster_status_table_and_json(node, invoke):
    r = await invoke("cluster", "status")
    assert r.exit_code == 0, r.output
    assert "cluster zone-a" in r.stdout and "map v4" in r.stdout and "bucket map v2" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("target-0"))
    assert "1.0 GiB/2.0 GiB" in row and row.split()[-1] == "12"
    proxy_row = next(line for line in r.stdout.splitlines() if line.startswith("proxy-0"))
    assert " * " in proxy_row
    r = await invoke("cluster", "status", "--json")
    assert json.loads(r.stdout)["map_version"] == 4
