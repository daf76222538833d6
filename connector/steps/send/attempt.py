"""One attempt at a send request, carried forward one phase at a time.

A ``SendAttempt`` holds what every phase needs: the step context, the job (the state
database's record of the attempt, ``None`` before the first claim), the CRM request
(read once, when a phase first needs it), the keep-alive of the lease ``send:<id>`` and
the progress reporter. ``advance()`` runs the phase the job's status calls for
(``PHASES``) and says whether the next one may follow now; the job's moves between
statuses are checked against ``connector.state.lifecycle``. ``carry`` is the one way
to drive it: under the lease, phase after phase while the status is one the caller
works on (``SENDS_STEP``, ``IMPORTS_STEP``, ``EVERY_PHASE`` for ``send-now``).

What a phase meets decides what happens to the job (``run_phase``): transient trouble
leaves it for the next run, permanent trouble fails it (CRM is told), an operator's
problem holds it (nothing fails, the request gets a note, the error goes up).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import structlog

from connector.errors import OperatorError, PermanentPeerError, RecordError, StateError, TransientPeerError
from connector.models import SendRequest, SendStatus
from connector.state.lifecycle import JobStatus
from connector.state.records import SendJob
from connector.steps import StepContext
from connector.steps.send.checks import hold
from connector.steps.send.claim import check, claim
from connector.steps.send.handover import hand_over
from connector.steps.send.imports import await_imports
from connector.steps.send.release import fail, release_phase
from connector.steps.send.resolve import resolve
from connector.steps.send.turns import Interrupted

log = structlog.get_logger(__name__)

Progress = Callable[[SendJob, str], None]
KeepAlive = Callable[..., None]
Phase = Callable[["SendAttempt"], bool]

PHASES: Mapping[JobStatus | None, Phase] = {
    None: claim,                        # no attempt in flight and the request Pending: a new attempt
    JobStatus.CLAIMED: check,           # the CRM claim if still to make; owner, e-mail, targets
    JobStatus.RESOLVING: resolve,       # recipients from CRM into batch files
    JobStatus.HANDING_OVER: hand_over,  # SOAP upserts, or batch files and their imports
    JobStatus.IMPORTING: await_imports,
    JobStatus.STARTING: release_phase,  # the ESP send started once; Sent in CRM
}
"""The phase for each status (``None``: no attempt in flight). ``sent`` and ``failed`` have none."""

SENDS_STEP = frozenset({None, JobStatus.CLAIMED, JobStatus.RESOLVING, JobStatus.HANDING_OVER, JobStatus.STARTING})
"""What the sends step carries a request through; ``importing`` belongs to the imports step."""

IMPORTS_STEP = frozenset({JobStatus.IMPORTING, JobStatus.STARTING})
"""What the imports step carries a send through: its imports, then its release."""

EVERY_PHASE = frozenset(PHASES)
"""``send-now``: the whole way, in the foreground."""


class SendAttempt:
    """One request's attempt, under its lease (see the module docstring)."""

    def __init__(self, ctx: StepContext, job: SendJob | None, keep_alive: KeepAlive, *,
                 pending: SendRequest | None = None, progress: Progress | None = None) -> None:
        self.ctx = ctx
        self.job = job
        self.keep_alive = keep_alive
        self.pending = pending  # the request as listed Pending: claimed by the ``None`` phase
        self.request: SendRequest | None = None  # read afresh (a listed one may be stale) when first needed
        self.progress = progress
        self._ready = False

    @property
    def status(self) -> JobStatus | None:
        """The key of the next phase: the job's status, None when no attempt is in flight."""
        return self.job.status if self.job is not None and self.job.in_flight else None

    def advance(self) -> bool:
        """Run the next phase; True when it moved the job on and the next phase may follow now."""
        status = self.status
        if status is None:  # a claim has its own answers to trouble (it puts a refused claim back)
            return self.pending is not None and PHASES[None](self)
        return self.run_phase(PHASES[status])

    def run_phase(self, phase: Phase) -> bool:
        """Run ``phase``; transient trouble leaves the job for the next run, permanent trouble fails it.

        An operator's problem (``OperatorError``: credentials, TLS trust, configuration) fails
        nothing: the job stays where it is, the request gets a note, and the error goes up to the
        step so its run is reported failed; the next run carries on once the problem is fixed.
        """
        job = self.job
        assert job is not None
        try:
            return phase(self)
        except Interrupted:
            log.info("send_paused", send=job.request_id, status=job.status, detail=job.phase_detail)
        except TransientPeerError as exc:
            log.warning("send_delayed", send=job.request_id, status=job.status, peer=exc.peer, error=str(exc))
            job.phase_detail = f"waiting to retry after: {exc}"
            self.ctx.state.save_send_job(job)
        except OperatorError as exc:
            hold(self.ctx, job.request_id, exc, job=job)
            raise
        except (PermanentPeerError, RecordError) as exc:
            try:
                self.fail(f"{exc}")
            except TransientPeerError as again:
                log.warning("send_failure_not_reported", send=job.request_id, error=str(again))
        return False

    def ready(self) -> bool:
        """The CRM request in hand for the phases that need it: read once, claimed in CRM when a hold
        gave it back to Pending, and neither deleted nor cancelled (False: the attempt ended or waits)."""
        if self._ready:
            return True
        job, crm = self.job, self.ctx.crm()
        assert job is not None
        if self.request is None:
            self.request = crm.get_send_request(job.request_id)
            if self.request is None:
                when = " before its release" if job.status is JobStatus.STARTING else ""
                self.abandon(f"the send request was deleted in CRM{when}")
                return False
        if job.status is JobStatus.CLAIMED and self.request.status is SendStatus.PENDING:  # CRM claim still to make
            claimed = crm.claim_send_request(self.request)
            if claimed is None:  # changed in CRM since it was read: left as it is, read again next run
                log.warning("send_claimed_elsewhere", send=job.request_id)
                return False
            self.request = claimed
        if self.request.status is SendStatus.CANCELLED and not job.esp_job_id:
            self.abandon("cancelled in CRM before it was released")
            log.info("send_cancelled", send=job.request_id)
            return False
        self._ready = True
        return True

    def fail(self, reason: str) -> None:
        """The attempt failed: CRM is told, with ``reason``, then the job."""
        assert self.job is not None
        fail(self.ctx, self.job, reason)

    def abandon(self, reason: str) -> None:
        """The attempt ends without telling CRM (the request is gone, or no longer ours to report on)."""
        assert self.job is not None
        fail(self.ctx, self.job, reason, tell_crm=False)

    @property
    def reporter(self) -> Callable[[str], None] | None:
        """The progress reporter as the phases call it (with the phase's name), None without one."""
        return self.report if self.progress is not None else None

    def report(self, phase: str) -> None:
        if self.progress is not None and self.job is not None:
            self.progress(self.job, phase)


@contextmanager
def send_lease(ctx: StepContext, request_id: str) -> Iterator[KeepAlive | None]:
    """Hold ``send:<id>``; yields a keep-alive that extends it (None when someone else holds it)."""
    resource, seconds = f"send:{request_id}", ctx.config.state.lease_seconds
    if not ctx.state.acquire_lease(resource, seconds):
        log.info("send_busy", send=request_id, holder=ctx.state.lease_holder(resource))
        yield None
        return

    def keep_alive(conn=None) -> None:  # noqa: ANN001 - a state connection: fence the caller's writes with it
        if not ctx.state.extend_lease(resource, seconds, conn=conn):
            raise StateError(f"lost the lease on {resource}; another instance took send request {request_id}")

    try:
        with structlog.contextvars.bound_contextvars(send=request_id):
            yield keep_alive
    finally:
        ctx.state.release_lease(resource)


def carry(ctx: StepContext, request_id: str, statuses: frozenset[JobStatus | None], *,
          pending: SendRequest | None = None, progress: Progress | None = None) -> SendJob | None:
    """Carry one request as far as it goes now through the phases of ``statuses``, under its lease.

    ``pending``: the request as listed Pending (claimed when no attempt is in flight). Returns
    the job as it was left (None: someone else holds the lease, or there is no job).
    """
    with send_lease(ctx, request_id) as keep_alive:
        if keep_alive is None:
            return None
        attempt = SendAttempt(ctx, ctx.state.get_send_job(request_id), keep_alive, pending=pending, progress=progress)
        while attempt.status in statuses and attempt.advance():
            pass
        return attempt.job


def process_request(ctx: StepContext, request_id: str, *, pending: SendRequest | None = None,
                    progress: Progress | None = None) -> SendJob | None:
    """The sends step's work on one request: claim (when ``pending``) or resume it, up to its imports."""
    return carry(ctx, request_id, SENDS_STEP, pending=pending, progress=progress)


def poll_send(ctx: StepContext, request_id: str) -> SendJob | None:
    """The imports step's work on one send: poll its imports once; release it when all are in."""
    return carry(ctx, request_id, IMPORTS_STEP)
