"""Real S3 clients against a live cluster's S3 front end, continued: rclone and fsspec/s3fs
(the conventions are those of ``test_clients.py``)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.s3.clients import (
    BIG,
    ODD,
    PART,
    TIMEOUT,
    MiB,
    clean_env,
    data,
    keys,
    make_tree,
    md5,
    multipart_etag,
    need,
    read_tree,
    remote_tree,
    run,
)
from tests.s3.conftest import ACCESS_KEY, SECRET_KEY

# -- rclone -----------------------------------------------------------------------------------

class Rclone:
    """rclone with an on-the-fly remote. The endpoint is quoted: unquoted, its ``:`` ends the
    remote's parameters. AWS_CA_BUNDLE is never passed (rclone 1.60 fails on it over HTTP)."""

    def __init__(self, binary: str, endpoint: str, tmp_path: Path) -> None:
        self.remote = (f":s3,provider=Other,access_key_id={ACCESS_KEY},"
                       f"secret_access_key={SECRET_KEY},endpoint='{endpoint}':")
        config = tmp_path / "rclone.conf"
        config.write_text("")
        self.env = clean_env(tmp_path)
        assert "AWS_CA_BUNDLE" not in self.env
        self.binary = binary
        self.options = ["--config", str(config), "--retries", "1", "--low-level-retries", "1",
                        "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"]

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return run([self.binary, *self.options, *args], self.env)

    def at(self, path: str) -> str:
        return self.remote + path


@pytest.fixture(scope="module")
def rclone_bin() -> str:
    found = shutil.which("rclone")
    need("rclone", found)
    return str(found)


@pytest.fixture
def rclone(rclone_bin, s3_endpoint, tmp_path) -> Rclone:
    return Rclone(rclone_bin, s3_endpoint, tmp_path)


def copied(log: str) -> list[str]:
    return sorted(m[1] for m in re.finditer(r"INFO  : (.+?): Copied \(", log))


@pytest.mark.usefixtures("rclone_bin")
def test_rclone_copy_check_lsf_cat(rclone, s3, unique, tmp_path):
    bucket = unique
    src = tmp_path / "src"
    tree = make_tree(src, "rclone")
    tree["big.bin"] = data(BIG, "rclone-big")
    (src / "big.bin").write_bytes(tree["big.bin"])

    rclone("mkdir", rclone.at(bucket))
    s3.head_bucket(Bucket=bucket)
    log = rclone("copy", "-v", str(src), rclone.at(f"{bucket}/tree")).stderr
    assert copied(log) == sorted(tree)
    assert remote_tree(s3, bucket, "tree/") == tree
    assert s3.head_object(Bucket=bucket, Key="tree/big.bin")["ETag"] == \
        multipart_etag(tree["big.bin"])
    assert copied(rclone("copy", "-v", str(src), rclone.at(f"{bucket}/tree")).stderr) == []

    check = rclone("check", str(src), rclone.at(f"{bucket}/tree"))
    assert "0 differences found" in check.stderr
    assert f"{len(tree)} matching files" in check.stderr

    dst = tmp_path / "dst"
    rclone("copy", rclone.at(f"{bucket}/tree"), str(dst))
    assert read_tree(dst) == tree
    assert "0 differences found" in rclone("check", rclone.at(f"{bucket}/tree"),
                                           str(dst)).stderr

    assert set(rclone("lsf", "-R", "--files-only", rclone.at(bucket)).stdout.splitlines()) == \
        {f"tree/{k}" for k in tree}
    assert set(rclone("lsf", rclone.at(f"{bucket}/tree")).stdout.splitlines()) == \
        {"top.txt", "big.bin", "a/", "c/"}
    # the same through V1 listings a key a page (NextMarker with a delimiter)
    assert set(rclone("lsf", "--s3-list-chunk", "1", "--s3-list-version", "1",
                      rclone.at(f"{bucket}/tree/c")).stdout.splitlines()) == \
        {"sp ace+plus.txt", "uni-\u00e9t\u00e9.txt", "empty", ODD[2:]}
    sums = {}
    for line in rclone("md5sum", rclone.at(f"{bucket}/tree")).stdout.splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    assert sums == {k: md5(v) for k, v in tree.items()}

    for rel in (ODD, "big.bin"):
        proc = subprocess.run([rclone.binary, *rclone.options, "cat",
                               rclone.at(f"{bucket}/tree/{rel}")], env=rclone.env,
                              capture_output=True, timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == tree[rel]


@pytest.mark.usefixtures("rclone_bin")
def test_rclone_sync_and_delete(rclone, s3, unique, tmp_path):
    bucket = unique
    src = tmp_path / "src"
    tree = make_tree(src, "rclone-sync")
    rclone("sync", str(src), rclone.at(f"{bucket}/tree"))
    assert remote_tree(s3, bucket, "tree/") == tree

    (src / "a" / "b" / "deep.dat").unlink()
    (src / "c" / "new.txt").write_bytes(b"new")
    log = rclone("sync", "-v", str(src), rclone.at(f"{bucket}/tree")).stderr
    assert "a/b/deep.dat: Deleted" in log
    assert copied(log) == ["c/new.txt"]
    assert remote_tree(s3, bucket, "tree/") == read_tree(src)
    assert "a/b/deep.dat" not in rclone("lsf", "-R", rclone.at(f"{bucket}/tree")).stdout

    rclone("delete", rclone.at(f"{bucket}/tree/c"))
    assert keys(s3, bucket) == {"tree/top.txt", "tree/a/one.bin"}
    rclone("delete", rclone.at(bucket))
    assert keys(s3, bucket) == set()


# -- fsspec / s3fs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3fs_module():
    need("s3fs (PyPI)", importlib.util.find_spec("s3fs"))
    import s3fs

    return s3fs


@pytest.fixture
def s3fs_fs(s3fs_module, s3_endpoint, tmp_path, monkeypatch):
    # botocore in this process: no config or credentials from outside the test
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fs = s3fs_module.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, skip_instance_cache=True,
                           use_listings_cache=False,
                           client_kwargs={"endpoint_url": s3_endpoint,
                                          "region_name": "us-east-1"})
    return fs


@pytest.mark.usefixtures("s3fs_module")
def test_s3fs(s3fs_fs, s3, unique, tmp_path):
    fs, bucket = s3fs_fs, unique
    fs.mkdir(bucket)
    assert bucket in fs.ls("")
    s3.head_bucket(Bucket=bucket)

    src = tmp_path / "src"
    tree = make_tree(src, "s3fs")
    fs.put(f"{src}/", f"{bucket}/tree/", recursive=True)
    assert remote_tree(s3, bucket, "tree/") == tree
    assert sorted(fs.find(f"{bucket}/tree")) == sorted(f"{bucket}/tree/{k}" for k in tree)
    assert sorted(fs.ls(f"{bucket}/tree", detail=False)) == \
        [f"{bucket}/tree/{n}" for n in ("a", "c", "top.txt")]
    assert sorted(fs.glob(f"{bucket}/tree/**/*.txt")) == \
        sorted(f"{bucket}/tree/{k}" for k in tree if k.endswith(".txt"))
    assert fs.glob(f"{bucket}/tree/c/sp*") == [f"{bucket}/tree/c/sp ace+plus.txt"]

    info = fs.info(f"{bucket}/tree/a/one.bin")
    assert (info["type"], info["size"], info["ETag"]) == \
        ("file", len(tree["a/one.bin"]), f'"{md5(tree["a/one.bin"])}"')
    assert fs.info(f"{bucket}/tree/a")["type"] == "directory"
    assert fs.cat_file(f"{bucket}/tree/c/uni-\u00e9t\u00e9.txt") == tree["c/uni-\u00e9t\u00e9.txt"]
    assert fs.cat_file(f"{bucket}/tree/{ODD}") == tree[ODD]

    # a write larger than the block size: a multipart upload of 5 MiB parts
    big = data(BIG, "s3fs-big")
    with fs.open(f"{bucket}/big.bin", "wb", block_size=PART) as f:
        for i in range(0, BIG, MiB):
            f.write(big[i:i + MiB])
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ETag"] == multipart_etag(big)
    assert fs.info(f"{bucket}/big.bin")["size"] == BIG
    with fs.open(f"{bucket}/big.bin", "rb", block_size=MiB) as f:
        f.seek(7_654_321)
        assert f.read(100_000) == big[7_654_321:7_754_321]
        f.seek(0)
        assert f.read() == big
    with fs.open(f"{bucket}/small.txt", "wb") as f:
        f.write(b"small write")
    assert s3.get_object(Bucket=bucket, Key="small.txt")["Body"].read() == b"small write"

    fs.rm(f"{bucket}/small.txt")
    assert not fs.exists(f"{bucket}/small.txt")
    fs.rm(f"{bucket}/tree", recursive=True)
    assert keys(s3, bucket) == {"big.bin"}
    fs.rm(bucket, recursive=True)
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_no_unhandled_errors(s3_cluster):
    assert s3_cluster.unhandled_errors() == []
