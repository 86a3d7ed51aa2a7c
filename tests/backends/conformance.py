"""The backend conformance suite: one set of tests every provider passes against a real server.

A provider's test module subclasses :class:`Conformance` and provides two fixtures:
``backend`` (a started :class:`aisync.backends.base.Backend`) and ``bucket`` (a fresh, empty
bucket name on it). Tests adapt to the provider's :class:`Capabilities`; the few behaviours a
provider cannot offer are listed, with reasons, in :data:`DEVIATIONS` (one table for all).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from aisync.backends.base import Backend, VersionToken
from aisync.util.errors import BucketNotFound, ObjectNotFound, PreconditionFailed

#: (provider, test name) -> why that provider cannot pass it. Keep this table short and honest.
DEVIATIONS: dict[tuple[str, str], str] = {
}


async def read_all(backend: Backend, bucket: str, name: str, **kwargs) -> tuple[bytes, VersionToken]:
    async with await backend.open(bucket, name, **kwargs) as stream:
        parts = [chunk async for chunk in stream]
        return b"".join(parts), stream.version


async def put_bytes(backend: Backend, bucket: str, name: str, data: bytes,
                    tmp: Path) -> VersionToken:
    path = tmp / f"src-{hashlib.md5(name.encode()).hexdigest()}-{len(data)}"
    path.write_bytes(data)
    try:
        return await backend.put(bucket, name, path)
    finally:
        path.unlink(missing_ok=True)


class Conformance:
    @pytest.fixture(autouse=True)
    def _deviations(self, request, backend):
        reason = DEVIATIONS.get((backend.provider, request.function.__name__))
        if reason:
            pytest.skip(f"known deviation of {backend.provider}: {reason}")

    @pytest.mark.parametrize("size", [0, 1, 1000, 3 * 1024 * 1024 + 17])
    async def test_round_trip(self, backend, bucket, tmp_path, size):
        data = os.urandom(size)
        token = await put_bytes(backend, bucket, "dir/obj.bin", data, tmp_path)
        assert token.size == size
        got, version = await read_all(backend, bucket, "dir/obj.bin")
        assert got == data
        assert version.size == size
        head = await backend.head(bucket, "dir/obj.bin")
        assert head.size == size
        assert head.etag and head.etag == token.etag == version.etag
        if "md5" in backend.capabilities.checksums and head.md5:
            assert head.md5 == hashlib.md5(data).hexdigest()

    async def test_ranges(self, backend, bucket, tmp_path):
        data = os.urandom(200_000)
        await put_bytes(backend, bucket, "r", data, tmp_path)
        for first, last in [(0, 0), (0, 9), (10, 99), (199_990, 199_999), (150_000, 250_000)]:
            got, _ = await read_all(backend, bucket, "r", byte_range=(first, last))
            assert got == data[first:last + 1], (first, last)

    async def test_listing_prefix_order_and_pages(self, backend, bucket, tmp_path):
        names = sorted([f"p/{i:03d}" for i in range(23)] + ["p-dash", "q/1", "q/2/deep", "z",
                                                            "ünï/x", "a b/c"],
                       key=lambda n: n.encode())
        await asyncio.gather(*(put_bytes(backend, bucket, n, n.encode(), tmp_path)
                               for n in names))
        seen, token, pages = [], None, 0
        while True:
            page = await backend.list_page(bucket, token=token, limit=5)
            assert len(page.entries) <= 5
            seen += [e.name for e in page.entries]
            pages += 1
            token = page.next_token
            if token is None:
                break
            assert pages < 50
        assert seen == names
        assert pages >= 6
        sub = await backend.list_page(bucket, prefix="p/", limit=1000)
        assert [e.name for e in sub.entries] == [n for n in names if n.startswith("p/")]
        assert sub.next_token is None
        by_name = {e.name: e.version for e in sub.entries}
        assert all(v.size == 5 for v in by_name.values())
        assert (await backend.list_page(bucket, prefix="nothing/")).entries == []

    async def test_missing_object(self, backend, bucket):
        with pytest.raises(ObjectNotFound):
            await backend.head(bucket, "missing")
        with pytest.raises(FileNotFoundError):
            await backend.open(bucket, "missing/deeper")
        with pytest.raises(ObjectNotFound):
            await backend.delete(bucket, "missing")

    async def test_missing_bucket(self, backend):
        with pytest.raises(BucketNotFound):
            await backend.head("aisync-no-such-bucket-x1", "x")
        with pytest.raises(BucketNotFound):
            await backend.list_page("aisync-no-such-bucket-x1")

    async def test_token_changes_on_same_size_overwrite(self, backend, bucket, tmp_path):
        first = await put_bytes(backend, bucket, "same", b"A" * 4096, tmp_path)
        second = await put_bytes(backend, bucket, "same", b"B" * 4096, tmp_path)
        assert first.size == second.size == 4096
        assert first != second
        assert (first.etag, first.version_id) != (second.etag, second.version_id)
        head = await backend.head(bucket, "same")
        assert (head.etag, head.version_id) == (second.etag, second.version_id)
        got, _ = await read_all(backend, bucket, "same")
        assert got == b"B" * 4096

    async def test_pinned_read_fails_after_overwrite(self, backend, bucket, tmp_path):
        old = await put_bytes(backend, bucket, "pin", b"old-bytes" * 100, tmp_path)
        got, _ = await read_all(backend, bucket, "pin", if_version=old)
        assert got == b"old-bytes" * 100
        await put_bytes(backend, bucket, "pin", b"new-bytes" * 100, tmp_path)
        with pytest.raises(PreconditionFailed):
            await read_all(backend, bucket, "pin", if_version=old)

    async def test_delete(self, backend, bucket, tmp_path):
        await put_bytes(backend, bucket, "gone", b"x", tmp_path)
        await put_bytes(backend, bucket, "kept", b"y", tmp_path)
        await backend.delete(bucket, "gone")
        with pytest.raises(ObjectNotFound):
            await backend.head(bucket, "gone")
        assert [e.name for e in (await backend.list_page(bucket)).entries] == ["kept"]

    async def test_versioned_tokens(self, backend, bucket, tmp_path):
        if not backend.capabilities.versioned:
            pytest.skip(f"{backend.provider} does not report version ids (see Capabilities)")
        a = await put_bytes(backend, bucket, "v", b"1", tmp_path)
        b = await put_bytes(backend, bucket, "v", b"2", tmp_path)
        assert a.version_id and b.version_id and a.version_id != b.version_id

    async def test_copy(self, backend, bucket, tmp_path):
        if not backend.capabilities.server_side_copy:
            pytest.skip(f"{backend.provider} has no server-side copy (see Capabilities)")
        data = os.urandom(70_000)
        await put_bytes(backend, bucket, "src", data, tmp_path)
        token = await backend.copy(bucket, "src", "dst/copy")
        assert token.size == len(data)
        assert (await read_all(backend, bucket, "dst/copy"))[0] == data

    async def test_stream_can_be_closed_early(self, backend, bucket, tmp_path):
        await put_bytes(backend, bucket, "big", os.urandom(5 * 1024 * 1024), tmp_path)
        stream = await backend.open(bucket, "big")
        async for chunk in stream:
            assert chunk
            break
        await stream.close()
        assert (await backend.head(bucket, "big")).size == 5 * 1024 * 1024
