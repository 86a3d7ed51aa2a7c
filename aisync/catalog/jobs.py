"""The sync engine's catalog records: jobs, per-object job reports, schedule runs, bucket state.

Owns :class:`JobsMixin`, the part of the :class:`~aisync.catalog.Catalog` facade over the tables
``jobs``, ``job_reports``, ``schedule_runs`` and ``bucket_sync_state`` (models in
:mod:`.models`, migration ``0002``). Like the rest of the facade every method is synchronous and
thread-safe (one pooled connection per call, one transaction each; writes go through the writer
engine, so SQLite takes its write lock up front).

Values returned are plain JSON-friendly dicts: one key per column, datetimes as ISO-8601 strings
in UTC with an explicit offset (``"2024-12-05T10:00:00.123456+00:00"``). Datetimes passed in may
be ``datetime`` objects or such ISO strings; naive ones are taken as UTC, and all are stored in
UTC (SQLite keeps no zone). Upserts use ``INSERT ... ON CONFLICT DO UPDATE`` (SQLite and
PostgreSQL only; other dialects raise :class:`~aisync.util.errors.NotSupported`).

Report names page in UTF-8 byte order on both dialects (see :mod:`.models`), so ``after=`` keyset
paging matches ``sorted(names)`` in Python and a listing of the source bucket.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from aisync.catalog.models import (
    BUCKET_MAX_LEN,
    JOB_FINISHED_STATES,
    JOB_ID_MAX_LEN,
    JOB_KINDS,
    JOB_STATES,
    OBJECT_NAME_MAX_LEN,
    SCHEDULE_MAX_LEN,
    SCHEDULE_OUTCOMES,
    WORD_MAX_LEN,
    BucketSyncState,
    Job,
    JobReport,
    ScheduleRun,
    utcnow,
)
from aisync.util.errors import InvalidArgument, JobNotFound, NotSupported

JOBS: sa.Table = Job.__table__  # type: ignore[assignment]
REPORTS: sa.Table = JobReport.__table__  # type: ignore[assignment]
SCHEDULE_RUNS: sa.Table = ScheduleRun.__table__  # type: ignore[assignment]
SYNC_STATE: sa.Table = BucketSyncState.__table__  # type: ignore[assignment]

#: Fields ``create_job`` accepts (``id``, ``kind`` and ``bucket`` are required).
JOB_CREATE_FIELDS = frozenset(
    "id kind state bucket destination params dry_run schedule created_at progress".split()
)
#: Fields ``update_job`` may change.
JOB_UPDATE_FIELDS = frozenset(
    {"state", "started_at", "finished_at", "progress", "checkpoint", "error"}
)
#: Keys of a row passed to ``record_reports`` (``name`` and ``action`` are required).
REPORT_FIELDS = frozenset({"name", "action", "reason", "size", "version", "at"})
#: Fields ``set_sync_state`` may set (``updated_at`` is always set to now).
SYNC_STATE_FIELDS = frozenset(
    {"verified_at", "job_id", "source_objects", "source_bytes", "last_job_id", "last_job_state",
     "feed_source", "feed_cursor"}
)

#: Names per ``IN (...)`` list in :meth:`JobsMixin.reported_names` (far below any bind limit).
_IN_CHUNK = 500
_MAX_BIGINT = 2**63 - 1


# ----------------------------------------------------------------------------------- validation


def _text(what: str, value: object, max_len: int, *, nullable: bool = False) -> str | None:
    """``value`` as a non-empty string of at most ``max_len`` characters (or None if allowed)."""
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidArgument(
            f"{what} must be a non-empty string of at most {max_len} characters, got {value!r}"
        )
    return value


def _free_text(what: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string or None, got {type(value).__name__}")
    return value


def _choice(what: str, value: object, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise InvalidArgument(f"{what} must be one of {sorted(allowed)}, got {value!r}")
    return value  # type: ignore[return-value]


def _json(what: str, value: object, *, dict_only: bool = True) -> Any:
    """A JSON-serializable value (a dict when ``dict_only``), checked before it reaches SQL."""
    if dict_only and not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a dict, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} is not JSON-serializable: {exc}") from exc
    return value


def _count(what: str, value: object, *, nullable: bool = True) -> int | None:
    """A non-negative 64-bit integer (or None)."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_BIGINT:
        raise InvalidArgument(f"{what} must be an integer in [0, 2**63), got {value!r}")
    return value


def _positive(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{what} must be a positive integer, got {value!r}")
    return value


def _when(what: str, value: object, *, nullable: bool = True) -> datetime | None:
    """A ``datetime`` or ISO-8601 string as an aware UTC ``datetime`` (naive means UTC)."""
    if value is None and nullable:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidArgument(f"{what} is not an ISO-8601 timestamp: {value!r}") from exc
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{what} must be a datetime or ISO-8601 string, got {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _words(what: str, values: Iterable[str] | None) -> list[str] | None:
    """An optional filter list; a lone string means that one value, not its characters."""
    if values is None:
        return None
    values = [values] if isinstance(values, str) else list(values)
    for v in values:
        if not isinstance(v, str):
            raise InvalidArgument(f"{what} must be strings, got {v!r}")
    return values


def _unknown(what: str, given: Iterable[str], allowed: frozenset[str]) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        raise InvalidArgument(f"unknown {what} field(s) {extra}; allowed: {sorted(allowed)}")


# ------------------------------------------------------------------------------------- rows


def _iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with offset; SQLite hands back naive datetimes, which are UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _plain(row: sa.Row[Any]) -> dict[str, Any]:
    """A result row as a JSON-friendly dict (datetimes become ISO strings)."""
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}


def _insert(conn: Connection) -> Callable[[sa.Table], Any]:
    """The dialect's ``insert`` with ``on_conflict_do_*`` support."""
    name = conn.dialect.name
    if name == "sqlite":
        return sqlite_insert
    if name == "postgresql":
        return pg_insert
    raise NotSupported(f"catalog upserts are implemented for SQLite and PostgreSQL, not {name}")


def _insert_new(conn: Connection, table: sa.Table, values: dict[str, Any],
                key: sa.Column) -> bool:
    """Insert a row unless one with the same ``key`` exists; True if this call inserted it."""
    stmt = (
        _insert(conn)(table)
        .values(values)
        .on_conflict_do_nothing(index_elements=[key])
        .execution_options(preserve_rowcount=True)  # else -1 on INSERT (psycopg)
    )
    return conn.execute(stmt).rowcount == 1


def _report_values(job_id: str, row: object, now: datetime) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise InvalidArgument(f"a report row must be a dict, got {type(row).__name__}")
    _unknown("report", row, REPORT_FIELDS)
    at = row.get("at")
    return {
        "job_id": job_id,
        "name": _text("report name", row.get("name"), OBJECT_NAME_MAX_LEN),
        "action": _text("report action", row.get("action"), WORD_MAX_LEN),
        "reason": _free_text("report reason", row.get("reason")),
        "size": _count("report size", row.get("size")),
        "version": _json("report version", row.get("version"), dict_only=False),
        "at": now if at is None else _when("report at", at),
    }


# ------------------------------------------------------------------------------------- facade


class JobsMixin:
    """Jobs, job reports, schedule runs and bucket sync state; mixed into ``Catalog``.

    Needs ``self.engine`` (reads) and ``self._writer`` (the engine with the writer option).
    """

    engine: Engine
    _writer: Engine

    # ---- jobs

    def create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Insert a job and return it. ``job`` holds ``id``, ``kind`` (prefetch|copy|sync|evict)
        and ``bucket``, optionally ``state`` (default ``"pending"``), ``destination``, ``params``
        (dict, default ``{}``), ``dry_run`` (default False), ``schedule``, ``progress`` and
        ``created_at`` (default now). Unknown keys or a duplicate ``id``: InvalidArgument.
        """
        if not isinstance(job, dict):
            raise InvalidArgument(f"job must be a dict, got {type(job).__name__}")
        _unknown("job", job, JOB_CREATE_FIELDS)
        dry_run = job.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise InvalidArgument(f"job dry_run must be a bool, got {dry_run!r}")
        job_id = _text("job id", job.get("id"), JOB_ID_MAX_LEN)
        values = {
            "id": job_id,
            "kind": _choice("job kind", job.get("kind"), JOB_KINDS),
            "state": _choice("job state", job.get("state", "pending"), JOB_STATES),
            "bucket": _text("job bucket", job.get("bucket"), BUCKET_MAX_LEN),
            "destination": _text(
                "job destination", job.get("destination"), BUCKET_MAX_LEN, nullable=True
            ),
            "params": _json("job params", job.get("params", {})),
            "dry_run": dry_run,
            "schedule": _text("job schedule", job.get("schedule"), SCHEDULE_MAX_LEN, nullable=True),
            "created_at": _when("job created_at", job.get("created_at")) or utcnow(),
            "progress": _json("job progress", job.get("progress", {})),
        }
        with self._writer.begin() as conn:
            if not _insert_new(conn, JOBS, values, JOBS.c.id):
                raise InvalidArgument(f"job {job_id!r} already exists", job_id=job_id)
            return self._job(conn, job_id)  # type: ignore[arg-type]

    def update_job(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Change any of ``state``, ``started_at``, ``finished_at`` (datetime or ISO string),
        ``progress`` (dict, replaced whole), ``checkpoint``, ``error``; returns the updated job.
        Unknown job: JobNotFound; unknown field or bad value: InvalidArgument.
        """
        _text("job id", job_id, JOB_ID_MAX_LEN)
        _unknown("job update", fields, JOB_UPDATE_FIELDS)
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "state":
                values[key] = _choice("job state", value, JOB_STATES)
            elif key in ("started_at", "finished_at"):
                values[key] = _when(f"job {key}", value)
            elif key == "progress":
                values[key] = _json("job progress", value)
            else:  # checkpoint, error
                values[key] = _free_text(f"job {key}", value)
        with self._writer.begin() as conn:
            if values:
                stmt = (
                    sa.update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .values(values)
                    .execution_options(preserve_rowcount=True)
                )
                if conn.execute(stmt).rowcount != 1:
                    raise JobNotFound(f"job {job_id!r} not found", job_id=job_id)
            return self._job(conn, job_id)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """One job as a dict (every column). Unknown job: JobNotFound."""
        _text("job id", job_id, JOB_ID_MAX_LEN)
        with self.engine.connect() as conn:
            return self._job(conn, job_id)

    def list_jobs(
        self,
        *,
        states: Iterable[str] | None = None,
        bucket: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Jobs newest first (by ``created_at``, then id), optionally only in ``states`` and/or
        of ``bucket``; at most ``limit``."""
        stmt = sa.select(JOBS).order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc())
        wanted = _words("job states", states)
        if wanted is not None:
            stmt = stmt.where(JOBS.c.state.in_(wanted))
        if bucket is not None:
            stmt = stmt.where(JOBS.c.bucket == bucket)
        stmt = stmt.limit(_positive("limit", limit))
        with self.engine.connect() as conn:
            return [_plain(row) for row in conn.execute(stmt)]

    def prune_jobs(self, keep: int = 1000) -> int:
        """Delete finished jobs (succeeded|deletes-refused|failed|aborted) beyond the newest
        ``keep`` of them, with their reports (``ON DELETE CASCADE``); pending and running jobs
        are never deleted. Returns how many jobs were deleted."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise InvalidArgument(f"keep must be a non-negative integer, got {keep!r}")
        finished = JOBS.c.state.in_(sorted(JOB_FINISHED_STATES))
        newest = (
            sa.select(JOBS.c.id)
            .where(finished)
            .order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc())
            .limit(keep)
        )
        stmt = sa.delete(JOBS).where(finished, JOBS.c.id.not_in(newest.scalar_subquery()))
        with self._writer.begin() as conn:
            return conn.execute(stmt).rowcount

    @staticmethod
    def _job(conn: Connection, job_id: str) -> dict[str, Any]:
        row = conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"job {job_id!r} not found", job_id=job_id)
        return _plain(row)

    # ---- job reports

    def record_reports(self, job_id: str, rows: Iterable[dict[str, Any]]) -> int:
        """Upsert what ``job_id`` did to objects, one transaction per call (batches of ~1000 rows
        are the intended size). Each row: ``name`` and ``action`` (any word up to 16 characters:
        added, updated, deleted, evicted, copied, skipped, failed, would-add, ...), optionally
        ``reason``, ``size``, ``version`` (any JSON value) and ``at`` (default now). A name
        recorded again (in this batch or earlier) replaces its row. Returns the number of
        distinct names written. Unknown job: JobNotFound.
        """
        _text("job id", job_id, JOB_ID_MAX_LEN)
        now = utcnow()
        by_name: dict[str, dict[str, Any]] = {}
        for row in rows:
            values = _report_values(job_id, row, now)
            by_name[values["name"]] = values  # last one wins, as a later upsert would
        if not by_name:
            return 0
        with self._writer.begin() as conn:
            if conn.execute(sa.select(JOBS.c.id).where(JOBS.c.id == job_id)).first() is None:
                raise JobNotFound(f"job {job_id!r} not found", job_id=job_id)
            insert = _insert(conn)(REPORTS)
            stmt = insert.on_conflict_do_update(
                index_elements=[REPORTS.c.job_id, REPORTS.c.name],
                set_={c: insert.excluded[c] for c in ("action", "reason", "size", "version", "at")},
            )
            conn.execute(stmt, list(by_name.values()))  # executemany
        return len(by_name)

    def report_page(
        self,
        job_id: str,
        *,
        actions: Iterable[str] | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` reports of ``job_id`` in UTF-8 byte order of ``name``, starting after
        the name ``after`` (keyset paging: pass the last name of the previous page), optionally
        only with an action in ``actions``. Each dict has every column (``job_id``, ``name``,
        ``action``, ``reason``, ``size``, ``version``, ``at``). Unknown job: empty list."""
        stmt = (
            sa.select(REPORTS)
            .where(REPORTS.c.job_id == job_id)
            .order_by(REPORTS.c.name)
            .limit(_positive("limit", limit))
        )
        wanted = _words("report actions", actions)
        if wanted is not None:
            stmt = stmt.where(REPORTS.c.action.in_(wanted))
        if after is not None:
            stmt = stmt.where(REPORTS.c.name > _free_text("after", after))
        with self.engine.connect() as conn:
            return [_plain(row) for row in conn.execute(stmt)]

    def report_counts(self, job_id: str) -> dict[str, int]:
        """Number of reports of ``job_id`` per action (``{"added": 10, "skipped": 3}``)."""
        stmt = (
            sa.select(REPORTS.c.action, sa.func.count())
            .where(REPORTS.c.job_id == job_id)
            .group_by(REPORTS.c.action)
        )
        with self.engine.connect() as conn:
            return {action: int(n) for action, n in conn.execute(stmt)}

    def reported_names(
        self, job_id: str, names: Iterable[str], *, actions: Iterable[str] | None = None
    ) -> set[str]:
        """Which of ``names`` already have a report row for ``job_id`` (rows are written only
        once an object is done, so these are skipped on resume); ``actions`` restricts that to
        rows with one of those actions (e.g. every action but ``"failed"`` to retry failures)."""
        wanted = _words("report actions", actions)
        todo = list(dict.fromkeys(names))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(todo), _IN_CHUNK):
                stmt = sa.select(REPORTS.c.name).where(
                    REPORTS.c.job_id == job_id, REPORTS.c.name.in_(todo[i : i + _IN_CHUNK])
                )
                if wanted is not None:
                    stmt = stmt.where(REPORTS.c.action.in_(wanted))
                found.update(conn.scalars(stmt))
        return found

    # ---- schedule runs

    def record_schedule_run(
        self,
        schedule: str,
        fired_at: datetime | str,
        outcome: str,
        job_id: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Record one firing of ``schedule`` (``outcome``: started|skipped|failed, with the
        started ``job_id`` or the ``reason``); returns the row including its new ``id``."""
        values = {
            "schedule": _text("schedule", schedule, SCHEDULE_MAX_LEN),
            "fired_at": _when("fired_at", fired_at, nullable=False),
            "outcome": _choice("schedule outcome", outcome, SCHEDULE_OUTCOMES),
            "job_id": _text("job id", job_id, JOB_ID_MAX_LEN, nullable=True),
            "reason": _free_text("reason", reason),
        }
        with self._writer.begin() as conn:
            (run_id,) = conn.execute(sa.insert(SCHEDULE_RUNS).values(values)).inserted_primary_key
            row = conn.execute(sa.select(SCHEDULE_RUNS).where(SCHEDULE_RUNS.c.id == run_id)).one()
        return _plain(row)

    def schedule_runs(self, schedule: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` firings of ``schedule``, newest first (by ``fired_at``, then id)."""
        stmt = (
            sa.select(SCHEDULE_RUNS)
            .where(SCHEDULE_RUNS.c.schedule == schedule)
            .order_by(SCHEDULE_RUNS.c.fired_at.desc(), SCHEDULE_RUNS.c.id.desc())
            .limit(_positive("limit", limit))
        )
        with self.engine.connect() as conn:
            return [_plain(row) for row in conn.execute(stmt)]

    # ---- bucket sync state

    def set_sync_state(self, bucket: str, **fields: Any) -> dict[str, Any]:
        """Create or update the sync state of ``bucket``: sets only the given fields among
        ``verified_at`` (datetime or ISO string), ``job_id``, ``source_objects``,
        ``source_bytes``, ``last_job_id``, ``last_job_state``, ``feed_source``, ``feed_cursor``
        (None clears one), and always
        ``updated_at`` = now. Returns the whole row."""
        _text("bucket", bucket, BUCKET_MAX_LEN)
        _unknown("sync state", fields, SYNC_STATE_FIELDS)
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "verified_at":
                values[key] = _when("verified_at", value)
            elif key in ("source_objects", "source_bytes", "feed_cursor"):
                values[key] = None if value is None else _count(key, value)
            elif key == "feed_source":
                values[key] = None if value is None else _text(key, value, BUCKET_MAX_LEN)
            elif key == "last_job_state":
                values[key] = None if value is None else _choice(key, value, JOB_STATES)
            else:  # job_id, last_job_id
                values[key] = _text(key, value, JOB_ID_MAX_LEN, nullable=True)
        values["updated_at"] = utcnow()
        with self._writer.begin() as conn:
            insert = _insert(conn)(SYNC_STATE).values(bucket=bucket, **values)
            stmt = insert.on_conflict_do_update(
                index_elements=[SYNC_STATE.c.bucket],
                set_={key: insert.excluded[key] for key in values},
            )
            conn.execute(stmt)
            row = conn.execute(sa.select(SYNC_STATE).where(SYNC_STATE.c.bucket == bucket)).one()
        return _plain(row)

    def get_sync_state(self, bucket: str) -> dict[str, Any] | None:
        """The sync state of ``bucket`` (every column), or None if never set."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(SYNC_STATE).where(SYNC_STATE.c.bucket == bucket)).first()
        return None if row is None else _plain(row)

    def list_sync_states(self) -> list[dict[str, Any]]:
        """Every bucket's sync state, by bucket name."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(SYNC_STATE).order_by(SYNC_STATE.c.bucket))
            return [_plain(row) for row in rows]
