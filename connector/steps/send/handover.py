"""Hand-over phase of a send (``handing_over``): the resolved recipients to the ESP.

* SOAP path: upsert the spooled subscribers in chunks onto the send's List,
  checkpointing the batch's progress, the counts and the rejected rows in one
  state transaction per chunk (a re-done chunk is a harmless re-upsert); then
  ``starting``.
* File path: upload each batch file, start its ImportDefinition (idempotent on the
  key, ``start_guard``), then ``importing``: the imports step polls them. Finished
  batch files can be handed over while resolving goes on (``BackgroundHandover``).
"""

from __future__ import annotations

import threading
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TypeVar

import structlog

from connector.batchfiles import read_batch
from connector.crashpoints import crashpoint
from connector.errors import PeerError
from connector.models import SendRequest, SkipReason
from connector.state.lifecycle import BatchStatus, JobStatus
from connector.state.store import QuarantineRow, SendJob
from connector.steps.send.keys import import_key, list_key
from connector.steps.send.ledger import add_skips, current_batches, skipped_before_handover
from connector.steps.send.start_guard import start_import_once
from connector.steps.send.turns import Interrupted, end_of_turn
from connector.steps.send.workspace import batches_folder, own_workspace, work_folder

if TYPE_CHECKING:  # pragma: no cover
    from connector.config import Config
    from connector.esp.base import EspClient
    from connector.state.store import StateStore
    from connector.steps import StepContext
    from connector.steps.send.attempt import SendAttempt
    from connector.transfer.base import FileDrop

log = structlog.get_logger(__name__)

TO_HAND_OVER = (BatchStatus.WRITTEN, BatchStatus.UPLOADED, BatchStatus.STARTING)
"""Batches of the file path not yet at the ESP (a ``starting`` one: the start guard decides)."""

HANDOVER_WORKERS = 2
"""Batch files uploaded (and their imports started) at once while resolving goes on."""

T = TypeVar("T")


def hand_over(attempt: SendAttempt) -> bool:
    """``handing_over``: SOAP upserts (then ``starting``) or batch files (then ``importing``).

    A work folder that is not this attempt's takes the send over first: back to ``resolving``.
    """
    if not attempt.ready():
        return False
    ctx, job = attempt.ctx, attempt.job
    own_workspace(ctx, job)  # this disk's folder is a cache: not this attempt's -> take the send over
    if job.status is not JobStatus.HANDING_OVER:
        return True
    work = work_folder(ctx.config, job.request_id)
    if job.path == "soap":
        hand_over_soap(ctx, job, work, attempt.keep_alive, attempt.reporter)
        job.move(JobStatus.STARTING)
    else:
        hand_over_files(ctx, job, work, attempt.keep_alive, attempt.reporter)
        show_importing(ctx, attempt.request)  # before the commit: a crash in between writes it again
        crashpoint("after_importing_shown")
        job.move(JobStatus.IMPORTING)
        job.phase_detail = "waiting for the ESP to import the batch files"
    ctx.state.save_send_job(job)
    return True


def show_importing(ctx: StepContext, request: SendRequest | None) -> None:
    """CRM shows Importing while the ESP imports the batch files (Processing -> Importing).

    Cosmetic: a write that fails or is refused is logged and the send goes on; release
    writes Sent (or Failed) over it as before."""
    if request is None:
        return
    try:
        if not ctx.crm().mark_importing(request):
            log.info("send_importing_not_shown", send=request.id, crm_status=request.status.value)
    except PeerError as exc:
        log.warning("send_importing_not_shown", send=request.id, error=str(exc))


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:  # noqa: D103
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


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
                progress(JobStatus.HANDING_OVER)
            if ctx.stopping.is_set():
                raise Interrupted()
            end_of_turn()  # committed: past its turn, the request pauses here
        log.info("batch_upserted", send=job.request_id, batch=batch.seq, rows=batch.rows,
                 rows_ok=batch.rows_ok, rows_error=batch.rows_error, handed_over=job.handed_over)
        if batch.status is not BatchStatus.IMPORTED:  # an empty remainder: the file was fully done before
            batch.move(BatchStatus.IMPORTED)
            ctx.state.save_batch(batch)


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
            progress(JobStatus.HANDING_OVER)
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
