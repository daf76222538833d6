"""What happened: quarantined recipients, the field-level change log, step runs."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import datetime
from itertools import islice
from typing import Any, Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.state.base import StoreBase, dumps, loads
from connector.state.records import ChangeRow, QuarantineRow, StepRun
from connector.state.schema import change_log, quarantine, step_runs
from connector.state.sync import change_row

CHUNK = 1000

OUTCOME_RUNNING = "running"
OUTCOME_OK = "ok"
OUTCOME_FAILED = "failed"
OUTCOME_NOT_AVAILABLE = "not available"
OUTCOME_INTERRUPTED = "interrupted"


def _chunks(rows: Iterable[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def _as_dict(row: Any) -> dict[str, Any]:
    if is_dataclass(row) and not isinstance(row, type):
        return asdict(row)
    return dict(row)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class AuditMixin(StoreBase):
    # -- quarantine ---------------------------------------------------------
    def quarantine(self, rows: Iterable[QuarantineRow | Mapping[str, Any]], conn: Connection | None = None) -> int:
        """Record recipients that were not handed over (streamed, inserted in chunks)."""
        now = self.now()
        count = 0
        with self._write(conn) as c:
            for chunk in _chunks(rows):
                values = []
                for row in chunk:
                    d = _as_dict(row)
                    values.append(
                        {
                            "request_id": d["request_id"],
                            "table_name": d.get("table") or d.get("table_name") or "",
                            "record_id": d.get("record_id") or "",
                            "email": d.get("email") or "",
                            "reason": str(getattr(d["reason"], "value", d["reason"])),
                            "detail": d.get("detail") or "",
                            "created_at": d.get("created_at") or now,
                        }
                    )
                c.execute(sa.insert(quarantine), values)
                count += len(values)
        return count

    def clear_quarantine(self, request_id: str, keep_reasons: Iterable[str] = (), conn: Connection | None = None) -> int:
        """Forget a request's quarantine rows but those with ``keep_reasons`` (a takeover resolves again)."""
        with self._write(conn) as c:
            return c.execute(
                sa.delete(quarantine).where(quarantine.c.request_id == request_id,
                                            quarantine.c.reason.not_in(list(keep_reasons)))
            ).rowcount

    def quarantined(self, request_id: str, limit: int = 100, offset: int = 0) -> list[QuarantineRow]:
        query = (
            sa.select(quarantine)
            .where(quarantine.c.request_id == request_id)
            .order_by(quarantine.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self._read() as c:
            return [
                QuarantineRow(
                    request_id=r["request_id"],
                    table=r["table_name"],
                    record_id=r["record_id"],
                    email=r["email"],
                    reason=r["reason"],
                    detail=r["detail"],
                    created_at=r["created_at"],
                )
                for r in c.execute(query).mappings()
            ]

    def quarantine_counts(self, request_id: str) -> dict[str, int]:
        query = (
            sa.select(quarantine.c.reason, sa.func.count())
            .where(quarantine.c.request_id == request_id)
            .group_by(quarantine.c.reason)
        )
        with self._read() as c:
            return {reason: int(n) for reason, n in c.execute(query)}

    # -- change log ---------------------------------------------------------
    def log_changes(self, rows: Iterable[ChangeRow | Mapping[str, Any]], conn: Connection | None = None) -> int:
        now = self.now()
        count = 0
        with self._write(conn) as c:
            for chunk in _chunks(rows):
                values = []
                for row in chunk:
                    d = _as_dict(row)
                    values.append(
                        {
                            "changed_at": d.get("changed_at") or now,
                            "table_name": d.get("table") or d.get("table_name") or "",
                            "record_id": str(d["record_id"]),
                            "field": d["field"],
                            "old_value": _text(d.get("old_value")),
                            "new_value": _text(d.get("new_value")),
                            "source": d.get("source") or "",
                            "run_id": d.get("run_id") or "",
                            "direction": d.get("direction") or "",
                            "rule": (d.get("rule") or "")[:400],
                        }
                    )
                c.execute(sa.insert(change_log), values)
                count += len(values)
        return count

    def changes(self, table: str, record_id: str, limit: int = 100) -> list[ChangeRow]:
        query = (
            sa.select(change_log)
            .where(change_log.c.table_name == table, change_log.c.record_id == record_id)
            .order_by(change_log.c.id)
            .limit(limit)
        )
        with self._read() as c:
            return [change_row(r) for r in c.execute(query).mappings()]

    # -- step runs ----------------------------------------------------------
    def start_step_run(self, step: str, run_id: str) -> None:
        with self._write(None) as c:
            c.execute(
                sa.insert(step_runs).values(
                    run_id=run_id, step=step, holder=self.holder, started_at=self.now(), outcome=OUTCOME_RUNNING
                )
            )

    def finish_step_run(
        self,
        run_id: str,
        ok: bool,
        processed: int = 0,
        message: str = "",
        details: Mapping[str, Any] | None = None,
        *,
        outcome: str | None = None,
    ) -> None:
        with self._write(None) as c:
            c.execute(
                sa.update(step_runs)
                .where(step_runs.c.run_id == run_id)
                .values(
                    finished_at=self.now(),
                    outcome=outcome or (OUTCOME_OK if ok else OUTCOME_FAILED),
                    processed=int(processed or 0),
                    message=(message or "")[:4000],
                    details=dumps(dict(details or {})),
                )
            )

    def interrupt_step_runs(
        self, message: str = "the service stopped before the run finished", *, holder_prefix: str | None = None
    ) -> int:
        """Mark unfinished runs of this holder (or of every holder starting with
        ``holder_prefix``, e.g. earlier processes on this host) as interrupted."""
        if holder_prefix:
            whose = step_runs.c.holder.startswith(holder_prefix, autoescape=True)
        else:
            whose = step_runs.c.holder == self.holder
        with self._write(None) as c:
            return c.execute(
                sa.update(step_runs)
                .where(whose, step_runs.c.outcome == OUTCOME_RUNNING)
                .values(outcome=OUTCOME_INTERRUPTED, finished_at=self.now(), message=message)
            ).rowcount

    def step_runs_summary(self) -> dict[str, dict[str, Any]]:
        """Per step: ``last`` run, ``last_ok`` and ``last_error`` runs (as ``StepRun``), ``runs`` count."""
        summary: dict[str, dict[str, Any]] = {}
        with self._read() as c:
            steps = list(c.execute(sa.select(step_runs.c.step, sa.func.count()).group_by(step_runs.c.step)))
            for step, count in steps:
                summary[step] = {
                    "runs": int(count),
                    "last": _last(c, step),
                    "last_ok": _last(c, step, step_runs.c.outcome == OUTCOME_OK),
                    "last_error": _last(c, step, step_runs.c.outcome == OUTCOME_FAILED),
                }
        return summary

    def recent_step_runs(self, step: str, limit: int = 20) -> list[StepRun]:
        query = (
            sa.select(step_runs)
            .where(step_runs.c.step == step)
            .order_by(step_runs.c.started_at.desc(), step_runs.c.run_id.desc())
            .limit(limit)
        )
        with self._read() as c:
            return [_run(r) for r in c.execute(query).mappings()]

    def prune_step_runs(self, older_than: datetime) -> int:
        with self._write(None) as c:
            return c.execute(
                sa.delete(step_runs).where(step_runs.c.started_at < older_than, step_runs.c.outcome != OUTCOME_RUNNING)
            ).rowcount


def _last(conn: Connection, step: str, *where: Any) -> StepRun | None:
    query = (
        sa.select(step_runs)
        .where(step_runs.c.step == step, *where)
        .order_by(step_runs.c.started_at.desc(), step_runs.c.run_id.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return _run(row) if row else None


def _run(row: Mapping[str, Any]) -> StepRun:
    data = dict(row)
    data["details"] = loads(data.get("details"), {})
    return StepRun(**data)
