"""Alembic migrations of the state database, applied programmatically.

``upgrade(engine)`` runs at every start (``StateStore.migrate()``) and from
``connector migrate``. On PostgreSQL a transaction-scoped advisory lock makes
two instances starting at once take turns; DDL is transactional there and on
SQLite, so a failed upgrade leaves the previous schema intact.

Developers: ``alembic -c connector/state/alembic.ini revision -m "..."`` writes a
new file in ``versions/`` (set ``sqlalchemy.url`` or ``CONNECTOR_STATE_URL``).
"""

from __future__ import annotations

import time

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.errors import StateError
from connector.state.base import _short

HERE = Path(__file__).resolve().parent
ADVISORY_LOCK_ID = 0x63657370  # "cesp"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            conn.execution_options(cesp_readonly=True)  # a plain BEGIN on SQLite, no write lock
            rev = MigrationContext.configure(conn).get_current_revision()
            conn.rollback()
            return rev
    except SQLAlchemyError as exc:
        safe = engine.url.render_as_string(hide_password=True)
        raise StateError(f"state database {safe}: {_short(exc)}") from exc


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    cfg = alembic_config()
    safe = engine.url.render_as_string(hide_password=True)
    attempts = 5 if engine.dialect.name == "sqlite" else 1
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("select pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            break
        except SQLAlchemyError as exc:
            # SQLite: another process creating the same file can make this one see "locked" at
            # once; the migration is idempotent (Alembic reads the version first), so go again
            if attempt < attempts and "database is locked" in str(exc):
                time.sleep(0.2 * attempt)
                continue
            raise StateError(
                f"migrating the state database {safe} failed: {_short(exc)}; "
                "check that the database server is up and that [state] url and its user's rights are right"
            ) from exc
    return current_revision(engine)
