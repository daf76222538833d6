"""The statutory suppression list (``suppression_entries``): one row per address or domain,
keyed by its 16-byte digest, with the refresh that last read it (issue 14.3). Empty at
creation: the first refresh fills it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppression_entries",
        sa.Column("digest", sa.LargeBinary(16), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("refresh", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_suppression_entries"),
    )
    op.create_index("ix_suppression_entries_refresh", "suppression_entries", ["refresh"])


def downgrade() -> None:
    op.drop_index("ix_suppression_entries_refresh", table_name="suppression_entries")
    op.drop_table("suppression_entries")
