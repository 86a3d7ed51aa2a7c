"""Fixtures of the S3 front-end tests: a live cluster (1 proxy + 3 targets) whose proxies also
serve S3 on a dedicated port, an access key, and boto3 clients for both ports."""

from __future__ import annotations

import os
import re

import boto3
import pytest
from botocore.config import Config

from aisync.client import Client
from tests.backends.moto_server import CREDENTIALS, running_moto
from tests.harness import LocalCluster

ACCESS_KEY, SECRET_KEY = "AKTESTS3FRONTEND001", "s3-front-end-test-secret-0123456789"


def boto3_client(endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
                 **config):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      retries={"max_attempts": 1}, **config))


@pytest.fixture(scope="module")
def moto():
    with running_moto() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def s3_cluster(moto):
    extra = {"s3": {"port": 0, "anonymous": True, "domain": "s3.test"},
             "backends": {"lab": {"provider": "s3", "endpoint_url": moto, **CREDENTIALS}}}
    with LocalCluster(targets=3, proxies=2, extra=extra) as cluster:
        with Client(cluster.endpoint) as client:
            client.create_access_key(ACCESS_KEY, SECRET_KEY, "tests")
        yield cluster


@pytest.fixture(scope="module")
def s3_endpoint(s3_cluster) -> str:
    """The dedicated S3 port of the primary proxy (from its node status)."""
    from tests.harness import http_json

    _, status = http_json(f"{s3_cluster.endpoint}/v1/node/status")
    assert status["s3_url"] and status["s3_url"] != s3_cluster.endpoint
    return status["s3_url"]


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    return boto3_client(s3_endpoint)


@pytest.fixture
def unique(request) -> str:
    """A bucket name of this test's own (the real-client tests) (3-63 chars: s3cmd refuses shorter ones)."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()[5:]).strip("-")[:40]
    return f"{base}-{os.getpid()}"
