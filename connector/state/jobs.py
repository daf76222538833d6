"""Send jobs (one per CRM send request) and their batch files."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.errors import StateError
from connector.state.base import StoreBase, dumps, loads
from connector.state.engine import upsert
from connector.state.lifecycle import BatchStatus
from connector.state.records import BATCH_STATUSES, SEND_JOB_STATUSES, SET_ASIDE, Batch, SendJob
from connector.state.schema import batches, send_jobs


class JobMixin(StoreBase):
    def get_send_job(self, request_id: str, conn: Connection | None = None) -> SendJob | None:
        with self._read(conn) as c:
            row = c.execute(sa.select(send_jobs).where(send_jobs.c.request_id == request_id)).mappings().first()
        return _job(row) if row else None

    def save_send_job(self, job: SendJob, conn: Connection | None = None) -> SendJob:
        """Insert or update ``job``; sets its ``updated_at`` (and ``created_at`` when new)."""
        if job.status not in SEND_JOB_STATUSES:
            raise StateError(f"send job {job.request_id}: unknown status {job.status!r}; one of {SEND_JOB_STATUSES}")
        now = self.now()
        job.updated_at = now
        if job.created_at is None:
            job.created_at = now
        values = {
            "request_id": job.request_id,
            "status": str(job.status),
            "phase_detail": job.phase_detail or "",
            "path": job.path or "",
            "esp_list_id": job.esp_list_id or "",
            "esp_send_key": job.esp_send_key or "",
            "esp_job_id": job.esp_job_id or "",
            "campaign_id": job.campaign_id or "",
            "name": job.name or "",
            "resolved": int(job.resolved),
            "handed_over": int(job.handed_over),
            "skipped": int(job.skipped),
            "skipped_by_reason": dumps(dict(job.skipped_by_reason or {})),
            "error": job.error or "",
            "created_at": job.created_at,
            "updated_at": now,
            "workspace": job.workspace or "",
        }
        with self._write(conn) as c:
            upsert(c, send_jobs, values, ["request_id"], keep_on_update=["created_at"])
        return job

    def delete_send_job(self, request_id: str, conn: Connection | None = None) -> None:
        """Forget a job (and its batches): only for a claim that never took place."""
        with self._write(conn) as c:
            c.execute(sa.delete(batches).where(batches.c.request_id == request_id))
            c.execute(sa.delete(send_jobs).where(send_jobs.c.request_id == request_id))

    def send_jobs(self, statuses: Iterable[str] | None = None, conn: Connection | None = None) -> list[SendJob]:
        query = sa.select(send_jobs).order_by(send_jobs.c.created_at, send_jobs.c.request_id)
        if statuses is not None:
            query = query.where(send_jobs.c.status.in_([str(s) for s in statuses]))
        with self._read(conn) as c:
            return [_job(r) for r in c.execute(query).mappings()]

    def recent_send_jobs(self, limit: int = 10, statuses: Iterable[str] | None = None) -> list[SendJob]:
        """The most recently updated send jobs, newest first."""
        query = sa.select(send_jobs).order_by(send_jobs.c.updated_at.desc(), send_jobs.c.request_id).limit(limit)
        if statuses is not None:
            query = query.where(send_jobs.c.status.in_([str(s) for s in statuses]))
        with self._read() as c:
            return [_job(r) for r in c.execute(query).mappings()]

    def save_batch(self, batch: Batch, conn: Connection | None = None) -> Batch:
        if batch.status not in BATCH_STATUSES:
            raise StateError(
                f"batch {batch.request_id}/{batch.seq}: unknown status {batch.status!r}; one of {BATCH_STATUSES}"
            )
        batch.updated_at = self.now()
        values = {
            "request_id": batch.request_id,
            "seq": int(batch.seq),
            "file_name": batch.file_name or "",
            "rows": int(batch.rows),
            "status": str(batch.status),
            "import_key": batch.import_key or "",
            "rows_ok": int(batch.rows_ok),
            "rows_error": int(batch.rows_error),
            "error": batch.error or "",
            "updated_at": batch.updated_at,
        }
        if batch.member_keys is not None:  # never cleared by a save that did not read them
            values["member_keys"] = batch.member_keys
        with self._write(conn) as c:
            upsert(c, batches, values, ["request_id", "seq"])
        return batch

    def batches(self, request_id: str, conn: Connection | None = None, *, keys: bool = False) -> list[Batch]:
        """The send's batches by seq; ``keys=True`` also reads their ``member_keys`` (160 kB per 5,000 rows)."""
        columns = [c for c in batches.c if keys or c.name != "member_keys"]
        query = sa.select(*columns).where(batches.c.request_id == request_id).order_by(batches.c.seq)
        with self._read(conn) as c:
            return [Batch(**dict(r)) for r in c.execute(query).mappings()]

    def batch_member_keys(self, request_id: str, seq: int, conn: Connection | None = None) -> bytes | None:
        """One batch's ``member_keys`` (read one batch at a time: memory stays flat)."""
        query = sa.select(batches.c.member_keys).where(batches.c.request_id == request_id, batches.c.seq == seq)
        with self._read(conn) as c:
            return c.execute(query).scalar()

    def forget_member_keys(self, request_id: str, conn: Connection | None = None) -> None:
        """Drop the batches' member keys once the send is released (only a takeover needs them)."""
        with self._write(conn) as c:
            c.execute(sa.update(batches).where(batches.c.request_id == request_id).values(member_keys=None))

    def batch_progress(self, request_ids: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """``{request_id: {"total": n, "imported": n, "failed": n}}`` in one query."""
        imported = sa.func.sum(sa.case((batches.c.status == BatchStatus.IMPORTED.value, 1), else_=0))
        failed = sa.func.sum(sa.case((batches.c.status == BatchStatus.FAILED.value, 1), else_=0))
        query = (sa.select(batches.c.request_id, sa.func.count(), imported, failed)
                 .where(batches.c.status.not_in([s.value for s in SET_ASIDE])).group_by(batches.c.request_id))
        if request_ids is not None:
            query = query.where(batches.c.request_id.in_(list(request_ids)))
        with self._read() as c:
            return {
                r[0]: {"total": int(r[1]), "imported": int(r[2] or 0), "failed": int(r[3] or 0)}
                for r in c.execute(query)
            }


def _job(row: Mapping[str, Any]) -> SendJob:
    data = dict(row)
    data["skipped_by_reason"] = loads(data.get("skipped_by_reason"), {})
    return replace(SendJob(request_id=data.pop("request_id")), **data)
