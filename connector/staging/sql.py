"""The SQL staging table writer: bulk inserts that ignore events already there.

One row per tracking event, in its own database (``[staging] url``; SQLite at
``<data_dir>/staging.db`` by default, PostgreSQL, or SQL Server through pyodbc). The
table is created by an Alembic migration with its own version table
(``cesp_staging_version``), run once per process before the first write, or by
``migrate_staging(config)`` (``connector migrate``).

Conflict-ignoring bulk insert per dialect:

- SQLite: ``INSERT ... ON CONFLICT (<natural key>) DO NOTHING``, a page in one executemany;
- PostgreSQL: the same, batched by SQLAlchemy's insertmanyvalues;
- SQL Server: ``INSERT INTO t SELECT ... FROM (VALUES ...) AS src WHERE NOT EXISTS
  (SELECT 1 FROM t WITH (UPDLOCK, HOLDLOCK) WHERE <natural key columns equal>)``, in
  chunks under the 2,100-parameter limit. The lock hints keep two writers from racing
  on the same key.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config as AlembicConfig

from connector.errors import PermanentPeerError, TransientPeerError
from connector.models import RecordRef, TrackingEvent
from connector.private import private_sqlite_file
from connector.staging.base import StagingStore
from connector.staging.schema import (
    COLUMNS,
    NATURAL_KEY,
    staging_table,
    url_key,
    utc_naive,
)
from connector.state.engine import enable_wal

if TYPE_CHECKING:  # pragma: no cover
    from connector.config import Config

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
MSSQL_MAX_PARAMS = 2000  # SQL Server allows 2,100 parameters per statement; keep a margin

_migrated: set[tuple[str, str, str]] = set()
_migrate_lock = threading.Lock()


def alembic_config(url: str, table: str, schema: str = "") -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["table"] = table
    cfg.attributes["schema"] = schema
    return cfg


def migrate_engine(engine: sa.Engine, table: str, schema: str = "") -> None:
    """Bring the staging database to the newest revision (idempotent)."""
    cfg = alembic_config("", table, schema)  # online: the connection is passed, not the URL
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def migrate_staging(config: Config) -> None:
    """Create or upgrade the staging table named in ``[staging]`` (``connector migrate``)."""
    store = SqlStagingStore.from_config(config)
    store.close()


def staging_ddl(url: str, table: str, schema: str = "") -> str:
    """The migration as SQL text, for a DBA who creates the table by hand (offline mode)."""
    import contextlib
    import io

    buf = io.StringIO()
    cfg = alembic_config(url, table, schema)
    cfg.output_buffer = buf
    with contextlib.redirect_stdout(buf):
        command.upgrade(cfg, "head", sql=True)
    return buf.getvalue()


NAMES = [name for name, _type, _nullable in COLUMNS]  # insert order (every column but id)
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's own SQLite DATETIME text format
KEY_POSITIONS = tuple(NAMES.index(n) for n in NATURAL_KEY)


def _values(event: TrackingEvent, ref: str | RecordRef | None, loaded_at: Any, sqlite: bool) -> tuple:
    """One staging row, in ``NAMES`` order; datetimes as text for SQLite's driver."""
    if isinstance(ref, RecordRef):
        record_id, table = ref.id, ref.table.value
    else:
        record_id, table = ref, None
    when = event.event_time
    if when.tzinfo is not UTC:
        when = utc_naive(when).replace(tzinfo=UTC)
    return (
        event.job_id, event.subscriber_key, record_id, table, event.event_type.value,
        _sqlite_text(when) if sqlite else when.replace(tzinfo=None),
        event.email or None, event.list_id or None, event.batch_id or None, event.url or None,
        url_key(event.url), event.url_id or None, event.bounce_category or None, event.bounce_type or None, event.smtp_code or None,
        event.smtp_reason or None, event.reason or None, loaded_at,
    )


def _sqlite_text(when: datetime) -> str:
    """``when`` (UTC) as ``SQLITE_DATETIME`` text; isoformat is three times faster than strftime."""
    return when.replace(tzinfo=None).isoformat(" ", "microseconds")


def mssql_insert(table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> sa.Insert:
    """INSERT ... SELECT FROM (VALUES ...) WHERE NOT EXISTS, for SQL Server."""
    names = [c.name for c in table.columns if c.name != "id"]
    src = sa.values(*(sa.column(n, table.c[n].type) for n in names), name="src").data(
        [tuple(r[n] for n in names) for r in rows]
    )
    existing = (
        sa.select(sa.literal_column("1"))
        .select_from(table)
        .where(*(table.c[n] == src.c[n] for n in NATURAL_KEY))
        .with_hint(table, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
    )
    select = sa.select(*(src.c[n] for n in names)).where(~sa.exists(existing))
    return sa.insert(table).from_select(names, select)


def conflict_ignoring_insert(table: sa.Table, dialect: str) -> sa.Insert:
    """The executemany form for SQLite and PostgreSQL (rows passed as parameters)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise PermanentPeerError(
            f"staging database dialect {dialect!r} is not supported; use SQLite, PostgreSQL or SQL Server "
            "([staging] url)",
            peer="staging",
            operation="write_events",
        )
    stmt = insert(table).on_conflict_do_nothing(index_elements=list(NATURAL_KEY))
    # PostgreSQL goes through insertmanyvalues, whose rowcount is not the inserted rows: count RETURNING
    return stmt.returning(table.c.id) if dialect == "postgresql" else stmt


class SqlStagingStore(StagingStore):
    """Writes tracking events to the staging table, each at most once."""

    def __init__(self, url: str, table: str, schema: str = "", *, timeout: float = 30.0) -> None:
        self.url = sa.engine.make_url(url)
        self.dialect = self.url.get_backend_name()
        self.schema = schema
        self.table_name = table
        self.table = staging_table(table, schema or None)
        self._insert_stmt: Any = None
        connect_args: dict[str, Any] = {}
        if self.dialect == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                try:  # owner-only before SQLite opens it (its -wal/-shm follow)
                    private_sqlite_file(Path(self.url.database))
                except OSError:
                    pass  # connecting reports it, as a peer error naming the database
            connect_args["timeout"] = timeout
        elif self.dialect == "postgresql":
            connect_args["connect_timeout"] = max(1, int(timeout))
        elif self.dialect == "mssql":
            connect_args["timeout"] = max(1, int(timeout))
        kwargs: dict[str, Any] = {"pool_pre_ping": True, "connect_args": connect_args}
        if self.dialect == "mssql":
            kwargs["fast_executemany"] = True
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", partial(_sqlite_pragmas, timeout=timeout))
        if self.dialect == "postgresql":
            self._insert_stmt = conflict_ignoring_insert(self.table, self.dialect)

    @classmethod
    def from_config(cls, config: Config) -> SqlStagingStore:
        store = cls(
            config.staging_url(),
            config.staging.table,
            config.staging.schema_name,
            timeout=config.timeouts.sql_seconds,
        )
        store.migrate()
        return store

    def _where(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Run the migration once per process and database (safe to call from every thread)."""
        key = (self._where(), self.schema, self.table_name)
        with _migrate_lock:
            if key in _migrated:
                return
            try:
                migrate_engine(self.engine, self.table_name, self.schema)
            except sa.exc.SQLAlchemyError as exc:
                raise _translate(exc, self._where(), "migrate") from exc
            _migrated.add(key)
            log.info("staging_migrated", database=self._where(), table=self.table_name)

    def write_events(
        self, events: Sequence[TrackingEvent], crm_records: Mapping[str, str | RecordRef] | None = None
    ) -> int:
        """Bulk-insert ``events``; events whose natural key is stored already are ignored."""
        refs = crm_records or {}
        sqlite = self.dialect == "sqlite"
        loaded = utc_naive(datetime.now(UTC))
        loaded_at: Any = loaded.strftime(SQLITE_DATETIME) if sqlite else loaded
        rows: dict[tuple, tuple] = {}
        natural = operator.itemgetter(*KEY_POSITIONS)
        for event in events:  # also drops duplicates inside one call
            row = _values(event, refs.get(event.subscriber_key), loaded_at, sqlite)
            rows.setdefault(natural(row), row)
        if not rows:
            return 0
        try:
            with self.engine.begin() as conn:
                return self._insert(conn, list(rows.values()))
        except sa.exc.SQLAlchemyError as exc:
            raise _translate(exc, self._where(), "write_events") from exc

    def _insert(self, conn: sa.Connection, rows: list[tuple]) -> int:
        if self.dialect == "sqlite":
            # plain executemany on the driver: a page in one call; sqlite3 sums the rows really inserted
            return max(0, conn.exec_driver_sql(self._sqlite_insert_sql(), rows).rowcount)
        dicts = [dict(zip(NAMES, row)) for row in rows]
        if self.dialect == "mssql":
            per_chunk = max(1, MSSQL_MAX_PARAMS // len(NAMES))
            inserted = 0
            for start in range(0, len(dicts), per_chunk):
                inserted += conn.execute(mssql_insert(self.table, dicts[start : start + per_chunk])).rowcount
            return inserted
        return len(conn.execute(self._insert_stmt, dicts).all())

    def _sqlite_insert_sql(self) -> str:
        target = f'"{self.schema}"."{self.table_name}"' if self.schema else f'"{self.table_name}"'
        return (
            f"INSERT INTO {target} ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))}) "
            f"ON CONFLICT ({', '.join(NATURAL_KEY)}) DO NOTHING"
        )

    def count(self) -> int:
        """Rows in the staging table (tests, bench, status)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one()

    def rows(self, where: Iterable[sa.ColumnElement[bool]] = ()) -> list[dict[str, Any]]:
        """Rows as dicts, oldest first (tests and inspection; not for big tables)."""
        query = sa.select(self.table).where(*where).order_by(self.table.c.event_time_utc, self.table.c.id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *, timeout: float) -> None:
    cur = dbapi_conn.cursor()
    try:
        enable_wal(cur, timeout)  # retries while another process creates or migrates the file
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def _translate(exc: sa.exc.SQLAlchemyError, where: str, operation: str) -> Exception:
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return TransientPeerError(
            f"staging database {where} unavailable during {operation}: {text}; the next run retries",
            peer="staging",
            operation=operation,
        )
    return PermanentPeerError(
        f"staging database {where} refused {operation}: {text}; check [staging] url, table and schema_name "
        "and the login's rights",
        peer="staging",
        operation=operation,
    )
