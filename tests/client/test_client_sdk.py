"""SDK tests against a tiny in-test fake cluster (one proxy app, one target app, free ports).

The fake implements just enough of docs/api.md: buckets, paged listings, objects with ranges,
JSON errors (and the HEAD error-code header), and proxies that answer object requests with
``307``; an upload with ``Expect: 100-continue`` is redirected by the ``expect_handler`` before
its body is sent.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest
from aiohttp import web

from aisync.client import (
    AsyncClient,
    BodyNotReplayable,
    Client,
    ObjectEntry,
    ObjectInfo,
    parse_range,
)
from aisync.util.errors import (
    AisyncError,
    BucketAlreadyExists,
    BucketNotFound,
    InvalidBucketName,
    InvalidRange,
    NodeUnavailable,
    NotFound,
    ObjectNotFound,
)

# --------------------------------------------------------------------------------------------
# the fake cluster


class Store:
    def __init__(self) -> None:
        self.buckets: dict[str, int] = {}
        self.objects: dict[tuple[str, str], tuple[bytes, int]] = {}
        self.list_calls = 0


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except AisyncError as err:
        if request.method == "HEAD":
            return web.Response(status=err.status, headers={"X-Aisync-Error-Code": err.code})
        return web.json_response(err.to_dict(), status=err.status)


def _checksum(data: bytes) -> str:
    return f"xxh3:{len(data):016x}"  # the fake's stand-in checksum


def _obj_headers(bucket: str, name: str, data: bytes, mtime_ns: int) -> dict[str, str]:
    return {
        "ETag": f'"{_checksum(data)[5:]}"',
        "X-Aisync-Checksum": _checksum(data),
        "X-Aisync-Mtime-Ns": str(mtime_ns),
        "Accept-Ranges": "bytes",
    }


class TargetApp:
    """Serves objects from the shared store; optionally redirects every PUT elsewhere."""

    def __init__(self, store: Store, redirect_puts_to: str | None = None) -> None:
        self.store = store
        self.redirect_puts_to = redirect_puts_to
        self.put_bodies: list[bytes] = []
        self.put_lengths: list[str | None] = []
        self.app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024**2)
        path = "/v1/objects/{bucket}/{name:.+}"
        self.app.router.add_put(path, self.put)
        self.app.router.add_get(path, self.get, allow_head=False)
        self.app.router.add_head(path, self.head)
        self.app.router.add_delete(path, self.delete)

    def _key(self, request: web.Request) -> tuple[str, str]:
        bucket, name = request.match_info["bucket"], request.match_info["name"]
        if bucket not in self.store.buckets:
            raise BucketNotFound(f"ais://{bucket}: no such bucket")
        return bucket, name

    async def put(self, request: web.Request) -> web.StreamResponse:
        bucket, name = self._key(request)
        body = await request.read()
        self.put_bodies.append(body)
        self.put_lengths.append(request.headers.get("Content-Length"))
        if self.redirect_puts_to:
            raise web.HTTPTemporaryRedirect(self.redirect_puts_to + request.path_qs)
        declared = request.headers.get("X-Aisync-Checksum")
        if declared and declared != _checksum(body):
            from aisync.util.errors import ChecksumMismatch

            raise ChecksumMismatch("checksum mismatch")
        mtime = 1_700_000_000_000_000_000 + len(self.store.objects)
        self.store.objects[(bucket, name)] = (body, mtime)
        return web.json_response({"bucket": bucket, "provider": "ais", "name": name,
                                  "size": len(body), "checksum": _checksum(body),
                                  "mtime_ns": mtime})

    def _lookup(self, request: web.Request) -> tuple[str, str, bytes, int]:
        bucket, name = self._key(request)
        try:
            data, mtime = self.store.objects[(bucket, name)]
        except KeyError:
            raise ObjectNotFound(f"ais://{bucket}/{name}: no such object") from None
        return bucket, name, data, mtime

    async def get(self, request: web.Request) -> web.Response:
        bucket, name, data, mtime = self._lookup(request)
        headers = _obj_headers(bucket, name, data, mtime)
        rng = request.headers.get("Range")
        if not rng:
            return web.Response(body=data, headers=headers)
        spec = rng.removeprefix("bytes=")
        first, _, last = spec.partition("-")
        if not first:
            start, end = max(0, len(data) - int(last)), len(data) - 1
        else:
            start = int(first)
            end = min(int(last), len(data) - 1) if last else len(data) - 1
        if start >= len(data):
            raise InvalidRange(f"range {spec} outside 0-{len(data) - 1}")
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return web.Response(status=206, body=data[start:end + 1], headers=headers)

    async def head(self, request: web.Request) -> web.Response:
        bucket, name, data, mtime = self._lookup(request)
        headers = _obj_headers(bucket, name, data, mtime)
        headers["Content-Length"] = str(len(data))
        return web.Response(headers=headers)

    async def delete(self, request: web.Request) -> web.Response:
        bucket, name, _, _ = self._lookup(request)
        del self.store.objects[(bucket, name)]
        return web.Response(status=204)


class ProxyApp:
    """Serves buckets and cluster documents; redirects object requests to ``target_url``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.target_url = ""
        self.expect_redirects = 0
        self.put_body_bytes = 0
        self.redirects = 0
        self.app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024**2)
        r = self.app.router
        path = "/v1/objects/{bucket}/{name:.+}"
        r.add_put(path, self.put_object, expect_handler=self.expect_handler)
        r.add_route("GET", path, self.redirect)
        r.add_route("DELETE", path, self.redirect)
        r.add_route("HEAD", path, self.redirect)
        r.add_get("/v1/health", self.health)
        r.add_get("/v1/health/ready", self.ready)
        r.add_get("/v1/cluster/map", self.cluster_map)
        r.add_get("/v1/buckets", self.buckets)
        r.add_route("PUT", "/v1/buckets/{bucket}", self.create_bucket)
        r.add_route("HEAD", "/v1/buckets/{bucket}", self.head_bucket)
        r.add_route("DELETE", "/v1/buckets/{bucket}", self.destroy_bucket)
        r.add_get("/v1/buckets/{bucket}/info", self.bucket_info)
        r.add_get("/v1/buckets/{bucket}", self.list_objects, allow_head=False)
        self.ready_flag = True

    async def expect_handler(self, request: web.Request) -> None:
        if request.headers.get("Expect", "").lower() == "100-continue":
            self.expect_redirects += 1
            raise web.HTTPTemporaryRedirect(self.target_url + request.path_qs)

    async def put_object(self, request: web.Request) -> web.Response:
        body = await request.read()  # only reached by uploads without Expect
        self.put_body_bytes += len(body)
        raise web.HTTPTemporaryRedirect(self.target_url + request.path_qs)

    async def redirect(self, request: web.Request) -> web.Response:
        self.redirects += 1
        raise web.HTTPTemporaryRedirect(self.target_url + request.path_qs)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "id": "proxy-0", "role": "proxy", "cluster": "zone-a"})

    async def cluster_map(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "zone-a", "version": 3, "nodes": {}})

    async def ready(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=200 if self.ready_flag else 503)

    def _bucket(self, request: web.Request) -> str:
        from aisync.util.names import validate_bucket_name

        assert request.query.get("provider") == "ais"
        return validate_bucket_name(request.match_info["bucket"])

    async def buckets(self, request: web.Request) -> web.Response:
        return web.json_response({"buckets": [
            {"name": n, "provider": "ais", "namespace": "", "created": c}
            for n, c in sorted(self.store.buckets.items())], "version": 1})

    async def create_bucket(self, request: web.Request) -> web.Response:
        name = self._bucket(request)
        if name in self.store.buckets:
            raise BucketAlreadyExists(f"ais://{name}: bucket already exists")
        self.store.buckets[name] = 1
        return web.json_response({"name": name, "provider": "ais", "namespace": "",
                                  "created": "now"}, status=201)

    async def head_bucket(self, request: web.Request) -> web.Response:
        name = self._bucket(request)
        if name not in self.store.buckets:
            raise BucketNotFound(name)
        return web.Response()

    async def destroy_bucket(self, request: web.Request) -> web.Response:
        name = self._bucket(request)
        if self.store.buckets.pop(name, None) is None:
            raise BucketNotFound(f"ais://{name}: no such bucket")
        for key in [k for k in self.store.objects if k[0] == name]:
            del self.store.objects[key]
        return web.Response(status=204)

    async def bucket_info(self, request: web.Request) -> web.Response:
        name = self._bucket(request)
        if name not in self.store.buckets:
            raise BucketNotFound(f"ais://{name}: no such bucket")
        objs = [d for (b, _), (d, _) in self.store.objects.items() if b == name]
        return web.json_response({"name": name, "provider": "ais", "objects": len(objs),
                                  "bytes": sum(len(d) for d in objs)})

    async def list_objects(self, request: web.Request) -> web.Response:
        name = self._bucket(request)
        if name not in self.store.buckets:
            raise BucketNotFound(f"ais://{name}: no such bucket")
        self.store.list_calls += 1
        prefix = request.query.get("prefix", "")
        limit = int(request.query.get("limit", "1000"))
        token = request.query.get("token", "")
        keys = sorted(k for (b, k) in self.store.objects if b == name and k.startswith(prefix)
                      and k > token)
        page = keys[:limit]
        objects = []
        for key in page:
            data, mtime = self.store.objects[(name, key)]
            objects.append({"name": key, "size": len(data), "checksum": _checksum(data),
                            "mtime_ns": mtime})
        more = len(keys) > limit
        return web.json_response({"objects": objects, "next_token": page[-1] if more else None})


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


class FakeCluster:
    def __init__(self) -> None:
        self.store = Store()
        self.proxy = ProxyApp(self.store)
        self.target = TargetApp(self.store)
        self.runners: list[web.AppRunner] = []
        self.proxy_url = self.target_url = ""

    async def start(self) -> FakeCluster:
        runner, self.target_url = await _serve(self.target.app)
        self.runners.append(runner)
        self.proxy.target_url = self.target_url
        runner, self.proxy_url = await _serve(self.proxy.app)
        self.runners.append(runner)
        return self

    async def add_app(self, app: web.Application) -> str:
        runner, url = await _serve(app)
        self.runners.append(runner)
        return url

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()


@pytest.fixture
async def cluster():
    fake = await FakeCluster().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def client(cluster):
    async with AsyncClient(cluster.proxy_url, timeout=10) as c:
        yield c


# --------------------------------------------------------------------------------------------
# tests


async def test_health_ready_and_map(cluster, client):
    assert (await client.health())["role"] == "proxy"
    assert await client.ready() is True
    cluster.proxy.ready_flag = False
    assert await client.ready() is False
    assert (await client.cluster_map())["version"] == 3


async def test_bucket_lifecycle(cluster, client):
    assert await client.head_bucket("ais://train") is False
    created = await client.create_bucket("ais://train")
    assert created["name"] == "train"
    with pytest.raises(BucketAlreadyExists):
        await client.create_bucket("train")
    assert await client.head_bucket("train") is True
    assert [b["name"] for b in await client.list_buckets()] == ["train"]
    await client.put_object("train", "x", b"12345")
    info = await client.bucket_info("ais://train")
    assert (info["objects"], info["bytes"]) == (1, 5)
    await client.destroy_bucket("ais://train")
    assert await client.head_bucket("train") is False
    with pytest.raises(BucketNotFound):
        await client.bucket_info("train")


async def test_put_with_expect_is_redirected_before_body(cluster, client, tmp_path):
    cluster.store.buckets["train"] = 1
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    info = await client.put_object("ais://train", "dir/big.bin", src)
    assert isinstance(info, ObjectInfo)
    assert (info.bucket, info.name, info.size) == ("train", "dir/big.bin", len(payload))
    assert info.checksum == _checksum(payload) and info.etag == _checksum(payload)[5:]
    # the proxy redirected in its expect handler and never read a body byte
    assert cluster.proxy.expect_redirects == 1
    assert cluster.proxy.put_body_bytes == 0
    # the target got the whole body exactly once, intact
    assert cluster.target.put_bodies == [payload]
    assert cluster.store.objects[("train", "dir/big.bin")][0] == payload
    assert cluster.target.put_lengths == [str(len(payload))]  # sized, not chunked


async def test_expect_redirect_sends_zero_body_bytes_on_the_wire(cluster, tmp_path):
    """A raw-socket proxy: counts every byte the client sends after the request head."""
    cluster.store.buckets["b"] = 1
    after_head: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    heads: list[bytes] = []

    async def raw_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        path = head.split(b" ")[1].decode()
        writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                     + (cluster.target_url + path).encode()
                     + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        rest = await reader.read()  # until the client closes the connection
        after_head.set_result(len(rest))
        writer.close()

    server = await asyncio.start_server(raw_proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    payload = os.urandom(1 << 20)
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}", timeout=10) as c:
            info = await c.put_object("b", "wire", payload)
        assert info.size == len(payload)
        body_bytes_at_proxy = await asyncio.wait_for(after_head, 10)
    finally:
        server.close()
        await server.wait_closed()
    assert b"expect: 100-continue" in heads[0].lower()
    assert body_bytes_at_proxy == 0
    assert cluster.target.put_bodies == [payload]


@pytest.mark.parametrize("kind", ["bytes", "fileobj", "async_iter", "iterator"])
async def test_put_body_kinds(cluster, client, kind):
    cluster.store.buckets["b"] = 1
    payload = os.urandom(2_500_000)
    chunks = [payload[i:i + 700_000] for i in range(0, len(payload), 700_000)]

    async def agen():
        for c in chunks:
            yield c

    data = {"bytes": payload, "fileobj": io.BytesIO(payload), "async_iter": agen(),
            "iterator": iter(chunks)}[kind]
    seen: list[int] = []
    info = await client.put_object("ais://b", "obj", data, progress=seen.append)
    assert info.size == len(payload)
    assert cluster.store.objects[("b", "obj")][0] == payload
    assert sum(seen) == len(payload)
    assert cluster.proxy.put_body_bytes == 0


async def test_put_to_wrong_target_replays_file_and_refuses_stream(cluster, client, tmp_path):
    cluster.store.buckets["b"] = 1
    # a target that no longer owns the object: reads the body, then redirects to the owner
    stale = TargetApp(cluster.store, redirect_puts_to=cluster.target_url)
    cluster.proxy.target_url = await cluster.add_app(stale.app)
    payload = b"abc" * 100_000
    src = tmp_path / "f"
    src.write_bytes(payload)
    seen: list[int] = []
    info = await client.put_object("b", "o", src, progress=seen.append)
    assert info.size == len(payload)
    assert stale.put_bodies == [payload] and cluster.target.put_bodies == [payload]
    assert sum(seen) == len(payload)  # the replay did not double-count progress

    async def agen():
        yield payload

    with pytest.raises(BodyNotReplayable, match="cannot be re-read"):
        await client.put_object("b", "o2", agen())
    assert ("b", "o2") not in cluster.store.objects


async def test_get_redirect_range_head_delete(cluster, client):
    cluster.store.buckets["train"] = 1
    data = bytes(range(256)) * 10
    await client.put_object("ais://train", "a b/ü?.bin", data)
    assert await client.get_object("ais://train", "a b/ü?.bin") == data
    assert cluster.proxy.redirects == 1
    assert await client.get_object("train", "a b/ü?.bin", byte_range=(10, 19)) == data[10:20]
    assert await client.get_object("train", "a b/ü?.bin", byte_range=(2550, None)) == data[2550:]
    assert await client.get_object("train", "a b/ü?.bin", byte_range=(-5, None)) == data[-5:]
    async with client.open_object("train", "a b/ü?.bin", byte_range=(0, 99)) as reader:
        assert reader.info.size == len(data)  # whole-object size from Content-Range
        chunks = [c async for c in reader.iter_chunks(30)]
    assert [len(c) for c in chunks] == [30, 30, 30, 10]
    info = await client.head_object("train", "a b/ü?.bin")
    assert (info.size, info.checksum, info.mtime_ns) == (
        len(data), _checksum(data), cluster.store.objects[("train", "a b/ü?.bin")][1])
    await client.delete_object("train", "a b/ü?.bin")
    with pytest.raises(ObjectNotFound):
        await client.head_object("train", "a b/ü?.bin")


async def test_typed_errors(cluster, client):
    cluster.store.buckets["train"] = 1
    with pytest.raises(ObjectNotFound) as exc_info:
        await client.get_object("ais://train", "missing.jpg")
    assert isinstance(exc_info.value, FileNotFoundError)
    assert "ais://train/missing.jpg: no such object" in str(exc_info.value)
    # HEAD: no body, the code comes from the X-Aisync-Error-Code header
    with pytest.raises(ObjectNotFound):
        await client.head_object("train", "missing.jpg")
    with pytest.raises(BucketNotFound):
        await client.head_object("nope", "x")
    with pytest.raises(NotFound):
        await client.delete_object("train", "missing.jpg")
    await client.put_object("train", "small", b"0123")
    with pytest.raises(InvalidRange):
        await client.get_object("train", "small", byte_range=(100, 200))
    # client-side validation happens before any request
    with pytest.raises(InvalidBucketName):
        await client.put_object("bad..name", "x", b"")


async def test_unreachable_node_is_node_unavailable():
    import socket

    with socket.socket() as s:  # a port that is free now: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AsyncClient(f"127.0.0.1:{port}", timeout=5) as c:
        with pytest.raises(NodeUnavailable, match=f"127.0.0.1:{port}") as exc_info:
            await c.health()
        assert isinstance(exc_info.value, ConnectionError)
        assert exc_info.value.__cause__ is not None


async def test_too_many_redirects(cluster):
    app = web.Application()

    async def loop(request):
        raise web.HTTPTemporaryRedirect(request.path_qs)

    app.router.add_get("/v1/objects/{bucket}/{name:.+}", loop)
    url = await cluster.add_app(app)
    async with AsyncClient(url, timeout=5) as c:
        with pytest.raises(AisyncError, match="more than 5 redirects"):
            await c.get_object("b", "o")


async def test_iter_objects_pages_lazily(cluster, client):
    cluster.store.buckets["b"] = 1
    for i in range(7):
        cluster.store.objects[("b", f"k{i:02d}")] = (b"x" * i, i)
    cluster.store.objects[("b", "other")] = (b"", 0)
    page = await client.list_objects("b", prefix="k", limit=3)
    assert [e.name for e in page.objects] == ["k00", "k01", "k02"] and page.next_token == "k02"
    cluster.store.list_calls = 0
    it = client.iter_objects("ais://b", prefix="k", page_size=3)
    first = await anext(it)
    assert first == ObjectEntry("k00", 0, _checksum(b""), 0)
    assert cluster.store.list_calls == 1  # only the first page was fetched so far
    rest = [e async for e in it]
    assert [e.name for e in rest] == [f"k{i:02d}" for i in range(1, 7)]
    assert cluster.store.list_calls == 3  # 3 + 3 + 1


async def test_download_atomic(cluster, client, tmp_path):
    cluster.store.buckets["b"] = 1
    data = os.urandom(1_500_000)
    await client.put_object("b", "d/file.bin", data)
    dest = tmp_path / "out.bin"
    seen: list[int] = []
    infos: list[ObjectInfo] = []
    info = await client.download("b", "d/file.bin", dest, progress=seen.append,
                                 on_info=infos.append)
    assert dest.read_bytes() == data and info.size == len(data) and sum(seen) == len(data)
    assert infos == [info]
    # a failed download leaves neither the destination nor a temp file behind
    with pytest.raises(ObjectNotFound):
        await client.download("b", "missing", tmp_path / "never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


async def test_sync_client_facade(cluster, tmp_path):
    def work() -> None:
        with Client(cluster.proxy_url, timeout=10) as c:
            assert c.ready() is True
            c.create_bucket("ais://s")
            for i in range(5):
                c.put_object("ais://s", f"n{i}", f"v{i}".encode())
            src = tmp_path / "up.txt"
            src.write_bytes(b"from a file")
            assert c.put_object("s", "file", Path(src)).size == 11
            assert [e.name for e in c.iter_objects("s", page_size=2)] == [
                "file", "n0", "n1", "n2", "n3", "n4"]
            assert c.get_object("s", "n3") == b"v3"
            assert c.head_object("s", "file").size == 11
            c.download("s", "file", tmp_path / "down.txt")
            assert (tmp_path / "down.txt").read_bytes() == b"from a file"
            c.delete_object("s", "n0")
            with pytest.raises(ObjectNotFound):
                c.get_object("s", "n0")
        with pytest.raises(RuntimeError, match="closed"):
            c.health()

    await asyncio.to_thread(work)


def test_parse_range():
    assert parse_range("0-99") == (0, 99)
    assert parse_range("100-") == (100, None)
    assert parse_range("-5") == (-5, None)
    for bad in ("", "-", "a-b", "9-1", "5"):
        with pytest.raises(InvalidRange):
            parse_range(bad)
