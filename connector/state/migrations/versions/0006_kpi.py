"""KPI values: what the kpi job last wrote to CRM per (source, customer, KPI).

``kpi_values.value_hash`` is the hash of the value and period last confirmed by CRM,
so a run writes only what changed; ``seen_run`` is the last run whose source read
held the row, so a KPI that left the source is found and deactivated.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from connector.state.schema import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kpi_values",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("customer_key", sa.String(400), nullable=False),
        sa.Column("kpi", sa.String(100), nullable=False),
        sa.Column("crm_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("value_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("seen_run", sa.String(64), nullable=False, server_default=""),
        sa.Column("written_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name="pk_kpi_values"),
    )
    op.create_index("ix_kpi_values_source", "kpi_values", ["source", "active"])


def downgrade() -> None:
    op.drop_index("ix_kpi_values_source", table_name="kpi_values")
    op.drop_table("kpi_values")
