"""Catalog engine, migrations and the ``Catalog`` facade.

Owns: how a catalog database is opened (:func:`make_engine`: SQLite tuning, pooling), how its
schema is brought up to date (:func:`alembic_config`, :func:`upgrade_to_head`, driving the Alembic
scripts in the top-level ``migrations/`` directory without depending on the working directory),
and :class:`Catalog`, the synchronous, thread-safe API the node code calls (from a thread pool).
Its job, report, schedule-run and sync-state methods live in :mod:`.jobs` (``JobsMixin``).

SQLite notes: one file per node; ``check_same_thread=False`` plus a pool makes the engine usable
from many threads; file databases run in WAL mode with ``synchronous=NORMAL`` and a busy timeout.
pysqlite's own transaction handling is switched off and SQLAlchemy emits ``BEGIN`` itself, so
writes can use ``BEGIN IMMEDIATE`` (take the write lock up front, waiting on the busy timeout,
instead of failing on a read-to-write lock upgrade) and DDL stays transactional.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

import aisync
from aisync.catalog.jobs import JobsMixin
from aisync.catalog.keys import KeysMixin
from aisync.catalog.models import KIND_MAX_LEN, Document, utcnow
from aisync.util.errors import AisyncError, InvalidArgument

#: The Alembic script directory: ``migrations/`` at the repository top, next to the package.
#: Works from a clone and from an editable install (it is not shipped inside a wheel).
MIGRATIONS_DIR = Path(aisync.__file__).resolve().parent.parent / "migrations"

#: Seconds a SQLite connection waits for a lock held by another connection before failing.
SQLITE_BUSY_TIMEOUT = 30.0

#: Execution option marking a connection as a writer (SQLite: ``BEGIN IMMEDIATE``).
_WRITE_OPTION = "aisync_write"

#: Key of the PostgreSQL advisory lock serializing concurrent ``upgrade()`` calls of many nodes.
_MIGRATION_LOCK_KEY = 0x61697379_6E63  # "aisync"

_MAX_VERSION = 2**63 - 1  # BIGINT


# --------------------------------------------------------------------------------------- engine


def _is_sqlite_memory(url: sa.URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url: str | sa.URL, **kwargs: Any) -> Engine:
    """Create an engine for a catalog URL, tuned per dialect; extra ``kwargs`` go to SQLAlchemy.

    SQLite: thread-shareable connections, busy timeout, ``foreign_keys=ON``; file databases get
    WAL + ``synchronous=NORMAL`` and their parent directory is created; in-memory databases use a
    single shared connection (``StaticPool``) so every thread sees the same data.
    Other dialects (PostgreSQL): ``pool_pre_ping`` so a restarted server does not break the node.
    """
    url = sa.make_url(url)
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(url, **kwargs)

    memory = _is_sqlite_memory(url)
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT}
    connect_args.update(kwargs.pop("connect_args", {}))
    if memory:
        kwargs.setdefault("poolclass", StaticPool)
    elif not url.query.get("uri") and url.database:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
    busy_ms = int(SQLITE_BUSY_TIMEOUT * 1000)

    def _enable_wal(cursor: Any) -> None:
        """Switch to WAL once per file. While other connections are creating the same fresh
        file or recovering its WAL, SQLite can answer "database is locked" at once, without
        waiting on the busy timeout (seen in CI on concurrent first starts), so both reading and
        switching the mode are retried with backoff."""
        delay, deadline = 0.005, time.monotonic() + SQLITE_BUSY_TIMEOUT
        while True:
            try:
                if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    cursor.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    @sa.event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite must not BEGIN/COMMIT on its own
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                _enable_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# ----------------------------------------------------------------------------------- migrations


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` built in code (no ``alembic.ini``, independent of the cwd).

    With ``connection``, ``migrations/env.py`` runs the migrations on it, inside the caller's
    transaction.
    """
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise AisyncError(
            f"catalog migrations not found at {MIGRATIONS_DIR}; aisync must run from a source "
            "checkout or an editable install (pip install -e .)"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest revision id among the migration scripts."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in ``alembic_version`` of this database (None: not migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction for running migrations, serialized against other nodes doing the same
    (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock)."""
    with engine.execution_options(**{_WRITE_OPTION: True}).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        yield conn


def _run_alembic(engine: Engine, action: Callable[[Config], None]) -> None:
    """Run an Alembic command on ``engine`` inside one :func:`migration_transaction`."""
    with migration_transaction(engine) as conn:
        action(alembic_config(conn))


def upgrade_to_head(target: str | sa.URL | Engine, revision: str = "head") -> None:
    """Upgrade the catalog at ``target`` (URL or engine) to ``revision``; idempotent."""
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        _run_alembic(engine, lambda cfg: command.upgrade(cfg, revision))
    finally:
        if engine is not target:
            engine.dispose()


# -------------------------------------------------------------------------------------- facade


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not kind or len(kind) > KIND_MAX_LEN:
        raise InvalidArgument(
            f"document kind must be a non-empty string of at most "
            f"{KIND_MAX_LEN} characters, got {kind!r}"
        )
    return kind


def _check_version(version: object) -> int:
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not 0 <= version <= _MAX_VERSION
    ):
        raise InvalidArgument(f"document version must be an integer in [0, 2**63), got {version!r}")
    return version


class Catalog(JobsMixin, KeysMixin):
    """A node's catalog database. Synchronous and thread-safe; call it from a thread pool::

        cat = Catalog("sqlite:////var/lib/aisync/catalog.db")
        cat.upgrade()
        cat.save_document("cluster_map", 7, {"version": 7, "nodes": {}})  # -> True
        cat.latest_document("cluster_map")  # -> (7, {"version": 7, "nodes": {}})
        cat.create_job({"id": "j1", "kind": "sync", "bucket": "aws/datasets"})  # -> job dict

    The sync engine's records (jobs, job reports, schedule runs, bucket sync state) come from
    :class:`~aisync.catalog.jobs.JobsMixin`.

    ``engine_kwargs`` go to :func:`sqlalchemy.create_engine` (e.g. ``echo=True``).
    """

    def __init__(self, url: str | sa.URL, **engine_kwargs: Any) -> None:
        self.url = sa.make_url(url)
        self.engine = make_engine(self.url, **engine_kwargs)
        self._writer = self.engine.execution_options(**{_WRITE_OPTION: True})
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Catalog({self.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    # ---- schema

    def upgrade(self, revision: str = "head") -> None:
        """Apply pending migrations (Alembic ``upgrade head``); idempotent, safe at every start.

        Concurrent calls from several nodes sharing one database are serialized (SQLite: write
        lock; PostgreSQL: advisory lock), and each upgrade is one transaction.
        """
        _run_alembic(self.engine, lambda cfg: command.upgrade(cfg, revision))

    def downgrade(self, revision: str) -> None:
        """Revert migrations down to ``revision`` (``"base"`` drops every catalog table)."""
        _run_alembic(self.engine, lambda cfg: command.downgrade(cfg, revision))

    def current_revision(self) -> str | None:
        """The applied revision (None before the first :meth:`upgrade`)."""
        with self.engine.connect() as conn:
            return current_revision(conn)

    # ---- transactions for future tables

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """An ORM session in one transaction: committed on success, rolled back on error.

        Pass ``write=True`` when the transaction writes (SQLite takes the write lock up front).
        """
        factory = self._write_sessions if write else self._sessions
        with factory.begin() as session:
            yield session

    # ---- versioned documents

    def save_document(self, kind: str, version: int, body: dict[str, Any]) -> bool:
        """Store version ``version`` of document ``kind``, atomically.

        Returns True if stored, False if ``(kind, version)`` already exists (left untouched).
        """
        _check_kind(kind)
        _check_version(version)
        if not isinstance(body, dict):
            raise InvalidArgument(f"document body must be a dict, got {type(body).__name__}")
        try:
            json.dumps(body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"document body is not JSON-serializable: {exc}") from exc
        values = {"kind": kind, "version": version, "body": body, "created_at": utcnow()}
        with self._writer.begin() as conn:
            name = conn.dialect.name
            if name in ("sqlite", "postgresql"):
                insert = sqlite_insert if name == "sqlite" else pg_insert
                stmt = (
                    insert(Document)
                    .values(values)
                    .on_conflict_do_nothing(index_elements=[Document.kind, Document.version])
                    .execution_options(preserve_rowcount=True)  # else -1 on INSERT (psycopg)
                )
                return conn.execute(stmt).rowcount == 1
            try:  # other dialects: plain INSERT, a duplicate key rolls back the savepoint only
                with conn.begin_nested():
                    conn.execute(sa.insert(Document).values(values))
            except sa.exc.IntegrityError:
                if self._get(conn, kind, version) is None:
                    raise
                return False
            return True

    def latest_document(self, kind: str) -> tuple[int, dict[str, Any]] | None:
        """``(version, body)`` of the highest stored version of ``kind``, or None."""
        stmt = (
            sa.select(Document.version, Document.body)
            .where(Document.kind == _check_kind(kind))
            .order_by(Document.version.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else (int(row.version), row.body)

    def get_document(self, kind: str, version: int) -> dict[str, Any] | None:
        """The body of one stored version, or None."""
        with self.engine.connect() as conn:
            return self._get(conn, _check_kind(kind), _check_version(version))

    def list_versions(self, kind: str) -> list[int]:
        """Stored versions of ``kind``, ascending."""
        stmt = (
            sa.select(Document.version)
            .where(Document.kind == _check_kind(kind))
            .order_by(Document.version)
        )
        with self.engine.connect() as conn:
            return [int(v) for v in conn.scalars(stmt)]

    def prune_documents(self, kind: str, keep: int = 20) -> int:
        """Delete all but the newest ``keep`` versions of ``kind``; returns how many were deleted."""
        _check_kind(kind)
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise InvalidArgument(f"keep must be a non-negative integer, got {keep!r}")
        newest = (
            sa.select(Document.version)
            .where(Document.kind == kind)
            .order_by(Document.version.desc())
            .limit(keep)
        )
        stmt = sa.delete(Document).where(
            Document.kind == kind, Document.version.not_in(newest.scalar_subquery())
        )
        with self._writer.begin() as conn:
            return conn.execute(stmt).rowcount

    def close(self) -> None:
        """Release every pooled connection. The catalog must not be used afterwards."""
        self.engine.dispose()

    @staticmethod
    def _get(conn: Connection, kind: str, version: int) -> dict[str, Any] | None:
        stmt = sa.select(Document.body).where(Document.kind == kind, Document.version == version)
        return conn.execute(stmt).scalar_one_or_none()
