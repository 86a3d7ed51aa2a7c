"""What a proxy's reverse mode sends on to the target: the client's path and query, less the
proxy's own ``mode`` parameter (so a target has no query to parse when it was the only one)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from aisync.proxy.node import _without_mode


@pytest.mark.parametrize("sent, relayed", [
    ("/v1/objects/b/k?mode=reverse", "/v1/objects/b/k"),
    ("/v1/objects/b/k", "/v1/objects/b/k"),
    ("/v1/objects/b/k?mode=reverse&latest=true", "/v1/objects/b/k?latest=true"),
    ("/v1/objects/b/k?provider=aws&mode=reverse&verify=1", "/v1/objects/b/k?provider=aws&verify=1"),
    ("/v1/objects/b/a%20b?mode", "/v1/objects/b/a%20b"),
    ("/v1/objects/b/k?modest=1&mode=reverse", "/v1/objects/b/k?modest=1"),  # a prefix only
])
def test_reverse_relay_drops_only_mode(sent, relayed):
    assert _without_mode(make_mocked_request("GET", sent)) == relayed
