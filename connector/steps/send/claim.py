"""The claim of a send request, and the checks before anything is written for it.

* ``claim`` (no attempt in flight, the request listed as Pending): ask the ESP first
  (``checks.esp_ready``), record the claim in state, then take the request in CRM
  (etag-guarded Pending -> Processing): two claims guard one request, the lease
  ``send:<id>`` between pools and instances sharing one state database, the CRM claim
  between any two. A retried request (an admin set it back to Pending) is a new attempt;
  the batches of the earlier one are superseded.
* ``check`` (``claimed``): the owner's roles, the e-mail, the targets (``checks.precheck``);
  a send the ESP already has (released before, its state lost) is not sent again.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from connector.crashpoints import crashpoint
from connector.errors import OperatorError, PermanentPeerError, TransientPeerError
from connector.models import SendRequest, SendStatus
from connector.state.lifecycle import FIRST_JOB_STATUS, JOB_MOVES, BatchStatus, JobStatus, checked_move
from connector.state.records import BATCH_SUPERSEDED, Batch, SendJob
from connector.steps import StepContext
from connector.steps.send.checks import esp_ready, hold, precheck
from connector.steps.send.keys import send_key
from connector.steps.send.release import fail
from connector.steps.send.workspace import work_folder

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps.send.attempt import SendAttempt

log = structlog.get_logger(__name__)


def claim(attempt: SendAttempt) -> bool:
    """A new attempt at the Pending request ``attempt.pending``; True when it is claimed in state and CRM."""
    ctx, listed, old = attempt.ctx, attempt.pending, attempt.job
    attempt.pending = None  # one claim per attempt object
    assert listed is not None
    if old is None and not esp_ready(ctx, listed):  # a retry (old job) is read afresh in _claim first
        return False
    claimed = _claim(ctx, listed, old)
    if claimed is None:
        attempt.job = ctx.state.get_send_job(listed.id)
        return False
    attempt.job, attempt.request = claimed
    return True


def check(attempt: SendAttempt) -> bool:
    """``claimed``: refuse early what cannot be sent; then ``resolving``, or ``starting`` when the
    ESP already has this request's send (released before: state lost, or a request reset after Sent)."""
    if not attempt.ready():
        return False
    ctx, job = attempt.ctx, attempt.job
    if not precheck(ctx, job, attempt.request):
        return False
    existing = ctx.esp().find_send(send_key(job.request_id))
    if existing is not None:
        job.move(JobStatus.STARTING)
        job.esp_job_id, job.esp_send_key = str(existing.job_id), send_key(job.request_id)
        job.phase_detail = f"already released at the ESP as job {existing.job_id}; not sent again"
    else:
        job.move(JobStatus.RESOLVING)
    ctx.state.save_send_job(job)
    return True


def _claim(ctx: StepContext, listed: SendRequest, old: SendJob | None) -> tuple[SendJob, SendRequest] | None:
    """Record the claim in state, then take the request in CRM (etag-guarded).

    A loser changes nothing: a request listed as Pending whose job is already final is
    read again first (another instance may have sent it since the list was read), and
    when the CRM claim is refused the job and batches are put back as they were.
    """
    request: SendRequest | None = listed
    if old is not None:  # a retry by an admin, or a stale pending list
        request = ctx.crm().get_send_request(listed.id)
        if request is None or request.status is not SendStatus.PENDING:
            log.info("send_claim_skipped", send=listed.id, job_status=old.status,
                     crm_status=request.status.value if request else "deleted")
            return None
    assert request is not None
    earlier = ctx.state.batches(request.id) if old is not None else []
    job = _new_attempt(ctx, request, old, earlier)
    crashpoint("before_crm_claim")
    try:
        claimed = ctx.crm().claim_send_request(request)
    except TransientPeerError as exc:  # the next poll claims it (the job is recorded as claimed)
        log.warning("send_claim_delayed", send=request.id, error=str(exc))
        return None
    except OperatorError as exc:  # e.g. the application user may not write send requests
        _restore(ctx, request.id, old, earlier)
        hold(ctx, request.id, exc)
        raise
    except PermanentPeerError as exc:
        fail(ctx, job, f"could not claim the request in CRM: {exc}", tell_crm=False)
        log.error("send_claim_failed", send=request.id, error=str(exc))
        return None
    if claimed is None:
        _restore(ctx, request.id, old, earlier)
        log.warning("send_claimed_elsewhere", send=request.id)
        return None
    if old is not None:
        shutil.rmtree(work_folder(ctx.config, request.id), ignore_errors=True)
        log.info("send_retried", send=request.id, previous_status=old.status, previous_error=old.error)
    crashpoint("after_claim")
    log.info("send_claimed", send=request.id, name=request.name, targets=len(request.targets))
    return job, claimed


def _new_attempt(ctx: StepContext, request: SendRequest, old: SendJob | None, earlier: list[Batch]) -> SendJob:
    """A fresh job for ``request``; the batches of an earlier attempt are marked superseded (one transaction)."""
    if old is not None:  # a new attempt at a final one
        checked_move(f"send job {request.id}", JOB_MOVES, old.status, FIRST_JOB_STATUS)
    job = SendJob(request_id=request.id, status=FIRST_JOB_STATUS, name=request.name,
                  campaign_id=request.campaign_id or "")
    with ctx.state.transaction() as conn:
        ctx.state.save_send_job(job, conn=conn)
        for batch in earlier:
            if not batch.set_aside:
                superseded = replace(batch, error=BATCH_SUPERSEDED)  # ``earlier`` stays as it was, for _restore
                superseded.move(BatchStatus.SUPERSEDED)
                ctx.state.save_batch(superseded, conn=conn)
    return job


def _restore(ctx: StepContext, request_id: str, old: SendJob | None, earlier: list[Batch]) -> None:
    """Put the job and batches back as they were before a claim CRM refused."""
    with ctx.state.transaction() as conn:
        if old is None:
            ctx.state.delete_send_job(request_id, conn=conn)
            return
        ctx.state.save_send_job(old, conn=conn)
        for batch in earlier:
            ctx.state.save_batch(batch, conn=conn)
