"""What nodes parse from clients and peers refuses hostile shapes with typed 4xx errors: JSON
nested past the limit, NaN, numbers past Python's digit limit, Range positions of any length,
fs:// names no file can have. (The same inputs against a live cluster: tests/cluster/
test_hostile_input.py and tests/fuzz/.)"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from aisync.backends.fs import NAME_MAX, FsBackend
from aisync.node.http import parse_range
from aisync.util.errors import InvalidArgument, InvalidObjectName, InvalidRange
from aisync.util.jsondoc import MAX_JSON_DEPTH, parse_json


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("text", [nested(MAX_JSON_DEPTH + 1), nested(1_000), nested(100_000),
                                  nested_objects(MAX_JSON_DEPTH + 1), nested_objects(5_000),
                                  '{"a": [' + nested(MAX_JSON_DEPTH) + "]}"])
def test_json_nested_past_the_limit_is_invalid_argument(text):
    with pytest.raises(InvalidArgument, match="nested deeper than"):
        parse_json(text, "body")
    with pytest.raises(InvalidArgument, match="nested deeper than"):
        parse_json(text.encode(), "body")


def test_json_at_the_limit_parses():
    assert parse_json(nested(MAX_JSON_DEPTH), "body") == json.loads(nested(MAX_JSON_DEPTH))
    doc = parse_json(nested_objects(MAX_JSON_DEPTH), "body")
    assert isinstance(doc, dict)
    wide = {"k": [[{"x": i}] for i in range(5_000)]}  # wide, not deep: many brackets, depth 4
    assert parse_json(json.dumps(wide), "body") == wide


@pytest.mark.parametrize("raw", [b"NaN", b'{"a": Infinity}', b"[-Infinity]", b"[1e999]",
                                 b'{"a": -1.5e400}', b"{", b"",
                                 b'{"a": 1} trailing', b"\xff\xfe\xfa", b'{"a": "\xc3\x28"}',
                                 b"1" * 5_000, b'{"a": ' + b"9" * 4_301 + b"}"])
def test_not_json_is_invalid_argument(raw):
    with pytest.raises(InvalidArgument) as exc:
        parse_json(raw, "the body")
    assert exc.value.status == 400
    assert exc.value.message.startswith("the body:")


def test_json_in_utf16_and_utf8_parses():
    doc = {"name": "caf\u00e9", "n": [1, 2.5, None, True]}
    assert parse_json(json.dumps(doc, ensure_ascii=False).encode("utf-16"), "b") == doc
    assert parse_json(json.dumps(doc, ensure_ascii=False).encode(), "b") == doc


SIZE = 1_000
HUGE = "9" * 5_000


@pytest.mark.parametrize("header,expected", [
    ("bytes=0-9", (0, 10)),
    ("bytes=990-", (990, 10)),
    ("bytes=-10", (990, 10)),
    (f"bytes=0-{HUGE}", (0, SIZE)),  # a last position past the end is clamped
    (f"bytes=10-{HUGE}", (10, SIZE - 10)),
    (f"bytes=-{HUGE}", (0, SIZE)),  # a suffix longer than the object: all of it
    ("bytes=" + "0" * 5_000 + "7-" + "0" * 5_000 + "8", (7, 2)),  # leading zeros are zeros
    ("bytes=0-1,5-6", None),  # multi-range: the whole object
    (None, None),
])
def test_range_positions_of_any_length(header, expected):
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}",
                                    "bytes=" + "1" * 4_301 + "-", f"bytes=1000-{HUGE}"])
def test_range_starting_past_the_end_is_416_with_the_size(header):
    with pytest.raises(InvalidRange) as exc:
        parse_range(header, SIZE)
    assert exc.value.status == 416 and exc.value.details == {"size": SIZE}
    assert len(exc.value.message) < 200  # the header is not echoed whole


@pytest.mark.parametrize("header", ["bytes=\u0663-", "bytes=-\u0663", "bytes=1-\uff15",
                                    "bytes=a-b", "bytes=-", "items=0-1", "bytes=5-1"])
def test_malformed_ranges_are_416(header):
    with pytest.raises(InvalidRange):
        parse_range(header, SIZE)


# -- fs:// names no file can have --

def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def fs(tmp_path):
    backend = FsBackend({"b": tmp_path}, fsync=False)
    yield backend
    run(backend.close())


@pytest.mark.parametrize("name", ["x" * (NAME_MAX + 1), "dir/" + "\u00e9" * 128 + "/f",
                                  "a/" + "y" * 1000])
def test_fs_name_component_over_name_max_is_invalid_object_name(fs, tmp_path, name):
    (tmp_path / "src").write_bytes(b"data")
    with pytest.raises(InvalidObjectName, match=f"longer than {NAME_MAX} bytes"):
        run(fs.head("b", name))
    with pytest.raises(InvalidObjectName):
        run(fs.open("b", name))
    with pytest.raises(InvalidObjectName):
        run(fs.put("b", name, tmp_path / "src"))
    with pytest.raises(InvalidObjectName):
        run(fs.delete("b", name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing was created


def test_fs_name_at_name_max_is_a_file(fs, tmp_path):
    (tmp_path / "src").write_bytes(b"data")
    name = "d/" + "z" * NAME_MAX
    assert run(fs.put("b", name, tmp_path / "src")).size == 4
    assert run(fs.head("b", name)).size == 4


def test_fs_path_too_long_for_the_system_is_invalid_object_name(tmp_path):
    """Components within NAME_MAX whose whole path passes PATH_MAX: the system's
    ENAMETOOLONG goes through the backend's error table, never a 502 BackendError."""
    root = tmp_path
    while len(str(root)) < 3_300:
        root = root / ("r" * 200)
    root.mkdir(parents=True)
    backend = FsBackend({"b": root}, fsync=False)
    try:
        name = "/".join(["n" * 250] * 4)  # 1,003 bytes: a valid object name
        assert len(str(root)) + len(name) > os.pathconf("/", "PC_PATH_MAX")
        with pytest.raises(InvalidObjectName, match="too long for the file system"):
            run(backend.head("b", name))
        with pytest.raises(InvalidObjectName):
            run(backend.open("b", name))
    finally:
        run(backend.close())
