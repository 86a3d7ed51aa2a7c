"""The catalog: cluster-level records persisted in a SQL database (SQLAlchemy 2 + Alembic).

Each node (proxy or target) keeps its own catalog: a SQLite file in its data directory by default
(``sqlite:////path/catalog.db``) or a PostgreSQL database (``postgresql+psycopg://...``). Today it
holds *versioned documents* (the cluster map and the bucket map: immutable JSON bodies keyed by
``(kind, version)``); later tables (jobs, schedules, users) get a model in :mod:`.models` and a
migration in the top-level ``migrations/versions/``.

Usage (synchronous, thread-safe; async callers run it in a thread pool)::

    cat = Catalog(url)
    cat.upgrade()                                   # alembic upgrade head, idempotent
    cat.save_document("cluster_map", 3, body)       # True if stored, False if already there
    cat.latest_document("cluster_map")              # (3, body) or None
    cat.prune_documents("cluster_map", keep=20)     # number of old versions deleted
    cat.close()

Modules: :mod:`.models` (typed declarative models), :mod:`.db` (engine setup, migrations,
the :class:`Catalog` facade).

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
from aisync.catalog.models import Base, Document

__all__ = [
    "MIGRATIONS_DIR",
    "Base",
    "Catalog",
    "Document",
    "alembic_config",
    "current_revision",
    "head_revision",
    "make_engine",
    "migration_transaction",
    "upgrade_to_head",
]
