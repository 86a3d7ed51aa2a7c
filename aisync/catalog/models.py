"""Typed SQLAlchemy models of the catalog schema.

Owns: the declarative ``Base`` (one ``MetaData`` with a naming convention, so constraint names are
stable across SQLite and PostgreSQL and Alembic migrations can refer to them) and every mapped
table. Today that is ``documents``: immutable, versioned JSON documents such as the cluster map
and the bucket map, keyed by ``(kind, version)``.

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


def utcnow() -> datetime:
    """Timezone-aware "now", used for ``created_at`` columns."""
    return datetime.now(UTC)


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
