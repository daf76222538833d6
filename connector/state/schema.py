"""The state database's tables, in one SQLAlchemy ``MetaData``.

The Alembic migrations in ``connector/state/migrations/versions`` create exactly
these tables; a test compares the migrated database with this metadata so the two
cannot drift. Change a table here *and* add a migration.

Every timestamp is a ``UtcDateTime``: aware UTC in Python, stored as UTC (naive
text on SQLite, ``timestamptz`` on PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator):
    """An aware UTC datetime; naive values from the database are read as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the state database; use aware UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, UtcDateTime(), nullable=nullable)


send_jobs = sa.Table(
    "send_jobs",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("phase_detail", sa.Text, nullable=False, server_default=""),
    sa.Column("path", sa.String(10), nullable=False, server_default=""),
    sa.Column("esp_list_id", sa.String(100), nullable=False, server_default=""),
    sa.Column("esp_send_key", sa.String(200), nullable=False, server_default=""),
    sa.Column("esp_job_id", sa.String(100), nullable=False, server_default=""),
    sa.Column("campaign_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("name", sa.String(400), nullable=False, server_default=""),
    sa.Column("resolved", sa.Integer, nullable=False, server_default="0"),
    sa.Column("handed_over", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped_by_reason", sa.Text, nullable=False, server_default="{}"),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    sa.Column("workspace", sa.String(64), nullable=False, server_default=""),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column(
        "request_id",
        sa.String(64),
        sa.ForeignKey("send_jobs.request_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("file_name", sa.String(400), nullable=False, server_default=""),
    sa.Column("rows", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("import_key", sa.String(200), nullable=False, server_default=""),
    sa.Column("rows_ok", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rows_error", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    _ts("updated_at", nullable=False),
    sa.Column("member_keys", sa.LargeBinary, nullable=True),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("resource", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    _ts("acquired_at", nullable=False),
    _ts("expires_at", nullable=False),
)

watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("account", sa.String(100), primary_key=True),
    sa.Column("event_type", sa.String(20), primary_key=True),
    _ts("value", nullable=False),
    _ts("updated_at", nullable=False),
)

tracked_sends = sa.Table(
    "tracked_sends",
    metadata,
    sa.Column("account", sa.String(100), primary_key=True),
    sa.Column("job_id", sa.String(100), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("campaign_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("name", sa.String(400), nullable=False, server_default=""),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("stopped_reason", sa.Text, nullable=False, server_default=""),
    _ts("added_at", nullable=False),
    _ts("stopped_at"),
)

send_counts = sa.Table(
    "send_counts",
    metadata,
    sa.Column("job_id", sa.String(100), primary_key=True),
    sa.Column("counter", sa.String(50), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False, server_default="0"),
)

seen_events = sa.Table(
    "seen_events",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    _ts("seen_at", nullable=False),
    sa.Index("ix_seen_events_seen_at", "seen_at"),
)
"""Seen-event keys before migration 0005 (SHA-256 of the natural key): read until pruned empty."""

seen_keys = sa.Table(
    "seen_keys",
    metadata,
    sa.Column("key", sa.LargeBinary(24), primary_key=True),
    sqlite_with_rowid=False,
)
"""Seen-event keys (``connector.state.tracking.ordered_key``): 8 bytes of time, 16 of digest.

The time comes first, so new keys land at the right edge of the B-tree (events arrive
in about time order) and pruning is one key range; no other column, no other index.
"""

firsts_pending = sa.Table(
    "firsts_pending",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(100), nullable=False),
    sa.Column("counter", sa.String(50), nullable=False),
    sa.Column("key", sa.LargeBinary(24), nullable=False),
    sa.Column("legacy_hash", sa.String(64), nullable=False, server_default=""),
)
"""First-open / first-click keys of counted events, not yet merged into ``seen_keys``.

Those keys are random within their send (one per subscriber); inserted page by page,
each page's keys would dirty as many B-tree pages as it has keys. Appended here
instead (in order of ``seq``), they are merged once per stream run, sorted, and the
number really new is added to the send's ``unique_*`` counter in the same transaction.
"""

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("table_name", sa.String(64), nullable=False, server_default=""),
    sa.Column("record_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("email", sa.String(320), nullable=False, server_default=""),
    sa.Column("reason", sa.String(50), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    _ts("created_at", nullable=False),
)

change_log = sa.Table(
    "change_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _ts("changed_at", nullable=False),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("record_id", sa.String(64), nullable=False),
    sa.Column("field", sa.String(100), nullable=False),
    sa.Column("old_value", sa.Text),
    sa.Column("new_value", sa.Text),
    sa.Column("source", sa.String(200), nullable=False, server_default=""),
    sa.Column("run_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("direction", sa.String(20), nullable=False, server_default=""),  # to_esp, to_crm, skipped ...
    sa.Column("rule", sa.String(400), nullable=False, server_default=""),  # the [sync.*] line that decided
    sa.Index("ix_change_log_record", "table_name", "record_id"),
    sa.Index("ix_change_log_changed_at", "changed_at"),
)

sync_shadow = sa.Table(  # per record and synced CRM column: the last values both sides agreed on
    "sync_shadow",
    metadata,
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("record_id", sa.String(64), primary_key=True, index=True),
    sa.Column("field", sa.String(100), primary_key=True),
    sa.Column("crm_value", sa.Text, nullable=False, server_default=""),
    sa.Column("esp_value", sa.Text, nullable=False, server_default=""),
    sa.Column("run_id", sa.String(64), nullable=False, server_default=""),
    _ts("updated_at", nullable=False),
)

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step", sa.String(50), nullable=False),
    sa.Column("holder", sa.String(200), nullable=False, server_default=""),
    _ts("started_at", nullable=False),
    _ts("finished_at"),
    sa.Column("outcome", sa.String(20), nullable=False, server_default="running"),
    sa.Column("processed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("details", sa.Text, nullable=False, server_default="{}"),
    sa.Index("ix_step_runs_step_started", "step", "started_at"),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("holder", sa.String(200), primary_key=True),
    sa.Column("label", sa.String(100), nullable=False, server_default="", index=True),
    sa.Column("host", sa.String(100), nullable=False, server_default=""),
    sa.Column("pid", sa.Integer, nullable=False, server_default="0"),
    sa.Column("token", sa.String(32), nullable=False, server_default=""),
    sa.Column("scope", sa.String(200), nullable=False, server_default=""),
    sa.Column("process_start", sa.String(32), nullable=False, server_default=""),
    sa.Column("version", sa.String(50), nullable=False, server_default=""),
    _ts("started_at", nullable=False),
    _ts("heartbeat_at", nullable=False),
    _ts("stopped_at"),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False, server_default=""),
)

kpi_values = sa.Table(
    "kpi_values",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),  # sha256 of (source, customer key, KPI name)
    sa.Column("source", sa.String(50), nullable=False),
    sa.Column("customer_key", sa.String(400), nullable=False),
    sa.Column("kpi", sa.String(100), nullable=False),
    sa.Column("crm_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("value_hash", sa.String(64), nullable=False, server_default=""),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("seen_run", sa.String(64), nullable=False, server_default=""),
    _ts("written_at", nullable=False),
    sa.Index("ix_kpi_values_source", "source", "active"),
)

suppression_entries = sa.Table(  # the statutory suppression list (connector.suppression_list), hashed
    "suppression_entries",
    metadata,
    sa.Column("digest", sa.LargeBinary(16), primary_key=True),  # BLAKE2b of a:<address> / d:<domain>
    sa.Column("kind", sa.String(10), nullable=False),  # address | domain
    sa.Column("generation", sa.Integer, nullable=False),  # the refresh that last read it (meta suppression:generation)
    sqlite_with_rowid=False,  # SQLite: the key is the table (one B-tree, not a table and an index)
)
