"""Hundreds of malformed requests against a proxy and a target: each node answers them and stays
healthy, and its log holds no traceback and only a rate-limited number of one-line warnings
(aiohttp logged every one at ERROR with a full traceback: 5,568 records from a fuzzer's 24 k)."""

from __future__ import annotations

import json
import math
import re
import socket
import time

import pytest

from aisync.util.log import CLIENT_ERROR_BURST, CLIENT_ERROR_WINDOW
from tests.harness import LocalCluster, http_json

ROUNDS = 25
REFUSED = re.compile(rb"HTTP/1\.[01] 4[0-9][0-9] ")  # aiohttp's own refusals say HTTP/1.0


def malformed_requests(port: int) -> list[bytes]:
    host = f"Host: 127.0.0.1:{port}\r\n"
    return [
        b"GET / HTTP/1.1\r\n" + host.encode() + b"\r\nNOT A REQUEST LINE\r\n\r\n",  # 2nd line
        b"GET /v1/health HTTP/9.9\r\n\r\n",
        b"GET /v1/he\x00alth HTTP/1.1\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\n" + host.encode() + b"Bad Header Without Colon\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\n" + host.encode() + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\n" + host.encode() + b"Content-Length: abc\r\n\r\n",
        b"PUT /v1/health HTTP/1.1\r\n" + host.encode()
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/health HTTP/1.1\r\n" + host.encode()
        + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nlying\r\n0\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\n" + host.encode() + b"Na\x01me: value\r\n\r\n",
    ]


def send_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; what the node answered before it closed (a
    refused request closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def server_records(log_text: str) -> list[dict]:
    records = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "aiohttp.server":
            records.append(record)
    return records


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(targets=1, proxies=1) as c:
        yield c


@pytest.mark.parametrize("role", ["proxy", "target"])
def test_malformed_requests_are_answered_and_logged_in_bounded_one_liners(cluster, role):
    node = cluster.primary if role == "proxy" else cluster.targets[0]
    before = len(node.log.read_text(errors="replace"))
    requests = malformed_requests(node.port)
    started = time.monotonic()
    for _ in range(ROUNDS):
        for data in requests:
            answer = send_raw(node.port, data)
            assert REFUSED.match(answer), (data[:80], answer[:200])
    elapsed = time.monotonic() - started
    assert http_json(f"{node.url}/v1/health")[0] == 200

    log_text = node.log.read_text(errors="replace")[before:]
    assert "Traceback" not in log_text
    records = server_records(log_text)
    assert records, "the refused requests left no trace at all"
    assert all(r["level"] == "warning" and "exc" not in r and "\n" not in r["msg"]
               for r in records), records[:3]
    kinds = {r["msg"].split(": ")[1] for r in records}
    windows = math.ceil(elapsed / CLIENT_ERROR_WINDOW) + 1
    sent = ROUNDS * len(requests)
    assert len(records) <= CLIENT_ERROR_BURST * len(kinds) * windows < sent, \
        (len(records), kinds, windows)
    assert cluster.unhandled_errors() == []
