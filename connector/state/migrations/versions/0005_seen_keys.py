"""Seen-event keys ordered by time: ``seen_keys`` (8-byte time + 16-byte digest).

``seen_events`` was keyed by SHA-256 hashes of the natural key: every insert touched
a random page of a growing B-tree (issue 17). ``seen_keys`` puts the event's time (for
first-open / first-click keys: the tracked send's ``added_at``) first, so inserts go
to the right edge and pruning is a key range. Old keys cannot be converted (the hash
hides the time); ``seen_events`` stays and is still consulted for events older than
the meta value ``seen_events_legacy_before`` (the time of this upgrade) until pruning
empties it, so no event is processed twice across the upgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LEGACY_META = "seen_events_legacy_before"


def upgrade() -> None:
    op.create_table(
        "seen_keys",
        sa.Column("key", sa.LargeBinary(24), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_seen_keys"),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT 1 FROM seen_events LIMIT 1")).first() is not None:
        meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
        op.bulk_insert(meta, [{"key": LEGACY_META, "value": datetime.now(UTC).isoformat()}])


def downgrade() -> None:
    op.execute(sa.text(f"DELETE FROM meta WHERE key = '{LEGACY_META}'"))
    op.drop_table("seen_keys")
