"""Fixtures of the cluster tests that use a real S3 source: a moto server per module and a
1 proxy + 3 target cluster whose nodes know it as the backend profile ``lab``."""

from __future__ import annotations

import pytest

from aisync.client import Client
from tests.backends.moto_server import CREDENTIALS, running_moto
from tests.harness import LocalCluster


@pytest.fixture(scope="module")
def moto():
    with running_moto() as endpoint:
        yield endpoint


def lab_profile(moto_endpoint: str) -> dict:
    """The ``backends`` section naming the moto server as profile ``lab``."""
    return {"lab": {"provider": "s3", "endpoint_url": moto_endpoint, **CREDENTIALS}}


@pytest.fixture(scope="module")
def lab_cluster(moto):
    with LocalCluster(targets=3, extra={"backends": lab_profile(moto)}) as c:
        yield c


@pytest.fixture
def lab_client(lab_cluster):
    with Client(lab_cluster.endpoint) as c:
        yield c
