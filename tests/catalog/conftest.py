"""Fixtures of the catalog tests: a throwaway PostgreSQL server (once per session) and a
``catalog_url`` parametrized over SQLite and PostgreSQL (a fresh database per test).

Without PostgreSQL binaries the ``postgres`` tests fail (CI installs them with
``.ci/postgres.sh``); set ``AISYNC_SKIP_POSTGRES=1`` to skip them instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from tests import pgserver
except ModuleNotFoundError:  # pytest run without the repository top on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import pgserver

from aisync.catalog import Catalog

SKIP_ENV = "AISYNC_SKIP_POSTGRES"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PgServer]:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"PostgreSQL tests skipped: {SKIP_ENV}=1")
    bindir = pgserver.find_pg_bindir()
    if bindir is None:
        pytest.fail(
            f"PostgreSQL server binaries (initdb, pg_ctl) not found under {pgserver.PG_BIN_GLOB}. "
            f"Install them (.ci/postgres.sh, i.e. apt-get install -y postgresql) or set "
            f"{SKIP_ENV}=1 to skip the PostgreSQL tests.",
            pytrace=False,
        )
    with pgserver.PgServer(bindir) as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty catalog database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    server: pgserver.PgServer = request.getfixturevalue("pg_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    """An upgraded catalog on ``catalog_url``, closed after the test."""
    cat = Catalog(catalog_url)
    cat.upgrade()
    try:
        yield cat
    finally:
        cat.close()
