"""The sync step's state: the shadow of agreed values, its checkpoints, the change log read back.

Checkpoints live in ``meta``: ``sync:delta:<table>`` (the CRM change-tracking delta link)
and ``sync:esp:<account>`` (the ESP modified-date watermark, ISO UTC). A caller writes
them with ``conn=`` in the same transaction as the shadow rows they describe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.state.base import StoreBase
from connector.state.engine import dialect_insert, upsert
from connector.state.records import ChangeRow
from connector.state.schema import change_log, sync_shadow

IN_CHUNK = 500
"""Ids per ``IN (...)`` (SQLite allows 999 bound parameters before 3.32, SQL Server 2,100)."""


class SyncMixin(StoreBase):
    def shadows(self, table: str, record_ids: Sequence[str], conn: Connection | None = None
                ) -> dict[str, dict[str, tuple[str, str]]]:
        """record id -> field -> (CRM value, ESP value) for these records of ``table``."""
        found: dict[str, dict[str, tuple[str, str]]] = {}
        with self._read(conn) as c:
            for start in range(0, len(record_ids), IN_CHUNK):
                chunk = list(record_ids[start:start + IN_CHUNK])
                rows = c.execute(sa.select(sync_shadow.c.record_id, sync_shadow.c.field, sync_shadow.c.crm_value,
                                           sync_shadow.c.esp_value)
                                 .where(sync_shadow.c.table_name == table, sync_shadow.c.record_id.in_(chunk)))
                for record_id, name, crm, esp in rows:
                    found.setdefault(record_id, {})[name] = (crm, esp)
        return found

    def shadow_tables(self, record_ids: Sequence[str]) -> dict[str, str]:
        """record id -> the CRM table whose shadow holds it (ids the sync never agreed on are absent)."""
        found: dict[str, str] = {}
        with self._read() as c:
            for start in range(0, len(record_ids), IN_CHUNK):
                chunk = list(record_ids[start:start + IN_CHUNK])
                rows = c.execute(sa.select(sync_shadow.c.record_id, sync_shadow.c.table_name).distinct()
                                 .where(sync_shadow.c.record_id.in_(chunk)))
                found.update({record_id: table for record_id, table in rows})
        return found

    def put_shadows(self, table: str, rows: Iterable[tuple[str, str, str, str]], run_id: str,
                    conn: Connection | None = None) -> int:
        """Upsert (record id, field, CRM value, ESP value) rows of ``table``."""
        now = self.now()
        values = [{"table_name": table, "record_id": record_id, "field": name, "crm_value": crm,
                   "esp_value": esp, "run_id": run_id, "updated_at": now} for record_id, name, crm, esp in rows]
        if not values:
            return 0
        keys = ["table_name", "record_id", "field"]
        with self._write(conn) as c:
            ins = dialect_insert(c, sync_shadow)
            if ins is not None:  # one statement, many rows
                c.execute(ins.on_conflict_do_update(index_elements=keys, set_={
                    col: ins.excluded[col] for col in ("crm_value", "esp_value", "run_id", "updated_at")}), values)
            else:
                for row in values:
                    upsert(c, sync_shadow, row, keys)
        return len(values)

    def drop_shadows(self, table: str, record_ids: Sequence[str], conn: Connection | None = None) -> int:
        with self._write(conn) as c:
            return sum(c.execute(sa.delete(sync_shadow).where(
                sync_shadow.c.table_name == table,
                sync_shadow.c.record_id.in_(list(record_ids[start:start + IN_CHUNK])))).rowcount
                for start in range(0, len(record_ids), IN_CHUNK))

    def shadow_count(self, table: str | None = None) -> int:
        query = sa.select(sa.func.count(sa.distinct(sync_shadow.c.record_id)))
        if table:
            query = query.where(sync_shadow.c.table_name == table)
        with self._read() as c:
            return int(c.execute(query).scalar() or 0)

    def iter_changes_logged(self, *, since: datetime | None = None, record_id: str | None = None,
                            table: str | None = None, page: int = 1000) -> Iterator[ChangeRow]:
        """The change log, oldest first, read page by page (flat in memory)."""
        where: list[Any] = []
        if since is not None:
            where.append(change_log.c.changed_at >= since)
        if record_id:
            where.append(change_log.c.record_id == record_id)
        if table:
            where.append(change_log.c.table_name == table)
        last = 0
        while True:
            query = sa.select(change_log).where(change_log.c.id > last, *where).order_by(change_log.c.id).limit(page)
            with self._read() as c:
                rows = c.execute(query).mappings().all()
            if not rows:
                return
            for r in rows:
                yield change_row(r)
            last = rows[-1]["id"]

    def prune_changes(self, older_than: datetime) -> int:
        with self._write(None) as c:
            return c.execute(sa.delete(change_log).where(change_log.c.changed_at < older_than)).rowcount


def change_row(r: Mapping[str, Any]) -> ChangeRow:
    return ChangeRow(table=r["table_name"], record_id=r["record_id"], field=r["field"], old_value=r["old_value"],
                     new_value=r["new_value"], source=r["source"], run_id=r["run_id"], changed_at=r["changed_at"],
                     direction=r["direction"], rule=r["rule"])
