"""Initial state schema: send jobs, batches, leases, watermarks, tracking, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from connector.state.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _text(name: str, default: str = "") -> sa.Column:
    return sa.Column(name, sa.Text, nullable=False, server_default=default)


def _str(name: str, length: int, default: str = "") -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=False, server_default=default)


def _int(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer, nullable=False, server_default="0")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, UtcDateTime(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "send_jobs",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        _text("phase_detail"),
        _str("path", 10),
        _str("esp_list_id", 100),
        _str("esp_send_key", 200),
        _str("esp_job_id", 100),
        _str("campaign_id", 64),
        _str("name", 400),
        _int("resolved"),
        _int("handed_over"),
        _int("skipped"),
        _text("skipped_by_reason", "{}"),
        _text("error"),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("request_id", name="pk_send_jobs"),
    )
    op.create_index("ix_send_jobs_status", "send_jobs", ["status"])

    op.create_table(
        "batches",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        _str("file_name", 400),
        _int("rows"),
        sa.Column("status", sa.String(20), nullable=False),
        _str("import_key", 200),
        _int("rows_ok"),
        _int("rows_error"),
        _text("error"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("request_id", "seq", name="pk_batches"),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["send_jobs.request_id"],
            name="fk_batches_request_id_send_jobs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_batches_status", "batches", ["status"])

    op.create_table(
        "leases",
        sa.Column("resource", sa.String(200), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        _ts("acquired_at"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("resource", name="pk_leases"),
    )

    op.create_table(
        "watermarks",
        sa.Column("account", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(20), nullable=False),
        _ts("value"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("account", "event_type", name="pk_watermarks"),
    )

    op.create_table(
        "tracked_sends",
        sa.Column("account", sa.String(100), nullable=False),
        sa.Column("job_id", sa.String(100), nullable=False),
        _str("request_id", 64),
        _str("campaign_id", 64),
        _str("name", 400),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        _text("stopped_reason"),
        _ts("added_at"),
        _ts("stopped_at", nullable=True),
        sa.PrimaryKeyConstraint("account", "job_id", name="pk_tracked_sends"),
    )

    op.create_table(
        "send_counts",
        sa.Column("job_id", sa.String(100), nullable=False),
        sa.Column("counter", sa.String(50), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("job_id", "counter", name="pk_send_counts"),
    )

    op.create_table(
        "seen_events",
        sa.Column("key_hash", sa.String(64), nullable=False),
        _ts("seen_at"),
        sa.PrimaryKeyConstraint("key_hash", name="pk_seen_events"),
    )
    op.create_index("ix_seen_events_seen_at", "seen_events", ["seen_at"])

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        _str("table_name", 64),
        _str("record_id", 64),
        _str("email", 320),
        sa.Column("reason", sa.String(50), nullable=False),
        _text("detail"),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
    )
    op.create_index("ix_quarantine_request_id", "quarantine", ["request_id"])

    op.create_table(
        "change_log",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        _ts("changed_at"),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(100), nullable=False),
        sa.Column("old_value", sa.Text, nullable=True),
        sa.Column("new_value", sa.Text, nullable=True),
        _str("source", 200),
        _str("run_id", 64),
        sa.PrimaryKeyConstraint("id", name="pk_change_log"),
    )
    op.create_index("ix_change_log_record", "change_log", ["table_name", "record_id"])

    op.create_table(
        "step_runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(50), nullable=False),
        _str("holder", 200),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        _str("outcome", 20, "running"),
        _int("processed"),
        _text("message"),
        _text("details", "{}"),
        sa.PrimaryKeyConstraint("run_id", name="pk_step_runs"),
    )
    op.create_index("ix_step_runs_step_started", "step_runs", ["step", "started_at"])

    op.create_table(
        "meta",
        sa.Column("key", sa.String(100), nullable=False),
        _text("value"),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )


def downgrade() -> None:
    for index, table in (
        ("ix_step_runs_step_started", "step_runs"),
        ("ix_change_log_record", "change_log"),
        ("ix_quarantine_request_id", "quarantine"),
        ("ix_seen_events_seen_at", "seen_events"),
        ("ix_batches_status", "batches"),
        ("ix_send_jobs_status", "send_jobs"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "meta",
        "step_runs",
        "change_log",
        "quarantine",
        "seen_events",
        "send_counts",
        "tracked_sends",
        "watermarks",
        "leases",
        "batches",
        "send_jobs",
    ):
        op.drop_table(table)
