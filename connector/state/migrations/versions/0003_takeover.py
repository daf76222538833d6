"""Takeover: which workspace owns a send's resolve, and who is in each batch.

``send_jobs.workspace`` is the token of the local work folder (one instance's
disk) that resolves the current attempt; another instance's folder is a stale
cache. ``batches.member_keys`` holds the 16-byte digests of the batch's
addresses, so an instance taking a send over knows who is already handed over
without the first instance's files.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("send_jobs") as table:
        table.add_column(sa.Column("workspace", sa.String(64), nullable=False, server_default=""))
    with op.batch_alter_table("batches") as table:
        table.add_column(sa.Column("member_keys", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as table:
        table.drop_column("member_keys")
    with op.batch_alter_table("send_jobs") as table:
        table.drop_column("workspace")
