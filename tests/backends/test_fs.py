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
