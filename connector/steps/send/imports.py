"""Await-imports phase of a send that goes by files (``importing``), driven by the imports step.

Ask the ESP for the status of each batch's import; a completed import adds its good
rows to the handed-over count and its rejected rows to the skipped count (reason
``import_row_error``, details to the quarantine table), in one state transaction per
batch. When the last batch is in, the job moves to ``starting`` and the release phase
follows (``release``: find by key, start once). An import that errors or hangs past
``[imports] timeout_minutes`` fails the send with a reason naming the file.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from connector.errors import PeerError
from connector.models import ImportStatus, SkipReason
from connector.state.lifecycle import BatchStatus, JobStatus
from connector.state.store import Batch, QuarantineRow, SendJob
from connector.steps import StepContext
from connector.steps.send.ledger import add_skips, current_batches
from connector.steps.send.release import fail
from connector.steps.send.start_guard import start_import_once

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps.send.attempt import SendAttempt

log = structlog.get_logger(__name__)

MAX_WAITING_POLLED = 20
"""Unfinished imports asked about per poll of one send; later files wait for the next poll."""


def await_imports(attempt: SendAttempt) -> bool:
    """``importing``: poll the batches' imports once; True when every one is in (now ``starting``)."""
    _poll(attempt.ctx, attempt.job)
    return attempt.job.status is JobStatus.STARTING


def _poll(ctx: StepContext, job: SendJob) -> None:
    esp = ctx.esp()
    current = current_batches(ctx.state, job.request_id)
    waiting = 0
    for batch in current:
        if batch.status is BatchStatus.STARTING and not _confirm_start(ctx, job, batch):
            waiting += 1
            continue
        if batch.status is not BatchStatus.IMPORTING:
            continue
        if waiting >= MAX_WAITING_POLLED:
            waiting += 1
            continue  # the ESP imports in order: no need to ask about every later file each time
        status = esp.import_status(batch.import_key)
        if not status.finished:
            if _timed_out(ctx, batch):
                _fail_batch(ctx, job, batch, f"the ESP import {batch.import_key} of batch file {batch.file_name} "
                            f"has not finished after {ctx.config.imports.timeout_minutes:g} minutes (state "
                            f"{status.state!r}); check it in Marketing Cloud's import activity.")
                return
            waiting += 1
            continue
        if status.state == "error":
            _fail_batch(ctx, job, batch, f"the ESP could not import batch file {batch.file_name} (import "
                        f"{batch.import_key}): {status.message or 'no message'}. Fix the cause at the ESP.")
            return
        _record(ctx, job, batch, status)
    if waiting:
        job.phase_detail = f"{waiting} of {len(current)} batch imports still running at the ESP"
        ctx.state.save_send_job(job)
        return
    if all(b.status is BatchStatus.IMPORTED for b in current):
        job.move(JobStatus.STARTING)
        ctx.state.save_send_job(job)


def _confirm_start(ctx: StepContext, job: SendJob, batch: Batch) -> bool:
    """A batch whose import start was requested but not seen (a crash after the Perform):
    look again, start it only past the visibility horizon (``start_guard``)."""
    esp = ctx.esp()
    return start_import_once(ctx.state, ctx.config, esp, batch,
                             lambda: esp.start_import(batch.import_key, batch.file_name, job.esp_list_id))


def _timed_out(ctx: StepContext, batch: Batch) -> bool:
    if batch.updated_at is None:
        return False
    return ctx.state.now() - batch.updated_at > timedelta(minutes=ctx.config.imports.timeout_minutes)


def _record(ctx: StepContext, job: SendJob, batch: Batch, status: ImportStatus) -> None:
    rows_ok = min(status.rows_ok, batch.rows)
    errors = batch.rows - rows_ok
    batch.rows_ok, batch.rows_error = rows_ok, errors
    batch.move(BatchStatus.IMPORTED)
    job.handed_over += rows_ok
    add_skips(job, SkipReason.IMPORT_ROW_ERROR, errors)
    with ctx.state.transaction() as conn:
        ctx.state.quarantine(_error_rows(job, batch, status, errors), conn=conn)
        ctx.state.save_batch(batch, conn=conn)
        ctx.state.save_send_job(job, conn=conn)
    log.info("import_completed", send=job.request_id, batch=batch.seq, rows=batch.rows, rows_ok=rows_ok,
             rows_error=errors, handed_over=job.handed_over)
    try:
        ctx.file_drop().remove(batch.file_name)
    except PeerError as exc:  # the file is in; a left-over copy only costs space
        log.warning("batch_file_not_removed", send=job.request_id, batch=batch.seq, error=str(exc))


def _error_rows(job: SendJob, batch: Batch, status: ImportStatus, errors: int):
    reason = SkipReason.IMPORT_ROW_ERROR.value
    listed = 0
    for err in status.errors[:errors]:
        listed += 1
        record = err.subscriber_key if "@" not in err.subscriber_key else ""
        yield QuarantineRow(job.request_id, "", record, "", reason,
                            f"batch file {batch.file_name} row {err.row}: {err.message}")
    if errors > listed:
        yield QuarantineRow(job.request_id, "", "", "", reason,
                            f"{errors - listed} more row(s) of batch file {batch.file_name} were not imported; "
                            f"see the results of import {batch.import_key} at the ESP")


def _fail_batch(ctx: StepContext, job: SendJob, batch: Batch, reason: str) -> None:
    batch.move(BatchStatus.FAILED)
    batch.error = reason
    ctx.state.save_batch(batch)
    fail(ctx, job, reason)
