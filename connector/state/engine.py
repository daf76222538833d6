"""Engines for the state database: URL normalisation, SQLite pragmas, upserts.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write
transactions start with ``BEGIN IMMEDIATE`` so two threads never deadlock while
upgrading a read lock to a write lock; read-only connections (execution option
``cesp_readonly``) use a plain deferred ``BEGIN`` and never wait for writers.
"""

from __future__ import annotations

import sqlite3
import time

from pathlib import Path
from typing import Any, Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from connector.errors import StateError
from connector.private import private_sqlite_file

READONLY = "cesp_readonly"

POOL_SIZE = 5
POOL_OVERFLOW = 40


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (the only driver we ship)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def create_state_engine(url: str, *, timeout_seconds: float = 30.0) -> Engine:
    url = normalize_url(url)
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, timeout_seconds)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, int(timeout_seconds))
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **_pool_args(timeout_seconds))


def _pool_args(timeout_seconds: float) -> dict[str, Any]:
    """Room for every pool thread of every step; idle extra connections are closed."""
    return {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW, "pool_timeout": timeout_seconds}


def _sqlite_engine(parsed: sa.engine.URL, timeout_seconds: float) -> Engine:
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            private_sqlite_file(Path(database))  # owner-only before SQLite opens it: -wal/-shm follow
        except OSError as exc:
            raise StateError(f"cannot create the SQLite state database {database}: {exc.strerror or exc}; "
                             "check [state] url and [service] data_dir") from exc
    connect_args = {"timeout": timeout_seconds, "check_same_thread": False}
    pool = _pool_args(timeout_seconds) if database not in ("", ":memory:") else {}
    engine = sa.create_engine(parsed, connect_args=connect_args, **pool)
    busy_ms = int(timeout_seconds * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            enable_wal(cursor, timeout_seconds)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get(READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def enable_wal(cursor: Any, timeout_seconds: float) -> None:
    """WAL is a property of the file: set once, by the first connection. Switching to it needs a
    moment alone with the file, and SQLite answers "database is locked" at once (no busy wait)
    while another process is creating or migrating it: try again until the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT with ``on_conflict_*`` support on PostgreSQL and SQLite, else ``None``."""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return None
    return insert(table)


def upsert(
    conn: Connection,
    table: sa.Table,
    values: Mapping[str, Any],
    keys: Iterable[str],
    *,
    increment: Iterable[str] = (),
    keep_on_update: Iterable[str] = (),
) -> None:
    """Insert a row, or update it when its key exists.

    ``increment`` columns are added to on conflict rather than replaced;
    ``keep_on_update`` columns keep their stored value (e.g. ``created_at``).
    """
    keys = list(keys)
    increment = set(increment)
    keep = set(keep_on_update) | set(keys)
    ins = dialect_insert(conn, table)
    if ins is not None:
        stmt = ins.values(**values)
        updates = {
            col: (table.c[col] + stmt.excluded[col]) if col in increment else stmt.excluded[col]
            for col in values
            if col not in keep
        }
        if updates:
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=updates)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        conn.execute(stmt)
        return
    where = sa.and_(*(table.c[k] == values[k] for k in keys))
    updates = {
        col: (table.c[col] + values[col]) if col in increment else values[col] for col in values if col not in keep
    }
    if updates and conn.execute(sa.update(table).where(where).values(**updates)).rowcount:
        return
    if conn.execute(sa.select(sa.literal(1)).select_from(table).where(where)).first() is None:
        conn.execute(sa.insert(table).values(**values))
