"""The statutory suppression list (``suppression_entries``): one row per address or domain,
keyed by its 16-byte digest, with the generation (a counter, one per refresh) that last
read it (issue 14.3). No index besides the key: a refresh deletes the rows of older
generations in one scan. Empty at
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
        sa.Column("generation", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_suppression_entries"),
        sqlite_with_rowid=False,  # SQLite: one B-tree keyed by the digest, no rowid table beside it
    )


def downgrade() -> None:
    op.drop_table("suppression_entries")
