"""``ClientErrorLogFilter``: a refused request is one WARNING line, rate-limited per kind; any
other record (a handler's unexpected exception) passes unchanged, traceback included."""

from __future__ import annotations

import io
import logging

import pytest
from aiohttp.http_exceptions import BadStatusLine, InvalidHeader, LineTooLong

from aisync.util.log import ClientErrorLogFilter, JsonFormatter, setup_logging


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured():
    """A logger with the filter (a fake clock, 3 lines per 10 s) and its JSON output."""
    clock = Clock()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.client-errors")
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    flt = ClientErrorLogFilter((BadStatusLine, InvalidHeader, LineTooLong), burst=3, window=10,
                               clock=clock)
    logger.addFilter(flt)
    yield logger, clock, stream
    logger.removeFilter(flt)
    logger.handlers[:] = []


def refused(logger: logging.Logger, exc: Exception) -> None:
    try:
        raise exc
    except Exception:
        logger.exception("Error handling request from %s", "127.0.0.1")


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_refused_request_is_one_warning_line_without_traceback(captured):
    logger, _, stream = captured
    refused(logger, BadStatusLine("GARBAGE\r\n\r\n  ^"))
    (line,) = lines(stream)
    assert '"level": "warning"' in line and "Traceback" not in line and '"exc"' not in line
    assert "Error handling request from 127.0.0.1: BadStatusLine:" in line


def test_each_kind_is_rate_limited_and_the_next_window_counts_what_was_dropped(captured):
    logger, clock, stream = captured
    for _ in range(50):
        refused(logger, BadStatusLine("bad"))
        refused(logger, InvalidHeader("bad"))
    assert len(lines(stream)) == 6  # 3 per kind
    clock.now += 10
    refused(logger, BadStatusLine("bad"))
    assert "(47 more BadStatusLine suppressed)" in lines(stream)[-1]
    refused(logger, BadStatusLine("bad"))
    assert "suppressed" not in lines(stream)[-1]
    assert len(lines(stream)) == 8


def test_other_records_pass_unchanged(captured):
    logger, _, stream = captured
    for _ in range(10):
        refused(logger, KeyError("a handler's bug"))
    logger.warning("plain %s", "warning")
    out = lines(stream)
    assert len([line for line in out if '"level": "error"' in line]) == 10
    assert all("Traceback" in line for line in out[:10])
    assert '"msg": "plain warning"' in out[-1]


def test_setup_logging_installs_one_filter_on_aiohttp_server_logger():
    server = logging.getLogger("aiohttp.server")
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("INFO", "json")
        setup_logging("INFO", "json")
        installed = [f for f in server.filters if isinstance(f, ClientErrorLogFilter)]
        assert len(installed) == 1
        assert issubclass(LineTooLong, installed[0].client_errors)
    finally:
        for f in [f for f in server.filters if isinstance(f, ClientErrorLogFilter)]:
            server.removeFilter(f)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
