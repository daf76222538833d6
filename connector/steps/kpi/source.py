"""The external SQL source of the KPI job: one query, streamed slice by slice.

Any SQLAlchemy URL (``postgresql://`` means psycopg 3, ``mssql+pyodbc://`` SQL Server
where an ODBC driver is installed, ``sqlite:///`` for a file). The query runs in one
read-only transaction (PostgreSQL: ``SET TRANSACTION READ ONLY``) on a server-side
cursor (``stream_results`` / ``yield_per``): the rows arrive ``slice_rows`` at a time
and only one slice is in memory, however many the query returns. Database errors are
translated here, with the URL's password hidden: a connection problem is transient
(the next run retries), a refused query is permanent (fix ``[kpi] query``).
"""

from __future__ import annotations

from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from connector.errors import PermanentPeerError, TransientPeerError
from connector.secrets import hide_url_passwords
from connector.state.engine import normalize_url
from connector.steps.kpi.rows import missing_columns

PEER = "kpi source"


def _check_columns(columns: list[str]) -> None:
    missing = missing_columns(columns)
    if missing:
        raise PermanentPeerError(
            f"the [kpi] query returns no column {', '.join(missing)} (it returns {', '.join(columns) or 'no columns'}):"
            " alias the customer's match value AS customer_key, the KPI's name AS kpi and its value AS value "
            "(optionally the period AS period)", PEER, "read KPIs")


class KpiSource:
    """Runs ``[kpi] query`` against ``[kpi] source_url``."""

    PEER = PEER
    LABELS = ("KPI source", "kpi", "read KPIs")  # in errors: what, its section, the operation

    def __init__(self, url: str, query: str, *, timeout: float = 30.0, password: str = "") -> None:
        parsed = sa.engine.make_url(normalize_url(url))
        if password:
            parsed = parsed.set(password=password)
        self.dialect = parsed.get_backend_name()
        self.where = parsed.render_as_string(hide_password=True)
        self.query = query
        self._secret = parsed.password or ""
        connect_args: dict[str, Any] = {}
        if self.dialect == "postgresql":
            connect_args["connect_timeout"] = max(1, int(timeout))
        elif self.dialect in ("mssql", "sqlite"):
            connect_args["timeout"] = max(1, int(timeout))
        self.engine = sa.create_engine(parsed, pool_pre_ping=True, poolclass=sa.pool.NullPool,
                                       connect_args=connect_args)

    def slices(self, slice_rows: int) -> Iterator[list[dict[str, Any]]]:
        """The query's rows (column names in lower case), ``slice_rows`` at a time."""
        for columns, part in self.stream(slice_rows):
            if not part:  # the first, before any row: the columns are checked even when no row comes
                _check_columns(columns)
                continue
            yield [dict(zip(columns, row)) for row in part]

    def stream(self, slice_rows: int) -> Iterator[tuple[list[str], list[Any]]]:
        """(column names in lower case, rows) of the query, ``slice_rows`` rows at a time; first
        (columns, []) before any row."""
        try:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn = conn.execution_options(postgresql_readonly=True)
                result = conn.execution_options(stream_results=True, yield_per=slice_rows).execute(
                    sa.text(self.query))
                try:  # closed also when the caller stops early: a server-side cursor holds a portal
                    columns = [str(c).lower() for c in result.keys()]
                    yield columns, []
                    for part in result.partitions(slice_rows):
                        yield columns, list(part)
                finally:
                    result.close()
        except SQLAlchemyError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: SQLAlchemyError) -> Exception:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        detail = hide_url_passwords(text[0] if text else type(exc).__name__)[:300]
        if self._secret:
            detail = detail.replace(self._secret, "***")
        what, section, operation = self.LABELS
        if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
            return TransientPeerError(f"{what} {self.where} unavailable: {detail}; the next run retries",
                                      peer=self.PEER, operation=operation)
        return PermanentPeerError(f"{what} {self.where} refused the [{section}] query: {detail}; fix [{section}] "
                                  "query (or the login's rights)", peer=self.PEER, operation=operation)

    def close(self) -> None:
        self.engine.dispose()
