"""The staging table's shape: one row per tracking event, unique on its natural key.

The natural key is (job_id, subscriber_key, event_type, event_time_utc, url). URLs can be
thousands of characters long, longer than an index key may be on SQL Server (1,700 bytes)
or PostgreSQL (~2,700 bytes), so the unique constraint takes ``url_key`` (the first 32
hex digits of the URL's SHA-256, blank without a URL) in the URL's place:
(job_id, event_type, event_time_utc, subscriber_key, url_key). In that column order,
new rows land at the end of the index (events arrive roughly in time order per send and
type), so inserts stay cheap as the table grows to millions of rows.

The migration in ``migrations/versions`` creates exactly this table; a test compares the
migrated database with ``staging_table()`` so the two cannot drift.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from connector.models import TrackingEvent

# Column name -> (type factory, nullable). Lengths follow Marketing Cloud's own limits.
UTC_DATETIME = sa.DateTime().with_variant(mssql.DATETIME2(precision=3), "mssql")
TEXT = sa.UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")  # NVARCHAR(max), not NTEXT

COLUMNS: tuple[tuple[str, sa.types.TypeEngine, bool], ...] = (
    ("job_id", sa.Unicode(50), False),
    ("subscriber_key", sa.Unicode(254), False),
    ("crm_record_id", sa.Unicode(36), True),
    ("crm_table", sa.Unicode(20), True),
    ("event_type", sa.Unicode(10), False),
    ("event_time_utc", UTC_DATETIME, False),
    ("email", sa.Unicode(254), True),
    ("list_id", sa.Unicode(50), True),
    ("batch_id", sa.Unicode(50), True),
    ("url", TEXT, True),
    ("url_key", sa.String(32), False),
    ("url_id", sa.Unicode(50), True),
    ("bounce_category", sa.Unicode(100), True),
    ("bounce_type", sa.Unicode(100), True),
    ("smtp_code", sa.Unicode(20), True),
    ("smtp_reason", TEXT, True),
    ("reason", TEXT, True),
    ("loaded_at", UTC_DATETIME, False),
)

ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NATURAL_KEY = ("job_id", "event_type", "event_time_utc", "subscriber_key", "url_key")


def staging_table(name: str, schema: str | None = None, metadata: sa.MetaData | None = None) -> sa.Table:
    """The staging table as SQLAlchemy sees it (for inserts and the drift test)."""
    md = metadata if metadata is not None else sa.MetaData()
    return sa.Table(
        name,
        md,
        sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        *(sa.Column(col, typ, nullable=nullable) for col, typ, nullable in COLUMNS),
        sa.UniqueConstraint(*NATURAL_KEY, name=f"uq_{name}_natural_key"),
        sa.Index(f"ix_{name}_event_time_utc", "event_time_utc"),
        schema=schema or None,
    )


def utc_naive(value: datetime) -> datetime:
    """Aware -> naive UTC (the stored form); a naive value is taken as UTC already."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def url_key(url: str) -> str:
    """The URL's stand-in in the unique key (blank when there is no URL)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32] if url else ""


def natural_key(event: TrackingEvent) -> tuple[str, str, str, str, str]:
    """(job, type, UTC time, subscriber, url key): equal for the same event, whatever the offset."""
    when = utc_naive(event.event_time).isoformat(timespec="microseconds")
    return (event.job_id, event.event_type.value, when, event.subscriber_key, url_key(event.url))
