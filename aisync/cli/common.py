"""Shared CLI plumbing: error types, the context object, URI parsing, formatting, progress.

Owns: how the CLI reports errors (``error: <message>`` on stderr; exit 1 for aisync errors,
2 for usage errors) and how commands reach a cluster (``--endpoint``, else the endpoint that
``cluster up`` recorded, else the default).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, TypeVar

import click
from tqdm import tqdm

from aisync.client import AsyncClient
from aisync.util.errors import AisyncError, InvalidArgument
from aisync.util.names import BucketRef, parse_uri

T = TypeVar("T")

DEFAULT_ENDPOINT = "http://127.0.0.1:51080"
#: Show a progress bar for single downloads/uploads from this size on (when on a terminal).
PROGRESS_MIN_BYTES = 4 * 1024 * 1024


class CliError(click.ClickException):
    """An expected failure: printed as ``error: <message>``, exit code 1."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class UsageFailure(CliError):
    """A bad argument found by the CLI itself (bad URI, conflicting options): exit code 2."""

    exit_code = 2


@dataclass
class CliState:
    """``ctx.obj``: global options."""

    endpoint_option: str | None = None
    token_option: str | None = None
    verbose: int = 0
    _endpoint: str | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        if self._endpoint is None:
            self._endpoint = self.endpoint_option or recorded_endpoint() or DEFAULT_ENDPOINT
        return self._endpoint

    def client(self, timeout: float = 60) -> AsyncClient:
        try:
            return AsyncClient(self.endpoint, timeout=timeout, token=self.token_option or None)
        except InvalidArgument as exc:
            raise UsageFailure(str(exc)) from exc


def recorded_endpoint() -> str | None:
    """The endpoint recorded by ``cluster up`` in the default cluster dir, if any."""
    from aisync.cli.state import default_cluster_dir, read_state

    try:
        state = read_state(default_cluster_dir())
    except CliError:
        return None
    if state and isinstance(state.get("endpoint"), str):
        return state["endpoint"]
    return None


def state_of(ctx: click.Context) -> CliState:
    obj = ctx.find_object(CliState)
    if obj is None:  # a subcommand invoked on its own (tests): defaults
        obj = ctx.ensure_object(CliState)
    return obj


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine on a fresh event loop."""
    return asyncio.run(coro)


# -- URIs ------------------------------------------------------------------------------------


def bucket_arg(uri: str) -> BucketRef:
    """A bucket URI (``ais://train`` or ``train``); an object part is a usage error."""
    ref, obj = _parse(uri)
    if obj:
        raise UsageFailure(f"expected a bucket URI such as ais://{ref.name}, got {uri!r}")
    return ref


def object_arg(uri: str) -> tuple[BucketRef, str]:
    """An object URI ``ais://bucket/name``."""
    ref, obj = _parse(uri)
    if not obj or obj.endswith("/"):
        raise UsageFailure(f"expected an object URI such as ais://{ref.name}/NAME, got {uri!r}")
    return ref, obj


def prefix_arg(uri: str) -> tuple[BucketRef, str]:
    """``ais://bucket`` or ``ais://bucket/prefix`` (the object part is a listing prefix)."""
    return _parse(uri)


def _parse(uri: str) -> tuple[BucketRef, str]:
    try:
        return parse_uri(uri)
    except AisyncError as exc:
        raise UsageFailure(f"{uri!r}: {exc.message}") from exc


# -- formatting ------------------------------------------------------------------------------


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover


def format_mtime(mtime_ns: int | None) -> str:
    if not mtime_ns:
        return "-"
    return datetime.fromtimestamp(mtime_ns / 1e9).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [headers, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


# -- progress --------------------------------------------------------------------------------


def progress_wanted(option: bool | None, size: int | None = None) -> bool:
    """``--progress`` forces a bar, ``--no-progress`` hides it; by default only on a terminal
    (stderr) and, when ``size`` is given, only for large transfers."""
    if option is not None:
        return option
    if not _isatty(sys.stderr):
        return False
    return size is None or size >= PROGRESS_MIN_BYTES


def byte_bar(total: int | None, enabled: bool, desc: str = "") -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
                desc=desc or None, file=sys.stderr, leave=False, dynamic_ncols=True)


def count_bar(total: int | None, enabled: bool, desc: str = "", unit: str = "obj") -> tqdm:
    return tqdm(total=total, unit=unit, disable=not enabled, desc=desc or None,
                file=sys.stderr, leave=False, dynamic_ncols=True)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def stdin_is_tty() -> bool:
    return _isatty(sys.stdin)


def binary_stdout() -> IO[bytes]:
    return getattr(sys.stdout, "buffer", sys.stdout)  # type: ignore[return-value]


def binary_stdin() -> IO[bytes]:
    return getattr(sys.stdin, "buffer", sys.stdin)  # type: ignore[return-value]


def describe_oserror(exc: OSError) -> str:
    text = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        return f"{os.fsdecode(exc.filename)}: {text}"
    return text
