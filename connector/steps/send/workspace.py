"""Whose disk resolves a send: the local work folder is a cache, the state database decides.

The work folder (``<data_dir>/sends/<request id>``: ``work.db`` and the batch files)
belongs to the send attempt whose token it carries, the same token as
``send_jobs.workspace``. Before the resolve or hand-over phase, the instance holding
the lease checks it:

* the tokens agree: the folder is this attempt's, resume from it;
* no token yet: the attempt has not started resolving; a fresh folder gets one;
* anything else (no folder on this disk, or a folder from another attempt or an
  instance that was taken over since): **take over** from the state database and
  the peers alone. Batches that reached the ESP (uploaded, starting, importing,
  imported;
  on the SOAP path the upserted part of a batch) stay: they are done by their
  keys at the ESP, and their members (``batches.member_keys``: address and
  subscriber key digests) are loaded into a new folder as already handed over. Batches that existed only on the other disk
  (``written``) are set aside (``BATCH_ABANDONED``), their remote leftovers
  removed. Then the job goes back to ``resolving``: recipients are resolved
  again from CRM, the ones already handed over are counted, never written again,
  and the rest go into new batches with new numbers (so new import keys). The
  quarantine rows of the earlier resolve are replaced by the new resolve's.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from connector.batchfiles import split_keys
from connector.errors import PeerError
from connector.state.lifecycle import BatchStatus, JobStatus
from connector.state.records import BATCH_ABANDONED, Batch, SendJob
from connector.steps import StepContext
from connector.steps.send.ledger import HANDOVER_SKIPS, current_batches
from connector.suppression import SendWorkspace

if TYPE_CHECKING:  # pragma: no cover
    from connector.config import Config

log = structlog.get_logger(__name__)


def work_folder(config: Config, request_id: str) -> Path:
    """The send's local work folder: ``work.db`` and the batch files (a cache, see above)."""
    return Path(config.service.data_dir) / "sends" / request_id


def batches_folder(work: Path) -> Path:
    return work / "batches"

AT_THE_ESP = (BatchStatus.UPLOADED, BatchStatus.STARTING, BatchStatus.IMPORTING, BatchStatus.IMPORTED)
"""Batch statuses of the file path whose file is at the ESP's drop (or already imported); a
``starting`` one keeps its start mark, so the start guard decides whether it was started."""


def own_workspace(ctx: StepContext, job: SendJob) -> None:
    """Make the local work folder this attempt's, taking the send over when it is not."""
    folder = work_folder(ctx.config, job.request_id)
    path = folder / "work.db"
    if path.exists():
        with SendWorkspace(path) as workspace:
            owner = workspace.owner()
        if job.workspace and owner == job.workspace:
            missing = _missing_files(ctx, job, folder)
            if not missing:
                return
            log.warning("send_files_missing", send=job.request_id, files=missing[:5], count=len(missing))
            take_over(ctx, job, folder)
            return
        with SendWorkspace(path) as workspace:
            if not job.workspace and not owner:  # a folder of an older version, from before the takeover
                job.workspace = _new_token()
                workspace.set_owner(job.workspace)
                ctx.state.save_send_job(job)
                return
    if not job.workspace and not current_batches(ctx.state, job.request_id):
        _fresh(ctx, job, folder)
        return
    take_over(ctx, job, folder)


def _missing_files(ctx: StepContext, job: SendJob, folder: Path) -> list[str]:
    """Batch files this attempt still has to read from this disk but that are gone (deleted by hand?)."""
    needed = ((BatchStatus.WRITTEN,) if job.path != "soap"
              else (BatchStatus.WRITTEN, BatchStatus.UPLOADED, BatchStatus.IMPORTING))
    return [b.file_name for b in current_batches(ctx.state, job.request_id)
            if b.status in needed and not (batches_folder(folder) / b.file_name).exists()]


def _new_token() -> str:
    return uuid.uuid4().hex


def _fresh(ctx: StepContext, job: SendJob, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    job.workspace = _new_token()
    with SendWorkspace(folder / "work.db") as workspace:
        workspace.set_owner(job.workspace)
    ctx.state.save_send_job(job)


def take_over(ctx: StepContext, job: SendJob, folder: Path) -> None:
    """Rebuild the attempt's work folder here from the state database (see the module docstring)."""
    shutil.rmtree(folder, ignore_errors=True)
    kept, abandoned = _sort_out(job, current_batches(ctx.state, job.request_id))
    token, loaded, unknown = _new_token(), 0, 0
    with SendWorkspace(folder / "work.db") as workspace:
        for batch in kept:  # one batch's keys at a time
            keys = ctx.state.batch_member_keys(job.request_id, batch.seq)
            unknown += keys is None
            loaded = workspace.load_done(split_keys(keys, batch.rows))
        workspace.set_owner(token)
    previous = job.status
    job.workspace = token
    job.move(JobStatus.RESOLVING)
    job.phase_detail = f"taken over: {len(kept)} batch(es) at the ESP kept, {len(abandoned)} written again"
    with ctx.state.transaction() as conn:
        for batch in kept + abandoned:
            ctx.state.save_batch(batch, conn=conn)
        ctx.state.clear_quarantine(job.request_id, keep_reasons=HANDOVER_SKIPS, conn=conn)
        ctx.state.save_send_job(job, conn=conn)
    log.warning("send_taken_over", send=job.request_id, previous_status=previous, kept=len(kept),
                abandoned=len(abandoned), handed_over_before=loaded, kept_without_members=unknown)
    _remove_leftovers(ctx, job, abandoned)


def _sort_out(job: SendJob, batches: list[Batch]) -> tuple[list[Batch], list[Batch]]:
    """Batches that reached the ESP (kept; a SOAP batch cut to its upserted rows) and the rest (abandoned)."""
    kept, abandoned = [], []
    for batch in batches:
        if job.path == "soap":
            done = batch.rows_ok + batch.rows_error
            if done and batch.status in (BatchStatus.IMPORTING, BatchStatus.IMPORTED):
                batch.rows = done  # the rest of its rows go into a new batch
                batch.move(BatchStatus.IMPORTED)
                kept.append(batch)
                continue
        elif batch.status in AT_THE_ESP:
            kept.append(batch)
            continue
        batch.move(BatchStatus.ABANDONED)
        batch.error = BATCH_ABANDONED
        abandoned.append(batch)
    return kept, abandoned


def _remove_leftovers(ctx: StepContext, job: SendJob, abandoned: list[Batch]) -> None:
    """An abandoned batch may have been partly uploaded: remove it from the drop (best effort)."""
    if job.path == "soap" or not abandoned:
        return
    try:
        drop = ctx.file_drop()
        for batch in abandoned:
            drop.remove(batch.file_name)
    except PeerError as exc:
        log.warning("batch_file_not_removed", send=job.request_id, error=str(exc))
