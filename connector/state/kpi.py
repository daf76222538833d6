"""KPI state: per (source, customer key, KPI name) what CRM last confirmed, and when the source last held it.

A row is keyed by ``kpi_key_hash(source, customer_key, kpi)`` (a fixed-width primary
key: an e-mail key can be 320 characters, more than SQL Server indexes). Its
``value_hash`` changes only after CRM confirmed the write of that value
(``record_kpis_written``), so a crash between the CRM write and the state commit makes
the next run write the same value again - an upsert by the alternate key, never a
second row. ``seen_run`` is set for every row the source held in a run (changed or
not), so after a complete read the rows of earlier runs are the KPIs that left the
source (``vanished_kpis``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.state.base import StoreBase
from connector.state.schema import kpi_values

KPI_CHUNK = 500
"""Keys per ``IN (...)`` (SQL Server takes at most 2,100 parameters a statement)."""


def kpi_key_hash(source: str, customer_key: str, kpi: str) -> str:
    return hashlib.sha256("\x00".join((source, customer_key, kpi)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KpiState:
    """What the state database holds about one (source, customer, KPI)."""

    key_hash: str
    customer_key: str
    kpi: str
    crm_id: str
    value_hash: str
    active: bool
    seen_run: str


@dataclass(frozen=True)
class KpiWritten:
    """A KPI value CRM confirmed (written, or deactivated when ``active`` is False)."""

    key_hash: str
    customer_key: str
    kpi: str
    crm_id: str
    value_hash: str
    active: bool = True


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), KPI_CHUNK):
        yield items[start:start + KPI_CHUNK]


def _state(row: sa.Row) -> KpiState:
    m = row._mapping
    return KpiState(m["key_hash"], m["customer_key"], m["kpi"], m["crm_id"], m["value_hash"],
                    bool(m["active"]), m["seen_run"])


class KpiMixin(StoreBase):
    def known_kpis(self, key_hashes: Sequence[str], conn: Connection | None = None) -> dict[str, KpiState]:
        """The stored state of these keys (absent: never written)."""
        found: dict[str, KpiState] = {}
        with self._read(conn) as c:
            for part in _chunks(list(dict.fromkeys(key_hashes))):
                for row in c.execute(sa.select(kpi_values).where(kpi_values.c.key_hash.in_(part))):
                    found[row.key_hash] = _state(row)
        return found

    def mark_kpis_seen(self, key_hashes: Sequence[str], run_id: str, conn: Connection | None = None) -> None:
        """The source of run ``run_id`` held these keys (their values unchanged or not)."""
        with self._write(conn) as c:
            for part in _chunks(list(key_hashes)):
                c.execute(sa.update(kpi_values).where(kpi_values.c.key_hash.in_(part)).values(seen_run=run_id))

    def record_kpis_written(self, source: str, rows: Iterable[KpiWritten], run_id: str,
                            conn: Connection | None = None) -> int:
        """CRM confirmed these values: store them (replacing what was there), seen by ``run_id``."""
        now = self.now()
        values = [{"key_hash": r.key_hash, "source": source, "customer_key": r.customer_key, "kpi": r.kpi,
                   "crm_id": r.crm_id, "value_hash": r.value_hash, "active": r.active, "seen_run": run_id,
                   "written_at": now} for r in rows]
        with self._write(conn) as c:
            for start in range(0, len(values), KPI_CHUNK):
                part = values[start:start + KPI_CHUNK]
                c.execute(sa.delete(kpi_values).where(kpi_values.c.key_hash.in_([v["key_hash"] for v in part])))
                c.execute(sa.insert(kpi_values), part)
        return len(values)

    def vanished_kpis(self, source: str, run_id: str, *, after: str = "", limit: int = 1000,
                      conn: Connection | None = None) -> list[KpiState]:
        """Active KPIs of ``source`` that run ``run_id`` did not see, in key order after ``after``."""
        query = (sa.select(kpi_values)
                 .where(kpi_values.c.source == source, kpi_values.c.active.is_(True),
                        kpi_values.c.seen_run != run_id, kpi_values.c.key_hash > after)
                 .order_by(kpi_values.c.key_hash).limit(limit))
        with self._read(conn) as c:
            return [_state(row) for row in c.execute(query)]

    def deactivate_kpis(self, key_hashes: Sequence[str], conn: Connection | None = None) -> None:
        """CRM confirmed these KPIs inactive (or gone): a later run that sees them again rewrites them."""
        with self._write(conn) as c:
            for part in _chunks(list(key_hashes)):
                c.execute(sa.update(kpi_values).where(kpi_values.c.key_hash.in_(part))
                          .values(active=False, written_at=self.now()))

    def kpi_counts(self, source: str) -> dict[str, int]:
        """{"active": n, "inactive": m} for ``connector status`` and the summary."""
        query = (sa.select(kpi_values.c.active, sa.func.count()).where(kpi_values.c.source == source)
                 .group_by(kpi_values.c.active))
        with self._read() as c:
            counts = {("active" if active else "inactive"): int(n) for active, n in c.execute(query)}
        return {"active": counts.get("active", 0), "inactive": counts.get("inactive", 0)}
