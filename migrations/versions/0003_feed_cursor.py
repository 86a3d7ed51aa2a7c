"""Change-feed cursors in the bucket sync state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Adds ``bucket_sync_state.feed_source`` (the bucket whose change feed a sync follows into this
one) and ``feed_cursor`` (the feed position it has applied up to).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bucket_sync_state") as batch:
        batch.add_column(sa.Column("feed_source", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("feed_cursor", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bucket_sync_state") as batch:
        batch.drop_column("feed_cursor")
        batch.drop_column("feed_source")
