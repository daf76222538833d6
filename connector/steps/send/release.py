"""The end of an attempt: released at the ESP and reported Sent, or failed.

* Release (``starting``): look the send up by its key first, start it only when absent
  (``start_guard``), record the job id (and the tracked send) in state, then write Sent,
  the job id and the counts to CRM.
* Fail: tell CRM the send failed, with a reason a person can act on, then mark the job
  failed. Abandon: the same in state only (the CRM request is gone, or not ours to report
  on): ``fail(..., tell_crm=False)``.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import structlog

from connector.crashpoints import crashpoint
from connector.models import SendRequest, SendRequestUpdate, SendStatus
from connector.state.lifecycle import JobStatus
from connector.state.records import SendJob
from connector.steps import StepContext
from connector.steps.send.keys import send_key
from connector.steps.send.ledger import summary
from connector.steps.send.start_guard import start_send_once
from connector.steps.send.workspace import work_folder

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps.send.attempt import SendAttempt

log = structlog.get_logger(__name__)


def release_phase(attempt: SendAttempt) -> bool:
    """``starting``: release the send (once), unless nobody was handed over. Never followed by another phase."""
    if not attempt.ready():
        return False
    job = attempt.job
    if not job.esp_job_id and job.handed_over == 0:
        attempt.fail(f"nobody was handed over to the ESP, so no send was started: {summary(job)}.")
        return False
    release(attempt.ctx, job, attempt.request)
    if job.status is JobStatus.SENT:
        attempt.ctx.state.forget_member_keys(job.request_id)
    attempt.report(job.status)
    return False


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


def left_out(request: SendRequest) -> str:
    """The targets a send went without (``[sends] invalid_targets = skip``), for the Sent reason."""
    if not request.invalid_targets:
        return ""
    return (f"; {len(request.invalid_targets)} target(s) left out because they cannot be read "
            f"([sends] invalid_targets = skip): {'; '.join(request.invalid_targets)}")


def fail(ctx: StepContext, job: SendJob, reason: str, *, tell_crm: bool = True) -> None:
    """Mark the job failed with ``reason``; first, with ``tell_crm``, say so on the CRM request.

    CRM first: if that write fails transiently, the job stays in flight and the next run
    reaches the same decision and tries the write again. Without ``tell_crm`` (abandon) only
    the state database learns it: the request was deleted, cancelled, or is not ours to
    report on.
    """
    if tell_crm:
        ctx.crm().update_send_request(
            job.request_id,
            SendRequestUpdate(
                status=SendStatus.FAILED,
                reason=reason + " To retry, set the request's status back to Pending.",
                resolved=job.resolved, handed_over=job.handed_over, skipped=job.skipped,
                skipped_by_reason=dict(job.skipped_by_reason),
            ),
        )
    job.move(JobStatus.FAILED)
    job.error = reason
    ctx.state.save_send_job(job)
    if tell_crm:
        log.error("send_failed", send=job.request_id, reason=reason)
