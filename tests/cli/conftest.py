"""Shared fixture of the CLI tests: the CLI run in-process (click's ``CliRunner``) against a
live cluster, isolated from the caller's environment."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from aisync.cli.main import cli

Invoke = Callable[..., Result]


@pytest.fixture
def cli_at(tmp_path, monkeypatch) -> Callable[[str], Invoke]:
    """``cli_at(endpoint)`` gives ``invoke(*args, input=None, endpoint=None)``, which runs
    ``aisync --endpoint ENDPOINT ARGS...`` in ``tmp_path``, with no ambient endpoint or cluster
    directory (``endpoint=`` sends one call elsewhere)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AISYNC_ENDPOINT", raising=False)
    monkeypatch.setenv("AISYNC_CLUSTER_DIR", str(tmp_path / "no-cluster-dir"))
    runner = CliRunner()

    def at(default: str) -> Invoke:
        def invoke(*args: str, input: str | bytes | None = None,
                   endpoint: str | None = None) -> Result:
            return runner.invoke(cli, ["--endpoint", endpoint or default, *args], input=input)

        return invoke

    return at
