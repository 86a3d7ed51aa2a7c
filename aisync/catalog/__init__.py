"""The catalog: cluster-level records persisted in a SQL database (SQLAlchemy 2 + Alembic).

Each node (proxy or target) keeps its own catalog: a SQLite file in its data directory by default
(``sqlite:////path/catalog.db``) or a PostgreSQL database (``postgresql+psycopg://...``). It
holds *versioned documents* (the cluster map and the bucket map: immutable JSON bodies keyed by
``(kind, version)``) and the sync engine's records: jobs, their per-object reports, schedule runs
and per-bucket sync state. A new table gets a model in :mod:`.models` and a migration in the
top-level ``migrations/versions/``.

Usage (synchronous, thread-safe; async callers run it in a thread pool)::

    cat = Catalog(url)
    cat.upgrade()                                   # alembic upgrade head, idempotent
    cat.save_document("cluster_map", 3, body)       # True if stored, False if already there
    cat.latest_document("cluster_map")              # (3, body) or None
    cat.prune_documents("cluster_map", keep=20)     # number of old versions deleted
    cat.create_job({"id": "j1", "kind": "sync", "bucket": "aws/datasets"})
    cat.update_job("j1", state="running", started_at=now)
    cat.record_reports("j1", [{"name": "a/b.bin", "action": "added", "size": 3}])
    cat.report_page("j1", after="a/a", limit=1000)  # byte-ordered keyset paging
    cat.create_access_key("AKEXAMPLE", "secret-123", "ci")  # AlreadyExists on a duplicate
    cat.access_key_secret("AKEXAMPLE")              # "secret-123", or None
    cat.close()

Facade results are plain dicts with datetimes as ISO-8601 UTC strings (``...+00:00``).

Modules: :mod:`.models` (typed declarative models), :mod:`.db` (engine setup, migrations,
the :class:`Catalog` facade), :mod:`.jobs` (the facade's sync-engine methods, mixed in),
:mod:`.keys` (S3 access keys, mixed in).

Owns: the catalog schema, its migrations and all catalog SQL.
May import: aisync.config, aisync.util, sqlalchemy, alembic.
"""

from aisync.catalog.db import (
    MIGRATIONS_DIR,
    Catalog,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    migration_transaction,
    upgrade_to_head,
)
from aisync.catalog.keys import (
    ACCESS_KEY_RE,
    SECRET_KEY_RE,
    check_access_key,
    check_description,
    check_secret_key,
)
from aisync.catalog.models import (
    JOB_FINISHED_STATES,
    JOB_KINDS,
    JOB_STATES,
    SCHEDULE_OUTCOMES,
    AccessKey,
    Base,
    BucketSyncState,
    Document,
    Job,
    JobReport,
    ScheduleRun,
)

__all__ = [
    "ACCESS_KEY_RE",
    "JOB_FINISHED_STATES",
    "JOB_KINDS",
    "JOB_STATES",
    "MIGRATIONS_DIR",
    "SCHEDULE_OUTCOMES",
    "SECRET_KEY_RE",
    "AccessKey",
    "Base",
    "BucketSyncState",
    "Catalog",
    "Document",
    "Job",
    "JobReport",
    "ScheduleRun",
    "alembic_config",
    "check_access_key",
    "check_description",
    "check_secret_key",
    "current_revision",
    "head_revision",
    "make_engine",
    "migration_transaction",
    "upgrade_to_head",
]
