"""Alembic environment of the aisync catalog.

Owns: how migrations connect. Two ways in:

* programmatic (``aisync.catalog.Catalog.upgrade`` / ``upgrade_to_head``): the caller opens the
  transaction (serialized against other nodes) and passes its connection in
  ``config.attributes["connection"]``; the migrations run inside that transaction;
* the ``alembic`` command line with the top-level ``alembic.ini``: the database URL comes from
  ``-x url=...``, else ``$AISYNC_CATALOG_URL``, else ``sqlalchemy.url`` in the ini file, and the
  engine is made with ``aisync.catalog.make_engine`` (same SQLite tuning as the nodes).
  ``alembic upgrade head --sql`` (offline) prints the SQL instead.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from aisync.catalog.db import make_engine, migration_transaction
from aisync.catalog.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and not config.attributes.get("connection"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("AISYNC_CATALOG_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit(
            "no catalog URL: pass -x url=sqlite:////path/catalog.db or set AISYNC_CATALOG_URL"
        )
    return url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        # make_engine has SQLAlchemy emit BEGIN on SQLite too, so DDL is transactional there
        transactional_ddl=True,
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # programmatic: already inside the caller's transaction
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with migration_transaction(engine) as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
