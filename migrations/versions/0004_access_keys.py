"""S3 access keys.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Creates ``access_keys``: one row per S3 access key pair (``access_key`` primary key, its
``secret_key``, a ``description`` and ``created_at``). Types mirror
``aisync.catalog.models.AccessKey`` exactly.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_keys",
        sa.Column("access_key", sa.String(length=128), nullable=False),
        sa.Column("secret_key", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=256), server_default="", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("access_key", name=op.f("pk_access_keys")),
    )


def downgrade() -> None:
    op.drop_table("access_keys")
