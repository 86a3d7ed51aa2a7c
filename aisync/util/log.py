"""Structured logging: one JSON object per line (or plain text for humans).

Fields passed with ``extra={...}`` become top-level keys. Keys that look secret (``secret``,
``password``, ``token``, ``key`` as a word in their name) are masked, so a careless ``extra`` never
leaks a credential.

A request the HTTP server refuses before any handler sees it (a bad request line, a bad header, a
lying body: the client's mistake) is logged by aiohttp at ERROR with a full traceback, once per
request, so a scanner or fuzzer floods the log. :class:`ClientErrorLogFilter` turns each into one
WARNING line and lets at most :data:`CLIENT_ERROR_BURST` of a kind through per
:data:`CLIENT_ERROR_WINDOW` seconds; the first line of the next window says how many were
suppressed. A handler's unexpected exception still logs at ERROR with its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_WORDS = ("secret", "password", "token", "credential", "access_key", "secret_key")
#: Lines per kind of refused request (the exception's class) and window, and the window (s).
CLIENT_ERROR_BURST = 5
CLIENT_ERROR_WINDOW = 10.0
_DETAIL_CHARS = 200


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str = "", role: str = "") -> None:
        super().__init__()
        self.node, self.role = node, role

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.node:
            out["node_id"], out["role"] = self.node, self.role
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if any(word in key.lower() for word in _SECRET_WORDS):
                value = "***"
            out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ClientErrorLogFilter(logging.Filter):
    """On aiohttp's server logger: records of a refused request (their exception is one of
    ``client_errors``) become one rate-limited WARNING line without traceback (see the module
    docstring); every other record passes unchanged."""

    def __init__(self, client_errors: tuple[type[BaseException], ...],
                 burst: int = CLIENT_ERROR_BURST, window: float = CLIENT_ERROR_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.client_errors, self.burst, self.window, self.clock = \
            client_errors, burst, window, clock
        self._kinds: dict[str, tuple[float, int, int]] = {}  # kind -> (start, passed, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, self.client_errors):
            return True
        kind, now = type(exc).__name__, self.clock()
        start, passed, dropped = self._kinds.get(kind, (now, 0, 0))
        if now - start >= self.window:
            start, passed = now, 0
        if passed >= self.burst:
            self._kinds[kind] = (start, passed, dropped + 1)
            return False
        self._kinds[kind] = (start, passed + 1, 0)
        detail = " ".join(str(exc).split())[:_DETAIL_CHARS]
        message = f"{record.getMessage()}: {kind}: {detail}"
        if dropped:
            message += f" ({dropped} more {kind} suppressed)"
        record.msg, record.args = message, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


def _http_client_errors() -> tuple[type[BaseException], ...]:
    """What aiohttp's server raises for a request it cannot parse: the client's mistakes."""
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.web_protocol import RequestPayloadError

    return HttpProcessingError, RequestPayloadError


def setup_logging(level: str = "INFO", fmt: str = "json", node: str = "", role: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node, role))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(level)
    server = logging.getLogger("aiohttp.server")
    for old in [f for f in server.filters if isinstance(f, ClientErrorLogFilter)]:
        server.removeFilter(old)
    server.addFilter(ClientErrorLogFilter(_http_client_errors()))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))
