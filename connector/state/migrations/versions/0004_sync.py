"""Two-way sync: the shadow of agreed values, and the change log's direction and rule.

``sync_shadow`` holds per CRM table, record and synced CRM column the last pair of
values (CRM text, ESP text) both sides agreed on; the sync step compares each side
with it to know which one changed. ``change_log`` gains ``direction`` (``to_esp``,
``to_crm``, ``skipped`` ...) and ``rule`` (the ini line that decided), and an index
on ``changed_at`` for ``connector changes --since`` and the retention.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from connector.state.schema import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_shadow",
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(100), nullable=False),
        sa.Column("crm_value", sa.Text, nullable=False, server_default=""),
        sa.Column("esp_value", sa.Text, nullable=False, server_default=""),
        sa.Column("run_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("table_name", "record_id", "field", name="pk_sync_shadow"),
    )
    op.create_index("ix_sync_shadow_record_id", "sync_shadow", ["record_id"])
    with op.batch_alter_table("change_log") as table:
        table.add_column(sa.Column("direction", sa.String(20), nullable=False, server_default=""))
        table.add_column(sa.Column("rule", sa.String(400), nullable=False, server_default=""))
    op.create_index("ix_change_log_changed_at", "change_log", ["changed_at"])


def downgrade() -> None:
    op.drop_index("ix_change_log_changed_at", "change_log")
    with op.batch_alter_table("change_log") as table:
        table.drop_column("rule")
        table.drop_column("direction")
    op.drop_index("ix_sync_shadow_record_id", "sync_shadow")
    op.drop_table("sync_shadow")
