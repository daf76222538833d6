"""Hand-over and release phases of a send.

* SOAP path: upsert the spooled subscribers in chunks onto the send's List,
  checkpointing the batch's progress, the counts and the rejected rows in one
  state transaction per chunk (a re-done chunk is a harmless re-upsert).
* File path: upload each batch file, start its ImportDefinition (idempotent on the
  key), and leave the polling to the imports step.
* Release: look the send up by its key first, start it only when absent, record the
  job id (and tracking) in state, then write Sent, the job id and counts to CRM.
"""

from __future__ import annotations

import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import structlog

from connector.batchfiles import import_key, read_batch
from connector.crashpoints import crashpoint
from connector.models import SendRequest, SendRequestUpdate, SendStatus, SkipReason
from connector.state.lifecycle import BatchStatus, JobStatus
from connector.state.records import BATCH_SUPERSEDED
from connector.state.store import Batch, QuarantineRow, SendJob
from connector.steps.send.resolve import Interrupted, batches_folder, chunked
from connector.steps.send.turns import end_of_turn
from connector.steps.send.start_guard import start_import_once, start_send_once

if TYPE_CHECKING:  # pragma: no cover
    from connector.config import Config
    from connector.esp.base import EspClient
    from connector.state.store import StateStore
    from connector.steps import StepContext
    from connector.transfer.base import FileDrop

log = structlog.get_logger(__name__)


def list_key(request_id: str) -> str:
    return f"cesp-list-{request_id}"


def send_key(request_id: str) -> str:
    return f"cesp-send-{request_id}"


def work_folder(config: Config, request_id: str) -> Path:
    return Path(config.service.data_dir) / "sends" / request_id


SUPERSEDED = BATCH_SUPERSEDED

TO_HAND_OVER = (BatchStatus.WRITTEN, BatchStatus.UPLOADED, BatchStatus.STARTING)
"""Batches of the file path not yet at the ESP (a ``starting`` one: the start guard decides)."""

HANDOVER_WORKERS = 2
"""Batch files uploaded (and their imports started) at once while resolving goes on."""


def current_batches(state: StateStore, request_id: str) -> list[Batch]:
    """The batches of this attempt (a retried request keeps its earlier batches, marked superseded;
    a takeover sets aside the batches that were only on the other instance's disk)."""
    return [b for b in state.batches(request_id) if not b.set_aside]


def add_skips(job: SendJob, reason: SkipReason, count: int) -> None:
    if count:
        job.skipped += count
        job.skipped_by_reason[reason.value] = job.skipped_by_reason.get(reason.value, 0) + count


def ensure_list(ctx: StepContext, job: SendJob) -> str:
    if not job.esp_list_id:
        job.esp_list_id = ctx.esp().ensure_list(list_key(job.request_id), job.name or job.request_id)
        ctx.state.save_send_job(job)
    return job.esp_list_id


def hand_over_soap(ctx: StepContext, job: SendJob, work: Path, keep_alive: Callable[..., None],
                   progress: Callable[[str], None] | None = None) -> None:
    esp = ctx.esp()
    list_id = ensure_list(ctx, job)
    size = ctx.config.sends.soap_chunk_size
    for batch in current_batches(ctx.state, job.request_id):
        if batch.status is BatchStatus.IMPORTED:
            continue
        path = batches_folder(work) / batch.file_name
        done = batch.rows_ok + batch.rows_error
        for chunk in chunked(read_batch(path, skip_rows=done), size):
            results = esp.upsert_subscribers(chunk, list_id)
            by_key = {r.key: r for r in results}
            rejected = [s for s in chunk if not by_key.get(s.subscriber_key) or not by_key[s.subscriber_key].ok]
            batch.rows_ok += len(chunk) - len(rejected)
            batch.rows_error += len(rejected)
            batch.move(BatchStatus.IMPORTED if batch.rows_ok + batch.rows_error >= batch.rows else BatchStatus.IMPORTING)
            job.handed_over += len(chunk) - len(rejected)
            add_skips(job, SkipReason.ESP_REJECTED, len(rejected))
            job.phase_detail = f"upserting: {job.handed_over} of {job.resolved - skipped_before_handover(job)} handed over"
            with ctx.state.transaction() as conn:
                keep_alive(conn)  # in the transaction: a holder taken over meanwhile counts nothing
                ctx.state.quarantine(
                    (_rejected_row(job, s, by_key.get(s.subscriber_key)) for s in rejected), conn=conn
                )
                ctx.state.save_batch(batch, conn=conn)
                ctx.state.save_send_job(job, conn=conn)
            crashpoint("after_soap_chunk")
            if progress is not None:
                progress("handing_over")
            if ctx.stopping.is_set():
                raise Interrupted()
            end_of_turn()  # committed: past its turn, the request pauses here
        log.info("batch_upserted", send=job.request_id, batch=batch.seq, rows=batch.rows,
                 rows_ok=batch.rows_ok, rows_error=batch.rows_error, handed_over=job.handed_over)
        if batch.status is not BatchStatus.IMPORTED:  # an empty remainder: the file was fully done before
            batch.move(BatchStatus.IMPORTED)
            ctx.state.save_batch(batch)


HANDOVER_SKIPS = (SkipReason.ESP_REJECTED.value, SkipReason.IMPORT_ROW_ERROR.value)
"""Skips counted while handing over (the rest were decided while resolving)."""


def skipped_before_handover(job: SendJob) -> int:
    return job.skipped - sum(job.skipped_by_reason.get(reason, 0) for reason in HANDOVER_SKIPS)


def _rejected_row(job, sub, result) -> QuarantineRow:
    message = result.message if result is not None else "no result from the ESP for this subscriber"
    table = sub.ref.table.value if sub.ref else ""
    record_id = sub.ref.id if sub.ref else (sub.subscriber_key if "@" not in sub.subscriber_key else "")
    return QuarantineRow(job.request_id, table, record_id, sub.email, SkipReason.ESP_REJECTED.value,
                         f"the ESP refused subscriber {sub.subscriber_key}: {message}")


def hand_over_files(ctx: StepContext, job: SendJob, work: Path, keep_alive: Callable[[], None],
                    progress: Callable[[str], None] | None = None) -> None:
    list_id = ensure_list(ctx, job)
    hand_over_batches(ctx.state, ctx.config, job.request_id, list_id, work, ctx.esp(), ctx.file_drop(), ctx.stopping,
                      keep_alive, progress)


def hand_over_batches(state: StateStore, config: Config, request_id: str, list_id: str, work: Path,
                      esp: EspClient, drop: FileDrop, stopping: threading.Event,
                      keep_alive: Callable[[], None] | None = None, progress: Callable[[str], None] | None = None,
                      claim: Callable[[int], bool] | None = None) -> None:
    """Upload every written batch and start its import (each step recorded, safe to repeat).

    An import whose start was requested before (a crash after the Perform) is not started
    again while the ESP may still show it (``start_guard``); the imports step looks again.
    ``claim(seq)``: when several workers share the work, True if this one takes the batch.
    """
    for batch in current_batches(state, request_id):
        if batch.status not in TO_HAND_OVER or (claim is not None and not claim(batch.seq)):
            continue
        if keep_alive is not None:  # before the work: a holder whose send was taken over stops here
            keep_alive()
        if batch.status is BatchStatus.WRITTEN:
            size = drop.upload(batches_folder(work) / batch.file_name, batch.file_name)
            batch.move(BatchStatus.UPLOADED)
            state.save_batch(batch)
            log.info("batch_uploaded", send=request_id, batch=batch.seq, rows=batch.rows, bytes=size)
            crashpoint("after_batch_uploaded")
        if batch.status in (BatchStatus.UPLOADED, BatchStatus.STARTING):
            batch.import_key = import_key(request_id, batch.seq)
            if start_import_once(state, config, esp, batch,
                                 lambda b=batch: esp.start_import(b.import_key, b.file_name, list_id)):
                log.info("import_started", send=request_id, batch=batch.seq, import_key=batch.import_key)
        if progress is not None:
            progress("handing_over")
        if stopping.is_set():
            raise Interrupted()
        end_of_turn()  # recorded: past its turn, the request pauses here (never in a background worker)


class BackgroundHandover:
    """Hands finished batches over in threads of their own while resolving goes on.

    ``HANDOVER_WORKERS`` threads, each with its own ESP and SFTP clients (built with the
    adapters' ``from_config``), so the step's clients stay on the step's thread; a batch
    is taken by one worker only. ``kick()`` after new batches are recorded; ``finish()``
    waits until every recorded batch is handed over and raises what a worker met;
    ``close()`` stops them. Whatever they did not reach is handed over by the normal
    phase afterwards.
    """

    def __init__(self, ctx, request_id: str, list_id: str, work: Path, clients: list[tuple],
                 keep_alive: Callable[[], None] | None = None) -> None:
        self.ctx, self.request_id, self.list_id, self.work = ctx, request_id, list_id, work
        self.keep_alive = keep_alive
        self.clients = clients
        self.error: BaseException | None = None
        self._wake = threading.Condition()
        self._generation = 0
        self._closing = False
        self._taken: set[int] = set()
        self._threads = [threading.Thread(target=self._loop, args=(esp, drop), name=f"send-handover-{i}", daemon=True)
                         for i, (esp, drop) in enumerate(clients)]
        for thread in self._threads:
            thread.start()

    @classmethod
    def start(cls, ctx: StepContext, request_id: str, list_id: str, work: Path,
              keep_alive: Callable[[], None] | None = None) -> "BackgroundHandover | None":
        esp, drop = ctx.esp(), ctx.file_drop()
        esp_factory = getattr(type(esp), "from_config", None)
        drop_factory = getattr(type(drop), "from_config", None)
        if esp_factory is None or drop_factory is None:
            return None
        clients = [(esp_factory(ctx.config), drop_factory(ctx.config)) for _ in range(HANDOVER_WORKERS)]
        return cls(ctx, request_id, list_id, work, clients, keep_alive)

    def kick(self) -> None:
        if self.error is not None:
            raise self.error
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    def _claim(self, seq: int) -> bool:
        with self._wake:
            if seq in self._taken:
                return False
            self._taken.add(seq)
            return True

    def _loop(self, esp, drop) -> None:
        seen = 0
        with structlog.contextvars.bound_contextvars(send=self.request_id):
            while True:
                with self._wake:
                    while self._generation == seen and not self._closing:
                        self._wake.wait()
                    seen, last = self._generation, self._closing
                try:
                    hand_over_batches(self.ctx.state, self.ctx.config, self.request_id, self.list_id, self.work,
                                      esp, drop, self.ctx.stopping, self.keep_alive, claim=self._claim)
                except BaseException as exc:  # noqa: BLE001 - handed to the step's thread
                    self.error = self.error or exc
                    return
                if last:
                    return

    def finish(self) -> None:
        """Wait until every recorded batch is handed over; raise a worker's error if one met one."""
        self.close()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join()
        for esp, drop in self.clients:
            for client in (esp, drop):
                try:
                    client.close()
                except Exception as exc:  # noqa: BLE001 - closing must not hide the send's outcome
                    log.warning("handover_client_close_failed", send=self.request_id, error=str(exc))


def release(ctx: StepContext, job: SendJob, request: SendRequest) -> None:
    """Start the send once, record it, report Sent.

    ``start_send_once`` guards the start: a start requested before (its durable mark) is
    looked up by key and waited for while the ESP may still show it; ``start_send`` itself
    finds a send by key before starting one. While it waits, the job stays ``starting``.
    """
    config = ctx.config
    if not job.esp_job_id:
        key = send_key(job.request_id)
        email_key = request.email_key or config.sends.default_email_key
        classification = request.send_classification_key or config.sends.default_send_classification_key
        found = start_send_once(ctx, job, key, lambda: ctx.esp().start_send(
            key, job.esp_list_id, email_key, classification, job.name or request.name))
        if found is None:
            return
        log.info("send_started", send=job.request_id, job_id=found.job_id, key=key)
        job.esp_job_id, job.esp_send_key = str(found.job_id), key
        job.phase_detail = f"released as ESP job {found.job_id}"
        with ctx.state.transaction() as conn:
            ctx.state.save_send_job(job, conn=conn)
            ctx.state.add_tracked_send(config.esp.name, job.esp_job_id, job.request_id,
                                       job.campaign_id or (request.campaign_id or ""), job.name, conn=conn)
        crashpoint("after_send_recorded")
    ctx.crm().update_send_request(
        job.request_id,
        SendRequestUpdate(
            status=SendStatus.SENT, esp_job_id=job.esp_job_id, resolved=job.resolved, handed_over=job.handed_over,
            skipped=job.skipped, skipped_by_reason=dict(job.skipped_by_reason),
            released_on=job.updated_at or datetime.now(timezone.utc), reason=summary(job) + left_out(request),
        ),
    )
    crashpoint("after_crm_updated")
    job.move(JobStatus.SENT)
    ctx.state.save_send_job(job)
    log.info("send_released", send=job.request_id, job_id=job.esp_job_id, resolved=job.resolved,
             handed_over=job.handed_over, skipped=job.skipped)
    shutil.rmtree(work_folder(config, job.request_id), ignore_errors=True)


def summary(job: SendJob) -> str:
    text = f"{job.handed_over} of {job.resolved} recipients handed over"
    if job.skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(job.skipped_by_reason.items()))
        text += f"; {job.skipped} skipped ({reasons}); details in the connector's quarantine table"
    return text


def left_out(request: SendRequest) -> str:
    """The targets a send went without (``[sends] invalid_targets = skip``), for the Sent reason."""
    if not request.invalid_targets:
        return ""
    return (f"; {len(request.invalid_targets)} target(s) left out because they cannot be read "
            f"([sends] invalid_targets = skip): {'; '.join(request.invalid_targets)}")


def fail(ctx: StepContext, job: SendJob, reason: str) -> None:
    """Tell CRM the send failed (with a reason a person can act on), then mark the job failed.

    CRM first: if that write fails transiently, the job stays in flight and the next run
    reaches the same decision and tries the write again.
    """
    ctx.crm().update_send_request(
        job.request_id,
        SendRequestUpdate(
            status=SendStatus.FAILED,
            reason=reason + " To retry, set the request's status back to Pending.",
            resolved=job.resolved, handed_over=job.handed_over, skipped=job.skipped,
            skipped_by_reason=dict(job.skipped_by_reason),
        ),
    )
    give_up(ctx, job, reason)
    log.error("send_failed", send=job.request_id, reason=reason)


def give_up(ctx: StepContext, job: SendJob, reason: str) -> None:
    """Mark the job failed in state only (the CRM request is not ours to report on, or is gone)."""
    job.move(JobStatus.FAILED)
    job.error = reason
    ctx.state.save_send_job(job)
