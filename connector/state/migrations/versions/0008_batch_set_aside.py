"""A batch set aside is a status: ``superseded`` (the request was retried) or ``abandoned``
(a takeover found its file only on the other instance's disk), no longer an error text.

Until now such a batch kept ``imported`` or ``failed`` and said why in ``error``; its
``error`` text stays (it tells a person why), its status becomes the state.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SUPERSEDED = "superseded by a retry of the request"
ABANDONED = ("abandoned: its file was only on the disk of the instance that wrote it; its rows went into "
             "later batches")
"""The error texts that marked them (connector.state.records, as they were written)."""

_batches = sa.table("batches", sa.column("status", sa.String), sa.column("error", sa.Text))


def upgrade() -> None:
    for status, error in (("superseded", SUPERSEDED), ("abandoned", ABANDONED)):
        op.execute(_batches.update().where(_batches.c.error == error).values(status=status))


def downgrade() -> None:
    op.execute(_batches.update().where(_batches.c.status == "superseded").values(status="failed"))
    op.execute(_batches.update().where(_batches.c.status == "abandoned").values(status="failed"))
