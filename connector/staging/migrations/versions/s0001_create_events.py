"""Create the tracking staging table (one row per event, unique natural key).

Revision ID: s0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision = "s0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copy of the shape at this revision (a later change gets a new revision).
_DT = sa.DateTime().with_variant(mssql.DATETIME2(precision=3), "mssql")
_TEXT = sa.UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")  # NVARCHAR(max), not NTEXT


def _names() -> tuple[str, str | None]:
    attrs = op.get_context().config.attributes
    return attrs["table"], attrs.get("schema") or None


def upgrade() -> None:
    table, schema = _names()
    op.create_table(
        table,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Unicode(50), nullable=False),
        sa.Column("subscriber_key", sa.Unicode(254), nullable=False),
        sa.Column("crm_record_id", sa.Unicode(36), nullable=True),
        sa.Column("crm_table", sa.Unicode(20), nullable=True),
        sa.Column("event_type", sa.Unicode(10), nullable=False),
        sa.Column("event_time_utc", _DT, nullable=False),
        sa.Column("email", sa.Unicode(254), nullable=True),
        sa.Column("list_id", sa.Unicode(50), nullable=True),
        sa.Column("batch_id", sa.Unicode(50), nullable=True),
        sa.Column("url", _TEXT, nullable=True),
        sa.Column("url_key", sa.String(32), nullable=False),
        sa.Column("url_id", sa.Unicode(50), nullable=True),
        sa.Column("bounce_category", sa.Unicode(100), nullable=True),
        sa.Column("bounce_type", sa.Unicode(100), nullable=True),
        sa.Column("smtp_code", sa.Unicode(20), nullable=True),
        sa.Column("smtp_reason", _TEXT, nullable=True),
        sa.Column("reason", _TEXT, nullable=True),
        sa.Column("loaded_at", _DT, nullable=False),
        # the natural key; url_key stands for the URL, which can be longer than an index key
        sa.UniqueConstraint("job_id", "event_type", "event_time_utc", "subscriber_key", "url_key",
                            name=f"uq_{table}_natural_key"),
        schema=schema,
    )
    op.create_index(f"ix_{table}_event_time_utc", table, ["event_time_utc"], schema=schema)


def downgrade() -> None:
    table, schema = _names()
    op.drop_table(table, schema=schema)
