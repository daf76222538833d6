"""First-open / first-click keys waiting to be merged into ``seen_keys`` (``firsts_pending``).

The tracking step appends them page by page (sequential inserts) and merges them into
``seen_keys`` once per stream run, sorted, adding the number really new to the send's
``unique_opens`` / ``unique_clicks`` in the same transaction (issue 17). Empty at
creation: until this revision every such key was marked directly.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "firsts_pending",
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("job_id", sa.String(100), nullable=False),
        sa.Column("counter", sa.String(50), nullable=False),
        sa.Column("key", sa.LargeBinary(24), nullable=False),
        sa.Column("legacy_hash", sa.String(64), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("seq", name="pk_firsts_pending"),
    )


def downgrade() -> None:
    op.drop_table("firsts_pending")
