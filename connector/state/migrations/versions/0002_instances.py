"""Instances: every service process registers itself (host, pid, version, heartbeat).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from connector.state.schema import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _str(name: str, length: int) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=False, server_default="")


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("holder", sa.String(200), nullable=False),
        _str("label", 100),
        _str("host", 100),
        sa.Column("pid", sa.Integer, nullable=False, server_default="0"),
        _str("token", 32),
        _str("scope", 200),
        _str("process_start", 32),
        _str("version", 50),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
        sa.Column("stopped_at", UtcDateTime(), nullable=True),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("holder", name="pk_instances"),
    )
    op.create_index("ix_instances_label", "instances", ["label"])


def downgrade() -> None:
    op.drop_index("ix_instances_label", table_name="instances")
    op.drop_table("instances")
