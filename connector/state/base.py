"""The part of the state store every mixin uses: clock, connections, transactions."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.errors import StateError
from connector.state.engine import READONLY

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


class StoreBase:
    """Connections and transactions; methods take ``conn=`` to join a caller's transaction."""

    engine: Engine
    holder: str
    clock: Clock
    url: str

    def now(self) -> datetime:
        return self.clock()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction; pass the connection as ``conn=`` to group store calls."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StateError(f"state database {self.safe_url}: {_short(exc)}") from exc

    @contextmanager
    def _write(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
            return
        with self.transaction() as own:
            yield own

    @contextmanager
    def _read(self, conn: Connection | None = None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
            return
        try:
            with self.engine.connect() as own:
                own.execution_options(**{READONLY: True})
                yield own
                own.rollback()
        except SQLAlchemyError as exc:
            raise StateError(f"state database {self.safe_url}: {_short(exc)}") from exc

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
