"""Real S3 clients against a live cluster's S3 front end: awscli, s3cmd, rclone and fsspec/s3fs.

Each client runs as its users run it (the CLIs as subprocesses, s3fs in process) with every piece
of configuration in the test's tmp dir: no global config is read or written (``HOME`` points
into tmp_path, awscli's config and credentials files, s3cmd's ``-c`` file and rclone's
``--config`` file are all there). Data is checked byte for byte, through the client that wrote it
and through boto3 (the ``s3`` fixture), and multipart uploads are checked by their S3 ETag
(``md5(part md5s)-N``), which proves the client really split the object.

A missing client skips its tests on a developer's machine and fails them in CI (``CI`` set):
``.ci/clients.sh`` installs s3cmd and rclone, pyproject's dev extras awscli and s3fs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.request import urlopen

import pytest

from tests.s3.clients import (
    BIG,
    TREE,
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

# -- awscli -----------------------------------------------------------------------------------

class Aws:
    """``aws`` with an isolated config: 8 MB multipart threshold, 5 MiB parts, SigV4."""

    def __init__(self, cmd: list[str], endpoint: str, tmp_path: Path) -> None:
        self.cmd = cmd
        conf = tmp_path / "aws-config"
        conf.write_text("[default]\nregion = us-east-1\noutput = json\ns3 =\n"
                        "    multipart_threshold = 8MB\n    multipart_chunksize = 5MB\n"
                        "    signature_version = s3v4\n    addressing_style = path\n")
        creds = tmp_path / "aws-credentials"
        creds.write_text("")
        self.endpoint = endpoint
        self.env = clean_env(tmp_path)
        self.env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                        AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(conf),
                        AWS_SHARED_CREDENTIALS_FILE=str(creds),
                        AWS_EC2_METADATA_DISABLED="true", AWS_PAGER="")

    def __call__(self, *args: str) -> str:
        return run([*self.cmd, "--endpoint-url", self.endpoint, *args], self.env).stdout

    def s3(self, command: str, *args: str) -> str:
        quiet = ("--no-progress",) if command in ("cp", "mv", "sync") else ()
        return self("s3", command, *args, *quiet)

    def api(self, *args: str) -> dict:
        out = self("s3api", *args)
        return json.loads(out) if out.strip() else {}


# The client checks are module-scoped fixtures without dependencies, named first by each test
# (``usefixtures`` comes before the arguments), so that pytest runs them before it starts the
# cluster (``s3``, ``s3_endpoint``) for a test that is skipped anyway.

@pytest.fixture(scope="module")
def aws_cmd() -> list[str]:
    """awscli of this interpreter (pyproject's dev extras), else an ``aws`` on PATH."""
    if importlib.util.find_spec("awscli") is not None:
        return [sys.executable, "-m", "awscli"]
    found = shutil.which("aws")
    need("awscli", found)
    return [str(found)]


@pytest.fixture
def aws(aws_cmd, s3_endpoint, tmp_path) -> Aws:
    return Aws(aws_cmd, s3_endpoint, tmp_path)


LS_OBJECT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) +(\d+) (.+)$")
LS_PREFIX = re.compile(r"^ +PRE (.+)$")


def parse_aws_ls(out: str) -> tuple[dict[str, int], set[str]]:
    """``aws s3 ls`` lines: ({key: size}, {common prefixes})."""
    objects, prefixes = {}, set()
    for line in out.splitlines():
        if m := LS_OBJECT.match(line):
            objects[m[3]] = int(m[2])
        elif m := LS_PREFIX.match(line):
            prefixes.add(m[1])
        else:
            assert not line.strip(), f"unexpected line in aws s3 ls output: {line!r}"
    return objects, prefixes


@pytest.mark.usefixtures("aws_cmd")
def test_awscli_mb_cp_ls_head(aws, s3, unique, tmp_path):
    bucket = unique
    assert f"make_bucket: {bucket}" in aws.s3("mb", f"s3://{bucket}")
    s3.head_bucket(Bucket=bucket)

    big, small = data(BIG, "aws-big"), data(1234, "aws-small")
    (tmp_path / "big.bin").write_bytes(big)
    (tmp_path / "small.txt").write_bytes(small)
    aws.s3("cp", str(tmp_path / "big.bin"), f"s3://{bucket}/dir/big.bin")
    aws.s3("cp", str(tmp_path / "small.txt"), f"s3://{bucket}/small.txt")

    head = aws.api("head-object", "--bucket", bucket, "--key", "dir/big.bin")
    assert head["ContentLength"] == BIG
    assert head["ETag"] == multipart_etag(big)  # awscli split it: 5 MiB parts, 3 of them
    head = aws.api("head-object", "--bucket", bucket, "--key", "small.txt")
    assert (head["ContentLength"], head["ETag"]) == (1234, f'"{md5(small)}"')

    down = tmp_path / "down"
    aws.s3("cp", f"s3://{bucket}/dir/big.bin", str(down / "big.bin"))  # ranged GETs
    aws.s3("cp", f"s3://{bucket}/small.txt", str(down / "small.txt"))
    assert (down / "big.bin").read_bytes() == big
    assert (down / "small.txt").read_bytes() == small
    assert s3.get_object(Bucket=bucket, Key="dir/big.bin")["Body"].read() == big

    assert parse_aws_ls(aws.s3("ls", f"s3://{bucket}")) == ({"small.txt": 1234}, {"dir/"})
    assert parse_aws_ls(aws.s3("ls", f"s3://{bucket}/dir/")) == ({"big.bin": BIG}, set())
    assert parse_aws_ls(aws.s3("ls", "--recursive", f"s3://{bucket}")) == \
        ({"dir/big.bin": BIG, "small.txt": 1234}, set())
    buckets = {line.split()[-1] for line in aws.s3("ls").splitlines()}
    assert bucket in buckets


@pytest.mark.usefixtures("aws_cmd")
def test_awscli_sync_up_down_and_rm(aws, s3, unique, tmp_path):
    bucket = unique
    aws.s3("mb", f"s3://{bucket}")
    src = tmp_path / "src"
    tree = make_tree(src, "aws-sync")
    tree["big.bin"] = data(BIG, "aws-sync-big")
    (src / "big.bin").write_bytes(tree["big.bin"])

    out = aws.s3("sync", str(src), f"s3://{bucket}/tree/")
    assert out.count("upload: ") == len(tree)
    assert remote_tree(s3, bucket, "tree/") == tree
    assert aws.s3("sync", str(src), f"s3://{bucket}/tree/").strip() == ""  # nothing to do

    dst = tmp_path / "dst"
    out = aws.s3("sync", f"s3://{bucket}/tree/", str(dst))
    assert out.count("download: ") == len(tree)
    assert read_tree(dst) == tree
    assert aws.s3("sync", f"s3://{bucket}/tree/", str(dst)).strip() == ""

    # a changed file (same size, so only its time says so) and a new one go up again
    (src / "top.txt").write_bytes(data(TREE["top.txt"], "changed"))
    os.utime(src / "top.txt", (4e9, 4e9))
    (src / "a" / "new.txt").write_bytes(b"new")
    out = aws.s3("sync", str(src), f"s3://{bucket}/tree/")
    assert sorted(re.findall(r"upload: .* to s3://\S+/tree/(\S+)", out)) == \
        ["a/new.txt", "top.txt"]
    assert remote_tree(s3, bucket, "tree/") == read_tree(src)

    listed, prefixes = parse_aws_ls(aws.s3("ls", "--recursive", f"s3://{bucket}/"))
    assert prefixes == set()
    assert listed == {f"tree/{k}": len(v) for k, v in read_tree(src).items()}

    out = aws.s3("rm", "--recursive", f"s3://{bucket}/tree/")
    assert out.count("delete: ") == len(listed)
    assert keys(s3, bucket) == set()
    assert aws.s3("ls", "--recursive", f"s3://{bucket}/").strip() == ""


@pytest.mark.usefixtures("aws_cmd")
def test_awscli_s3api(aws, s3, unique, tmp_path):
    bucket = unique
    aws.api("create-bucket", "--bucket", bucket)
    body = data(300_000, "aws-api")
    (tmp_path / "body").write_bytes(body)
    put = aws.api("put-object", "--bucket", bucket, "--key", "docs/meta.bin", "--body",
                  str(tmp_path / "body"), "--metadata", "color=blue,size=xl",
                  "--content-type", "application/x-test")
    assert put["ETag"] == f'"{md5(body)}"'
    head = aws.api("head-object", "--bucket", bucket, "--key", "docs/meta.bin")
    assert head["Metadata"] == {"color": "blue", "size": "xl"}
    assert (head["ContentLength"], head["ContentType"], head["ETag"]) == \
        (len(body), "application/x-test", put["ETag"])

    out = tmp_path / "range.out"
    got = aws.api("get-object", "--bucket", bucket, "--key", "docs/meta.bin",
                  "--range", "bytes=1000-2999", str(out))
    assert out.read_bytes() == body[1000:3000]
    assert got["ContentRange"] == f"bytes 1000-2999/{len(body)}"
    assert got["ContentLength"] == 2000
    assert got["Metadata"] == {"color": "blue", "size": "xl"}

    for key in ("docs/a.txt", "docs/sub/b.txt", "docs/sub/c.txt", "other/d.txt", "top.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    listing = aws.api("list-objects-v2", "--bucket", bucket, "--delimiter", "/",
                      "--no-paginate")
    assert [c["Key"] for c in listing["Contents"]] == ["top.txt"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["docs/", "other/"]
    assert (listing["KeyCount"], listing["Delimiter"], listing["IsTruncated"]) == (3, "/", False)
    listing = aws.api("list-objects-v2", "--bucket", bucket, "--delimiter", "/",
                      "--prefix", "docs/")
    assert [(c["Key"], c["Size"]) for c in listing["Contents"]] == \
        [("docs/a.txt", 10), ("docs/meta.bin", len(body))]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["docs/sub/"]
    # the CLI's own paginator, two keys a page: the continuation tokens round-trip
    listing = aws.api("list-objects-v2", "--bucket", bucket, "--page-size", "2")
    assert [c["Key"] for c in listing["Contents"]] == sorted(keys(s3, bucket))
    assert len(listing["Contents"]) == 6

    url = aws("s3", "presign", f"s3://{bucket}/docs/meta.bin", "--expires-in", "300").strip()
    assert "X-Amz-Signature=" in url
    with urlopen(url, timeout=30) as resp:
        assert resp.read() == body


# -- s3cmd ------------------------------------------------------------------------------------

class S3cmd:
    def __init__(self, binary: str, endpoint: str, tmp_path: Path) -> None:
        hostport = endpoint.removeprefix("http://")
        self.config = tmp_path / "s3cfg"
        self.config.write_text(
            "[default]\n"
            f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
            f"host_base = {hostport}\nhost_bucket = {hostport}\n"
            "use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
            "multipart_chunk_size_mb = 5\nprogress_meter = False\n")
        self.env = clean_env(tmp_path)
        self.binary = binary

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run([self.binary, "-c", str(self.config), *args], self.env, check=check)


@pytest.fixture(scope="module")
def s3cmd_bin() -> str:
    found = shutil.which("s3cmd")
    need("s3cmd", found)
    return str(found)


@pytest.fixture
def s3cmd(s3cmd_bin, s3_endpoint, tmp_path) -> S3cmd:
    return S3cmd(s3cmd_bin, s3_endpoint, tmp_path)


S3CMD_LS_OBJECT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d) +(\d+) +(?:\S+ +)?s3://([^/]+)/(.+)$")
S3CMD_LS_DIR = re.compile(r"^ +DIR +s3://([^/]+)/(.+)$")


def parse_s3cmd_ls(out: str) -> tuple[dict[str, int], set[str]]:
    objects, prefixes = {}, set()
    for line in out.splitlines():
        if m := S3CMD_LS_OBJECT.match(line):
            objects[m[4]] = int(m[2])
        elif m := S3CMD_LS_DIR.match(line):
            prefixes.add(m[2])
        else:
            assert not line.strip(), f"unexpected line in s3cmd ls output: {line!r}"
    return objects, prefixes


def s3cmd_info(out: str) -> dict[str, str]:
    fields = {}
    for line in out.splitlines()[1:]:
        name, sep, value = line.strip().partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


@pytest.mark.usefixtures("s3cmd_bin")
def test_s3cmd(s3cmd, s3, unique, tmp_path):
    bucket = unique
    assert f"Bucket 's3://{bucket}/' created" in s3cmd("mb", f"s3://{bucket}").stdout
    s3.head_bucket(Bucket=bucket)
    assert f"s3://{bucket}" in s3cmd("ls").stdout.split()

    big, small = data(BIG, "s3cmd-big"), data(4321, "s3cmd-small")
    (tmp_path / "big.bin").write_bytes(big)
    (tmp_path / "small.txt").write_bytes(small)
    s3cmd("put", str(tmp_path / "big.bin"), f"s3://{bucket}/dir/big.bin")
    s3cmd("put", str(tmp_path / "small.txt"), f"s3://{bucket}/small.txt")
    assert s3.head_object(Bucket=bucket, Key="dir/big.bin")["ETag"] == multipart_etag(big)
    assert s3.head_object(Bucket=bucket, Key="small.txt")["ETag"] == f'"{md5(small)}"'

    down = tmp_path / "down"
    down.mkdir()
    s3cmd("get", f"s3://{bucket}/dir/big.bin", str(down / "big.bin"))
    s3cmd("get", f"s3://{bucket}/small.txt", str(down / "small.txt"))
    assert (down / "big.bin").read_bytes() == big
    assert (down / "small.txt").read_bytes() == small

    assert parse_s3cmd_ls(s3cmd("ls", f"s3://{bucket}").stdout) == \
        ({"small.txt": 4321}, {"dir/"})
    assert parse_s3cmd_ls(s3cmd("ls", "--recursive", f"s3://{bucket}").stdout) == \
        ({"dir/big.bin": BIG, "small.txt": 4321}, set())

    # info: HEAD, the ACL and the bucket's policy/CORS (answered NotImplemented: "none")
    info = s3cmd_info(s3cmd("info", f"s3://{bucket}/small.txt").stdout)
    assert info["File size"] == "4321"
    assert info["MD5 sum"] == md5(small)
    assert info["ACL"] == "aisync: FULL_CONTROL"
    info = s3cmd_info(s3cmd("info", f"s3://{bucket}/dir/big.bin").stdout)
    assert info["File size"] == str(BIG)
    assert info["MD5 sum"] == md5(big)  # from the attributes s3cmd stored in x-amz-meta-*
    info = s3cmd_info(s3cmd("info", f"s3://{bucket}").stdout)
    assert info["Location"] == "us-east-1"

    s3cmd("del", f"s3://{bucket}/small.txt")
    assert keys(s3, bucket) == {"dir/big.bin"}


@pytest.mark.usefixtures("s3cmd_bin")
def test_s3cmd_sync(s3cmd, s3, unique, tmp_path):
    bucket = unique
    s3cmd("mb", f"s3://{bucket}")
    src = tmp_path / "src"
    tree = make_tree(src, "s3cmd-sync")

    out = s3cmd("sync", f"{src}/", f"s3://{bucket}/tree/").stdout
    assert out.count("upload: ") == len(tree)
    assert remote_tree(s3, bucket, "tree/") == tree
    assert "upload: " not in s3cmd("sync", f"{src}/", f"s3://{bucket}/tree/").stdout

    dst = tmp_path / "dst"
    out = s3cmd("sync", f"s3://{bucket}/tree/", f"{dst}/").stdout
    assert out.count("download: ") == len(tree)
    assert read_tree(dst) == tree

    (src / "a" / "one.bin").unlink()
    out = s3cmd("sync", "--delete-removed", f"{src}/", f"s3://{bucket}/tree/").stdout
    assert f"delete: 's3://{bucket}/tree/a/one.bin'" in out
    assert remote_tree(s3, bucket, "tree/") == read_tree(src)

    out = s3cmd("del", "--recursive", "--force", f"s3://{bucket}/tree/").stdout
    assert out.count("delete: ") == len(tree) - 1
    assert keys(s3, bucket) == set()
    s3cmd("rb", f"s3://{bucket}")
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_no_unhandled_errors(s3_cluster):
    assert s3_cluster.unhandled_errors() == []
