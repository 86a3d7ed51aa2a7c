"""The fs provider (a POSIX directory) against a real temporary directory."""

from __future__ import annotations

import os

import pytest

from aisync.backends.fs import FsBackend
from aisync.util.errors import InvalidObjectName, ObjectNotFound
from tests.backends.conformance import Conformance, put_bytes


@pytest.fixture
async def backend(tmp_path):
    root = tmp_path / "share"
    root.mkdir()
    async with FsBackend({"conf": root}) as b:
        yield b


@pytest.fixture
def bucket():
    return "conf"


class TestFsConformance(Conformance):
    pass


async def test_names_cannot_escape_the_directory(backend, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (tmp_path / "share" / "link").symlink_to(tmp_path)
    for name in ["../secret.txt", "/etc/passwd", "a/../../secret.txt", "link/secret.txt"]:
        with pytest.raises((InvalidObjectName, ObjectNotFound)):
            await backend.head("conf", name)
    listed = [e.name for e in (await backend.list_page("conf")).entries]
    assert listed == []  # symlinks are neither followed nor listed


async def test_out_of_band_edit_in_place_changes_the_token(backend, tmp_path):
    v1 = await put_bytes(backend, "conf", "f", b"a" * 100, tmp_path)
    path = tmp_path / "share" / "f"
    with open(path, "r+b") as f:  # another tool rewrites it in place, same size
        f.write(b"b" * 100)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # even with a coarse clock
    v2 = await backend.head("conf", "f")
    assert v2.size == v1.size and v2.etag != v1.etag


async def test_on_demand_checksum(backend, tmp_path):
    import hashlib

    await put_bytes(backend, "conf", "c", b"content", tmp_path)
    assert await backend.checksum("conf", "c") == hashlib.md5(b"content").hexdigest()


class SwappingFsBackend(FsBackend):
    """Plays the racer: right after a name's path passed the check, directory ``d`` of the
    bucket is replaced by a symlink to ``outside`` (as another writer of the share could)."""

    def __init__(self, roots, outside) -> None:
        super().__init__(roots)
        self.outside = outside

    def path(self, bucket, name):
        checked = super().path(bucket, name)
        inner = self.roots[bucket] / "d"
        if inner.is_dir() and not inner.is_symlink():
            inner.rename(self.roots[bucket] / "d-was")
            inner.symlink_to(self.outside)
        return checked


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="the recheck needs /proc")
@pytest.mark.parametrize("operation", ["open", "put", "delete", "checksum"])
async def test_a_directory_swapped_after_the_check_does_not_lead_out(tmp_path, operation):
    share, outside = tmp_path / "share", tmp_path / "outside"
    (share / "d").mkdir(parents=True)
    outside.mkdir()
    (share / "d" / "f").write_bytes(b"inside")
    (outside / "f").write_bytes(b"outside")
    async with SwappingFsBackend({"b": share}, outside) as backend:
        with pytest.raises(InvalidObjectName):
            if operation == "open":
                await backend.open("b", "d/f")
            elif operation == "put":
                await put_bytes(backend, "b", "d/f", b"written", tmp_path)
            elif operation == "delete":
                await backend.delete("b", "d/f")
            else:
                await backend.checksum("b", "d/f")
    assert sorted(p.name for p in outside.iterdir()) == ["f"]
    assert (outside / "f").read_bytes() == b"outside"
