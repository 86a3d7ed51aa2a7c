"""The S3 user story from the command line: `cluster up --s3-port 0` prints the S3 address,
`auth key create` makes credentials, and boto3 uses both."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

from tests.s3.conftest import boto3_client


def aisync(*args: str, cluster_dir=None) -> subprocess.CompletedProcess:
    """The installed command as a user runs it: the token is the one `cluster up` left in the
    cluster dir (not the test session's $AISYNC_TOKEN)."""
    env = {k: v for k, v in os.environ.items() if k != "AISYNC_TOKEN"}
    if cluster_dir is not None:
        env["AISYNC_CLUSTER_DIR"] = str(cluster_dir)
    return subprocess.run([sys.executable, "-m", "aisync", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_cluster_up_prints_s3_port_and_keys_work(tmp_path):
    up = aisync("cluster", "up", "--targets", "1", "--port", "0", "--s3-port", "0",
                "--detach", "--dir", str(tmp_path / "c"))
    assert up.returncode == 0, up.stderr
    try:
        endpoint = up.stdout.strip()
        s3_url = re.search(r"S3 API at (http://\S+)", up.stderr)
        assert s3_url and s3_url[1] != endpoint
        cdir = tmp_path / "c"
        status = aisync("--endpoint", endpoint, "cluster", "status", cluster_dir=cdir)
        assert status.returncode == 0 and f"S3 API at {s3_url[1]}" in status.stdout
        made = aisync("--endpoint", endpoint, "auth", "key", "create", "--json",
                      cluster_dir=cdir)
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)
        s3 = boto3_client(s3_url[1], key["access_key"], key["secret_key"])
        s3.create_bucket(Bucket="story")
        s3.put_object(Bucket="story", Key="x", Body=b"told")
        assert s3.get_object(Bucket="story", Key="x")["Body"].read() == b"told"
        listed = aisync("--endpoint", endpoint, "object", "ls", "ais://story", cluster_dir=cdir)
        assert listed.returncode == 0 and "x" in listed.stdout
        removed = aisync("--endpoint", endpoint, "auth", "key", "rm", key["access_key"],
                         cluster_dir=cdir)
        assert removed.returncode == 0, removed.stderr
        with pytest.raises(ClientError) as exc:
            s3.list_buckets()
        assert exc.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    finally:
        aisync("cluster", "down", "--dir", str(tmp_path / "c"), "--purge")
