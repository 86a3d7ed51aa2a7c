"""The backend conformance suite: one set of tests every provider passes against a real server.

A provider's test module subclasses :class:`Conformance` and provides two fixtures:
``backend`` (a started :class:`aisync.backends.base.Backend`) and ``bucket`` (a fresh, empty
bucket name on it). Tests adapt to the provider's :class:`Capabilities`, and hold it to what
it claims: a checksum in ``capabilities.checksums`` is in every token (put, head, open,
listing) and is right. The few behaviours a provider cannot offer are listed, with reasons, in
:data:`DEVIATIONS` (one table for all).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import sys
import threading
import zlib
from pathlib import Path

import pytest

from aisync.backends.base import Backend, VersionToken
from aisync.util.errors import BucketNotFound, ObjectNotFound, PreconditionFailed

#: (provider, test name) -> why that provider cannot pass it. Keep this table short and honest.
DEVIATIONS: dict[tuple[str, str], str] = {
}


def _crc32c(data: bytes) -> str:
    import google_crc32c  # installed with the GCS SDK, the one provider that reports it

    return f"{google_crc32c.value(data):08x}"


#: How each checksum a provider may claim is computed, as the tokens carry it (lower-case hex).
DIGESTS = {
    "md5": lambda data: hashlib.md5(data).hexdigest(),
    "sha256": lambda data: hashlib.sha256(data).hexdigest(),
    "crc32": lambda data: f"{zlib.crc32(data):08x}",
    "crc32c": _crc32c,
}


def assert_claimed_checksums(backend: Backend, token: VersionToken, data: bytes,
                             where: str) -> None:
    """Every checksum the provider claims is in ``token`` and matches ``data``."""
    for name in sorted(backend.capabilities.checksums):
        got = getattr(token, name)
        assert got is not None, f"{backend.provider} claims {name} but its {where} has none"
        assert got == DIGESTS[name](data), f"{where}: wrong {name}"


def _unread_bytes_by_socket() -> dict[str, int]:
    """``socket:[inode]`` -> bytes received but not yet read, for every TCP socket here."""
    unread = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            unread[f"socket:[{fields[9]}]"] = int(fields[4].partition(":")[2], 16)
    return unread


def held_resources() -> set[str]:
    """What this process holds that a stream may leave behind: each regular file open
    (``fd N: path``) and each connection with bytes received but not read (``socket:[i]``)."""
    unread = _unread_bytes_by_socket()
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            what = os.readlink(f"/proc/self/fd/{fd}")
            regular = what.startswith("/") and stat.S_ISREG(os.stat(f"/proc/self/fd/{fd}").st_mode)
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
        if regular:
            held.add(f"fd {fd}: {what}")
        elif unread.get(what, 0) > 0:
            held.add(what)
    return held


def working_for(stream: object) -> list[str]:
    """Names of the threads (other than this one) running a method of ``stream`` (a read-ahead
    that outlived ``close`` would pin a thread of the backend's pool)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    busy = []
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        while frame is not None:
            if frame.f_locals.get("self") is stream:
                busy.append(names.get(ident, str(ident)))
                break
            frame = frame.f_back
    return busy


async def settle(predicate, timeout: float) -> None:
    """Poll ``predicate`` until it holds or ``timeout`` passed, letting the event loop run (a
    transport closes on its next turn); the caller asserts the outcome."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


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
        listed = (await backend.list_page(bucket, prefix="dir/")).entries
        assert [e.name for e in listed] == ["dir/obj.bin"]
        for where, got in [("put token", token), ("head", head), ("open", version),
                           ("listing", listed[0].version)]:
            assert_claimed_checksums(backend, got, data, where)

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
        """Closing a stream half read ends it and releases what it held: the file it read is
        closed, no connection is left with bytes it will never read (the object is far larger
        than any read-ahead, so a stream that keeps its source holds unread bytes), and no
        thread still works for it."""
        if not os.path.isdir("/proc/self/fd"):
            pytest.skip("needs /proc to see what the stream holds")
        size = 24 * 1024 * 1024
        await put_bytes(backend, bucket, "big", os.urandom(size), tmp_path)
        before = held_resources()
        stream = await backend.open(bucket, "big")
        async for chunk in stream:
            assert chunk
            break
        await stream.close()
        await settle(lambda: held_resources() <= before and not working_for(stream), 30)
        assert held_resources() <= before, f"still held: {held_resources() - before}"
        assert not working_for(stream), f"threads still reading: {working_for(stream)}"
        try:
            more = [chunk async for chunk in stream]
        except Exception:  # reading a closed stream may fail: it must not go on
            more = []
        assert not any(more), "a closed stream went on reading"
        assert (await backend.head(bucket, "big")).size == size
