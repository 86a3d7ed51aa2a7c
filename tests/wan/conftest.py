"""Fixtures of the WAN tests: a moto S3 source in namespace ``src`` and two aisync zones in
``za`` and ``zb``, joined by emulated links (``tests/wan/netem.py``): 5 ms one way and 200 Mbit/s
between the zones, 40 ms and 1 % loss (each way) between each zone and the source.

Skipped when this machine cannot create network namespaces (not root, no ``ip netns``). When
the emulation tools are missing (no netem, and no iptables or NetfilterQueue), the tests skip
on a developer's machine and fail under CI (``CI`` set), which must run them: ``.ci/wan.sh``
installs the tools.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.backends.moto_server import CREDENTIALS
from tests.harness import api
from tests.wan.netem import (
    Link,
    NamespaceCluster,
    Wan,
    environment_problem,
    fallback_problem,
    netem_available,
    stop_process,
    wait_tcp,
)

ZONE_DELAY_MS = 5
ZONE_RATE_MBIT = 200
SOURCE_DELAY_MS = 40
SOURCE_LOSS_PCT = 1.0
LINKS = [Link("za", "zb", delay_ms=ZONE_DELAY_MS, rate_mbit=ZONE_RATE_MBIT),
         Link("src", "za", delay_ms=SOURCE_DELAY_MS, loss_pct=SOURCE_LOSS_PCT),
         Link("src", "zb", delay_ms=SOURCE_DELAY_MS, loss_pct=SOURCE_LOSS_PCT)]
MOTO_PORT = 9000


def wan_problem() -> str | None:
    """Why the WAN topology cannot be built here; raises under CI for missing tools."""
    if problem := environment_problem():
        return problem
    if not netem_available() and (problem := fallback_problem()):
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the WAN tests: {problem}")
        return problem
    return None


@pytest.fixture(scope="module")
def wan():
    if problem := wan_problem():
        pytest.skip(problem)
    with Wan(["src", "za", "zb"], LINKS) as w:
        yield w


@pytest.fixture(scope="module")
def source(wan):
    """The S3 source of truth: a moto server inside ``src``; its URL."""
    host = wan.addr("src")
    proc = wan.spawn("src", [sys.executable, "-m", "moto.server", "-H", host,
                             "-p", str(MOTO_PORT)])
    wait_tcp(host, MOTO_PORT, proc=proc)
    yield f"http://{host}:{MOTO_PORT}"
    stop_process(proc)


def zone(wan, source: str, ns: str, name: str, remotes: dict | None = None) -> NamespaceCluster:
    lab = {"provider": "s3", "endpoint_url": source, **CREDENTIALS}
    return NamespaceCluster(wan, ns, targets=2,
                            extra={"cluster": {"name": name}, "backends": {"lab": lab},
                                   "remotes": remotes or {}})


@pytest.fixture(scope="module")
def zone_a(wan, source):
    with zone(wan, source, "za", "zone-a") as c:
        yield c


@pytest.fixture(scope="module")
def zone_b(wan, source, zone_a):
    # zone b's nodes name zone a as a remote they may attach: its URL and its token
    remotes = {"zone-a": {"urls": [zone_a.endpoint], "token": zone_a.token}}
    with zone(wan, source, "zb", "zone-b", remotes) as c:
        status, remote = api(c, "PUT", "/v1/remotes/zone-a", {"urls": [zone_a.endpoint]})
        assert status == 201, remote
        yield c


