"""Typed SQLAlchemy models of the catalog schema.

Owns: the declarative ``Base`` (one ``MetaData`` with a naming convention, so constraint names are
stable across SQLite and PostgreSQL and Alembic migrations can refer to them) and every mapped
table: ``documents`` (immutable, versioned JSON documents such as the cluster map and the bucket
map, keyed by ``(kind, version)``) and the sync engine's ``jobs``, ``job_reports`` (one row per
object a job processed), ``schedule_runs`` (every firing of a schedule) and ``bucket_sync_state``
(when a bucket last matched its source).

Object names (``job_reports.name``) sort in UTF-8 byte order on every dialect: SQLite compares
TEXT with ``memcmp`` (collation ``BINARY``), and on PostgreSQL the column has collation ``"C"``
(a dialect variant, see :data:`OBJECT_NAME`), so keyset paging uses the primary key index.

The schema is *defined* by the migrations in the top-level ``migrations/`` directory; these models
must describe the same schema (a test compares them with Alembic's autogenerate). Adding a table
means adding a model here **and** a new migration under ``migrations/versions/``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint and index names, identical on every dialect (``pk_documents``, ``ix_...``).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Longest accepted document kind (``documents.kind`` is ``VARCHAR(64)``).
KIND_MAX_LEN = 64

#: Column lengths of the sync tables (``VARCHAR(n)``; checked by the facade before writing).
JOB_ID_MAX_LEN = 32
BUCKET_MAX_LEN = 512
SCHEDULE_MAX_LEN = 128
OBJECT_NAME_MAX_LEN = 1024
WORD_MAX_LEN = 16  # kind, state, action, outcome

#: Accepted ``jobs.kind`` / ``jobs.state`` / ``schedule_runs.outcome`` values; a job in one of
#: :data:`JOB_FINISHED_STATES` never runs again (``prune_jobs`` only deletes those).
JOB_KINDS = frozenset({"prefetch", "copy", "sync", "evict"})
JOB_STATES = frozenset({"pending", "running", "succeeded", "deletes-refused", "failed", "aborted"})
JOB_FINISHED_STATES = frozenset({"succeeded", "deletes-refused", "failed", "aborted"})
SCHEDULE_OUTCOMES = frozenset({"started", "skipped", "failed"})

#: An object name: ``VARCHAR(1024)`` compared in byte order (PostgreSQL: ``COLLATE "C"``;
#: SQLite's default ``BINARY`` collation already is byte order and knows no ``"C"``).
OBJECT_NAME = sa.String(OBJECT_NAME_MAX_LEN).with_variant(
    sa.String(OBJECT_NAME_MAX_LEN, collation="C"), "postgresql"
)

#: A 64-bit autoincrement key (SQLite autoincrements only ``INTEGER PRIMARY KEY``, which is 64-bit).
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    """Timezone-aware "now", used for ``created_at`` columns."""
    return datetime.now(UTC)


def _timestamp(*, nullable: bool) -> Any:
    """A ``TIMESTAMP WITH TIME ZONE`` column (SQLite keeps no zone: the facade writes UTC)."""
    return mapped_column(sa.DateTime(timezone=True), nullable=nullable)


class Base(DeclarativeBase):
    """Declarative base of every catalog table."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: sa.JSON}


class Document(Base):
    """One immutable version of a versioned JSON document (``kind`` e.g. ``"cluster_map"``).

    Rows are never updated: a new version is a new row, and old versions are pruned.
    """

    __tablename__ = "documents"

    kind: Mapped[str] = mapped_column(sa.String(KIND_MAX_LEN), primary_key=True)
    version: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    body: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True),
        nullable=False,
        default=utcnow,
        server_default=sa.text("CURRENT_TIMESTAMP"),
    )

    def __repr__(self) -> str:
        return f"Document(kind={self.kind!r}, version={self.version})"


class Job(Base):
    """One sync-engine job (prefetch, copy, sync or evict of a bucket), from creation to its end.

    ``checkpoint`` is the last object name fully processed (resume starts after it); ``progress``
    is free-form counters; ``schedule`` names the schedule that started it (None: started by hand).
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(sa.String(JOB_ID_MAX_LEN), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(WORD_MAX_LEN), nullable=False)
    state: Mapped[str] = mapped_column(
        sa.String(WORD_MAX_LEN), nullable=False, index=True, default="pending"
    )
    bucket: Mapped[str] = mapped_column(sa.String(BUCKET_MAX_LEN), nullable=False)
    destination: Mapped[str | None] = mapped_column(sa.String(BUCKET_MAX_LEN), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    dry_run: Mapped[bool] = mapped_column(
        sa.Boolean, nullable=False, default=False, server_default=sa.false()
    )
    schedule: Mapped[str | None] = mapped_column(sa.String(SCHEDULE_MAX_LEN), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True),
        nullable=False,
        index=True,
        default=utcnow,
        server_default=sa.text("CURRENT_TIMESTAMP"),
    )
    started_at: Mapped[datetime | None] = _timestamp(nullable=True)
    finished_at: Mapped[datetime | None] = _timestamp(nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(
        sa.JSON, nullable=False, default=dict, server_default=sa.text("'{}'")
    )
    checkpoint: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, kind={self.kind!r}, state={self.state!r})"


class JobReport(Base):
    """What a job did to one object (``action`` e.g. ``"added"``, ``"would-add"``, ``"failed"``).

    Keyed by ``(job_id, name)``: recording an object again replaces its row; deleting the job
    deletes its reports (``ON DELETE CASCADE``). ``version`` is the source version (etag, ...).
    """

    __tablename__ = "job_reports"

    job_id: Mapped[str] = mapped_column(
        sa.String(JOB_ID_MAX_LEN), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(OBJECT_NAME, primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(WORD_MAX_LEN), nullable=False)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    size: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    version: Mapped[Any] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    at: Mapped[datetime] = _timestamp(nullable=False)

    def __repr__(self) -> str:
        return f"JobReport(job_id={self.job_id!r}, name={self.name!r}, action={self.action!r})"


class ScheduleRun(Base):
    """One firing of a schedule: it ``started`` job ``job_id``, or was ``skipped``/``failed``."""

    __tablename__ = "schedule_runs"
    __table_args__ = (sa.Index("ix_schedule_runs_schedule_fired_at", "schedule", "fired_at"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(sa.String(SCHEDULE_MAX_LEN), nullable=False)
    fired_at: Mapped[datetime] = _timestamp(nullable=False)
    outcome: Mapped[str] = mapped_column(sa.String(WORD_MAX_LEN), nullable=False)
    job_id: Mapped[str | None] = mapped_column(sa.String(JOB_ID_MAX_LEN), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)

    def __repr__(self) -> str:
        return f"ScheduleRun(schedule={self.schedule!r}, outcome={self.outcome!r})"


class BucketSyncState(Base):
    """Per bucket (unique name such as ``"aws/datasets"``): when the cluster last verified that
    it matched its source (by which job, with what source totals) and how its last job ended.

    Job ids here are plain strings, not foreign keys: the row outlives pruned jobs.
    """

    __tablename__ = "bucket_sync_state"

    bucket: Mapped[str] = mapped_column(sa.String(BUCKET_MAX_LEN), primary_key=True)
    verified_at: Mapped[datetime | None] = _timestamp(nullable=True)
    job_id: Mapped[str | None] = mapped_column(sa.String(JOB_ID_MAX_LEN), nullable=True)
    source_objects: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    source_bytes: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    last_job_id: Mapped[str | None] = mapped_column(sa.String(JOB_ID_MAX_LEN), nullable=True)
    last_job_state: Mapped[str | None] = mapped_column(sa.String(WORD_MAX_LEN), nullable=True)
    updated_at: Mapped[datetime] = _timestamp(nullable=False)
    #: The bucket whose change feed a sync follows into this one, and how far it has applied.
    feed_source: Mapped[str | None] = mapped_column(sa.String(BUCKET_MAX_LEN), nullable=True)
    feed_cursor: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)

    def __repr__(self) -> str:
        return f"BucketSyncState(bucket={self.bucket!r}, verified_at={self.verified_at!r})"


#: Column lengths of ``access_keys`` (checked by the facade before writing).
ACCESS_KEY_MAX_LEN = 128
SECRET_KEY_MAX_LEN = 128
KEY_DESCRIPTION_MAX_LEN = 256


class AccessKey(Base):
    """An S3 access key pair: the id clients send (``access_key``) and the shared secret the S3
    front end verifies SigV4 signatures with, plus a free-form ``description``.

    The secret is stored as given, not hashed: SigV4 is an HMAC keyed by (a derivation of) the
    secret, so the server needs the secret itself. Only the primary proxy's catalog holds keys.
    """

    __tablename__ = "access_keys"

    access_key: Mapped[str] = mapped_column(sa.String(ACCESS_KEY_MAX_LEN), primary_key=True)
    secret_key: Mapped[str] = mapped_column(sa.String(SECRET_KEY_MAX_LEN), nullable=False)
    description: Mapped[str] = mapped_column(
        sa.String(KEY_DESCRIPTION_MAX_LEN), nullable=False, default="", server_default=""
    )
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True),
        nullable=False,
        default=utcnow,
        server_default=sa.text("CURRENT_TIMESTAMP"),
    )

    def __repr__(self) -> str:  # never the secret
        return f"AccessKey(access_key={self.access_key!r})"
