"""Shared fixtures. Cluster fixtures start real node processes (see ``tests/harness.py``)."""

from __future__ import annotations

import os

import pytest

from tests.harness import TEST_TOKEN, LocalCluster

# The SDK (and the CLI run in-process) find the test clusters' admin token here.
os.environ["AISYNC_TOKEN"] = TEST_TOKEN


@pytest.fixture(scope="module", params=[0, 1], ids=["one-process", "read-workers"])
def cluster(request):
    """1 proxy + 3 targets, shared by the tests of one module (each test uses its own bucket).

    Every test runs twice: targets as a single process, and with a read worker beside each
    target (object GETs may then be served by either process).
    """
    with LocalCluster(targets=3, proxies=1,
                      extra={"http": {"read_workers": request.param}}) as c:
        yield c


@pytest.fixture(scope="module")
def cluster2():
    """2 proxies + 3 targets, 2 mountpaths per target."""
    with LocalCluster(targets=3, proxies=2, mountpaths=2) as c:
        yield c
