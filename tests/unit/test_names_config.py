"""Name rules, URIs, ranges and configuration loading."""

from __future__ import annotations

import pytest

from aisync.config import load_node_config, parse_duration
from aisync.node.http import parse_range
from aisync.util.errors import (
    ConfigError,
    InvalidArgument,
    InvalidBucketName,
    InvalidObjectName,
    InvalidRange,
)
from aisync.util.names import BucketRef, parse_uri, validate_bucket_name, validate_object_name


@pytest.mark.parametrize("name", ["a", "train", "Train-2", "a.b_c-d", "x" * 63, "9lives"])
def test_valid_bucket_names(name):
    assert validate_bucket_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", ".a", "a..b", "x" * 64, "a/b", "a b", "ä"])
def test_invalid_bucket_names(name):
    with pytest.raises(InvalidBucketName):
        validate_bucket_name(name)


@pytest.mark.parametrize("name", ["a", "a/b/c", "a b", "ünï/名", "x" * 1024, "a..b", ".hidden",
                                  "a//b", "trailing/"])
def test_valid_object_names(name):
    assert validate_object_name(name) == name


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "..", ".", "a/./b", "a\x00b",
                                  "x" * 1025, "ü" * 513])
def test_invalid_object_names(name):
    with pytest.raises(InvalidObjectName):
        validate_object_name(name)


def test_invalid_names_are_value_errors():
    with pytest.raises(ValueError):
        validate_object_name("")


@pytest.mark.parametrize("uri,expected", [
    ("ais://train", (BucketRef("train"), "")),
    ("train/a/b.jpg", (BucketRef("train"), "a/b.jpg")),
    ("ais://train/images/", (BucketRef("train"), "images/")),
    ("ais://@zone-a/ckpt/step-1.pt", (BucketRef("ckpt", namespace="zone-a"), "step-1.pt")),
    ("s3://data/x", (BucketRef("data", provider="s3"), "x")),
    ("aws://data", (BucketRef("data", provider="s3"), "")),
])
def test_parse_uri(uri, expected):
    assert parse_uri(uri) == expected


@pytest.mark.parametrize("uri", ["ftp://b/x", "ais://", "ais://bad..b/x", "ais://b/../x"])
def test_parse_uri_rejects(uri):
    with pytest.raises(InvalidArgument):
        parse_uri(uri)


def test_bucket_uname_and_str():
    ref = BucketRef("ckpt", namespace="zone-a")
    assert ref.uname == "ais/@zone-a/ckpt"
    assert str(ref) == "ais://@zone-a/ckpt"


@pytest.mark.parametrize("header,size,expected", [
    (None, 10, None), ("bytes=0-4", 10, (0, 5)), ("bytes=5-", 10, (5, 5)),
    ("bytes=-3", 10, (7, 3)), ("bytes=-30", 10, (0, 10)), ("bytes=8-100", 10, (8, 2)),
    ("bytes=0-0", 1, (0, 1)), ("bytes=0-1,4-5", 10, None),
])
def test_ranges(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header,size", [
    ("bytes=10-", 10), ("bytes=5-2", 10), ("bytes=-0", 10), ("bytes=x-1", 10), ("items=0-1", 10),
    ("bytes=0-", 0), ("bytes=-", 10),
])
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(InvalidRange):
        parse_range(header, size)


@pytest.mark.parametrize("raw,seconds", [(5, 5.0), ("250ms", 0.25), ("10s", 10.0), ("5m", 300.0),
                                         ("1.5h", 5400.0), ("2d", 172800.0), ("3", 3.0)])
def test_durations(raw, seconds):
    assert parse_duration(raw) == seconds


def test_config_layers_file_env_overrides(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("role: target\nport: 6000\nkeepalive:\n  interval: 3s\n")
    cfg = load_node_config(path, environ={"AISYNC_PORT": "7000",
                                          "AISYNC_KEEPALIVE__DEAD_AFTER": "9s",
                                          "AISYNC_STORAGE__MOUNTPATHS": "[/a, /b]",
                                          "AISYNC_ENDPOINT": "http://cli-only",
                                          "AISYNC_CLUSTER_DIR": "/cli/only",
                                          "OTHER": "x"})
    assert (cfg.role, cfg.port) == ("target", 7000)
    assert (cfg.keepalive.interval, cfg.keepalive.dead_after) == (3.0, 9.0)
    assert [str(p) for p in cfg.storage.mountpaths] == ["/a", "/b"]
    cfg = load_node_config(path, overrides={"port": 1234}, environ={"AISYNC_PORT": "7000"})
    assert cfg.port == 1234


@pytest.mark.parametrize("text,needle", [
    ("role: gateway\n", "role"),
    ("port: 99999\n", "port"),
    ("keepalive:\n  interval: soon\n", "keepalive.interval"),
    ("unknown_field: 1\n", "unknown_field"),
    ("- a list\n", "mapping"),
    ("role: [unclosed\n", "YAML"),
])
def test_config_errors_are_clear(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_node_config(path, environ={})
    assert needle in str(exc.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_node_config(tmp_path / "nope.yaml", environ={})


def test_shipped_default_config_is_valid():
    from pathlib import Path

    cfg = load_node_config(Path(__file__).parents[2] / "config" / "node.yaml", environ={})
    assert cfg.keepalive.dead_after <= 10
