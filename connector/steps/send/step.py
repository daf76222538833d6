"""The send step: claim pending CRM send requests and carry each one to an ESP send.

A send job moves through ``claimed -> resolving -> handing_over -> (importing) ->
starting -> sent`` (or ``failed``), recorded in the state database after every
chunk or batch, so the step resumes a job wherever a crash, a restart or a peer
outage left it. Two claims guard each request: the state lease ``send:<id>`` (pools
and instances sharing one state database) and the etag-guarded Pending ->
Processing change in CRM. The ESP objects carry keys derived from the request id
and are looked up before anything is created, so one request releases at most one
ESP send. The imports step (``connector.steps.send.imports``) polls file imports and
releases the send when the last file is in.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator

import structlog

from connector.crashpoints import crashpoint
from connector.errors import (
    ConfigError,
    OperatorError,
    PeerError,
    PermanentPeerError,
    RecordError,
    StateError,
    TransientPeerError,
)
from connector.mapping import unknown_attribute_mappings
from connector.models import SendRequest, SendRequestUpdate, SendStatus, SkipReason, TargetKind
from connector.state.lifecycle import FIRST_JOB_STATUS, JOB_MOVES, BatchStatus, JobStatus, checked_move
from connector.state.store import Batch, QuarantineRow, SendJob
from connector.steps import StepContext, StepOutcome
from connector.steps.send.handover import (
    SUPERSEDED,
    BackgroundHandover,
    add_skips,
    current_batches,
    ensure_list,
    fail,
    give_up,
    hand_over_files,
    hand_over_soap,
    release,
    send_key,
    summary,
    work_folder,
)
from connector.steps.send.resolve import SINGLE_KINDS, Interrupted, Resolver
from connector.steps.send.audience import audience_changed_reason, hold_changed_audience
from connector.steps.send.preview import describe_email, run_previews
from connector.steps.send.turns import turn
from connector.steps.send.workspace import own_workspace
from connector.steps.workers import in_workers
from connector.suppression import SendWorkspace

log = structlog.get_logger(__name__)

MISSING_NAMED = 10
"""Targets whose record does not exist named one by one on the request; the rest are counted."""

RESUMABLE = (JobStatus.CLAIMED, JobStatus.RESOLVING, JobStatus.HANDING_OVER, JobStatus.STARTING)
"""Job statuses the send step carries on with; ``importing`` belongs to the imports step."""

Progress = Callable[[SendJob, str], None]


def run_sends(ctx: StepContext) -> StepOutcome:
    """One poll: resume the jobs in flight, then claim and process new pending requests.

    With ``[sends] workers`` > 1, several requests are worked on at once, each in a
    thread of a pool that lives as long as the process (``connector.steps.workers``:
    each thread keeps its own adapters); the lease on each request keeps any two
    threads apart. Each request gets turns of ``[sends] time_slice_seconds`` (``connector.steps.send.turns``): one
    past its turn pauses at a checkpoint and waits for the next round, so a long one
    does not hold up the others; each round also takes in requests that became Pending.
    """
    outcome = StepOutcome()
    _new_probe(ctx)  # a run asks the ESP afresh (even under a reused run id)
    try:
        previewed = run_previews(ctx)  # "Preview requested": resolved, nothing sent
        if previewed:
            outcome.details["previewed"] = previewed
    except OperatorError as exc:
        outcome.ok, outcome.message = False, f"previews held: {exc}"
    work: list[tuple[str, SendRequest | None]] = [(job.request_id, None) for job in ctx.state.send_jobs(RESUMABLE)]
    seen = {rid for rid, _ in work}
    held: list[str] = []
    last: dict[str, SendJob | None] = {}

    def one(item: tuple[str, SendRequest | None]) -> tuple[SendJob | None, bool]:
        if ctx.stopping.is_set():
            return None, False
        request_id, pending = item
        with turn(ctx.config.sends.time_slice_seconds) as current:
            job = _one(request_id, pending)
        return job, bool(current and current.used)

    def _one(request_id: str, pending: SendRequest | None) -> SendJob | None:
        try:
            return process_request(ctx, request_id, pending=pending)
        except OperatorError as exc:  # logged and noted on the request by hold(); the step run reports it
            outcome.ok = False
            held.append(f"{request_id}: {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 - one request's trouble must not stop the others
            log.exception("send_request_error", send=request_id, error=f"{type(exc).__name__}: {exc}")
            outcome.ok = False
            return None

    rounds = 0
    while not ctx.stopping.is_set():
        work += _newly_pending(ctx, seen, first=rounds == 0)
        if not work:
            break
        rounds += 1
        results = in_workers("send", ctx.config.sends.workers, one, work)
        again: list[tuple[str, SendRequest | None]] = []
        for (request_id, _), (job, paused) in zip(work, results):
            last[request_id] = job
            if paused and job is not None and job.in_flight:
                again.append((request_id, None))
        work = again
        if not again:
            break
    for job in last.values():
        _tally(outcome, job)
    if rounds > 1:
        outcome.details["rounds"] = rounds
    outcome.message = f"{outcome.processed} send request(s) worked on"
    if held:
        outcome.details["held"] = len(held)
        outcome.message += (f"; {len(held)} held until an operator fixes the connector's configuration or "
                            f"credentials (the requests stay as they are and resume then): {held[0]}")
    return outcome  # a send that fails for a reason in CRM is reported there, not a failed step run


def _newly_pending(ctx: StepContext, seen: set[str], first: bool) -> list[tuple[str, SendRequest | None]]:
    """Pending requests not yet worked on in this run (after the first round: best effort)."""
    limit = ctx.config.sends.max_requests_per_poll
    try:
        fresh = [(r.id, r) for r in ctx.crm().pending_send_requests(limit=limit) if r.id not in seen]
    except TransientPeerError as exc:
        if first:
            raise
        log.warning("send_pending_not_listed", error=str(exc))
        return []
    seen.update(rid for rid, _ in fresh)
    return fresh


def _tally(outcome: StepOutcome, job: SendJob | None) -> None:
    if job is None:
        return
    outcome.processed += 1
    outcome.details[job.status] = outcome.details.get(job.status, 0) + 1


@contextmanager
def send_lease(ctx: StepContext, request_id: str) -> Iterator[Callable[[], None] | None]:
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


def process_request(
    ctx: StepContext, request_id: str, *, pending: SendRequest | None = None, progress: Progress | None = None
) -> SendJob | None:
    """Claim (when ``pending``) or resume one request and carry it as far as it goes now."""
    with send_lease(ctx, request_id) as keep_alive:
        if keep_alive is None:
            return None
        job = ctx.state.get_send_job(request_id)
        request = pending
        if job is not None and job.in_flight:
            if pending is not None and job.status is JobStatus.IMPORTING:
                return job
            request = None  # resume: the request is read afresh (a listed one may be stale)
        elif pending is not None:
            if job is None and not esp_ready(ctx, pending):  # a retry (old job) is read afresh in _claim first
                return job
            claimed = _claim(ctx, pending, job)
            if claimed is None:
                return ctx.state.get_send_job(request_id)
            job, request = claimed
        else:
            return job
        return guarded(ctx, job, lambda: _advance(ctx, job, request, keep_alive, progress))


def guarded(ctx: StepContext, job: SendJob, work: Callable[[], None]) -> SendJob:
    """Run a phase; transient trouble leaves the job for the next run, permanent trouble fails it.

    An operator's problem (``OperatorError``: credentials, TLS trust, configuration) fails
    nothing: the job stays where it is, the request gets a note, and the error goes up to the
    step so its run is reported failed; the next run carries on once the problem is fixed.
    """
    try:
        work()
    except Interrupted:
        log.info("send_paused", send=job.request_id, status=job.status, detail=job.phase_detail)
    except TransientPeerError as exc:
        log.warning("send_delayed", send=job.request_id, status=job.status, peer=exc.peer, error=str(exc))
        job.phase_detail = f"waiting to retry after: {exc}"
        ctx.state.save_send_job(job)
    except OperatorError as exc:
        hold(ctx, job.request_id, exc, job=job)
        raise
    except (PermanentPeerError, RecordError) as exc:
        try:
            fail(ctx, job, f"{exc}")
        except TransientPeerError as again:
            log.warning("send_failure_not_reported", send=job.request_id, error=str(again))
    return job


class _EspProbe:
    """What one step run learned from the ESP, asked once per run rather than once per request:
    the e-mail ids by key, whether the attribute mapping holds, and an operator problem met."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.emails: dict[str, str | None] = {}
        self.mapping_ok = False
        self.refused: OperatorError | None = None


_PROBE = _EspProbe("")
"""The latest step run's probe (a run id of its own; "" = no run id, nothing kept)."""


def _new_probe(ctx: StepContext) -> _EspProbe:
    global _PROBE
    _PROBE = _EspProbe(ctx.run_id)
    return _PROBE


def _probe(ctx: StepContext) -> _EspProbe:
    probe = _PROBE
    return probe if ctx.run_id and probe.run_id == ctx.run_id else _new_probe(ctx)


def find_email(ctx: StepContext, email_key: str) -> str | None:
    """The ESP's id of the e-mail ``email_key`` (None: no such e-mail), looked up once per step run."""
    probe = _probe(ctx)
    if probe.refused is not None:  # asked once this run: no second failed login per pending request
        raise probe.refused
    if email_key not in probe.emails:
        try:
            probe.emails[email_key] = ctx.esp().find_email(email_key)
        except OperatorError as exc:
            probe.refused = exc
            raise
    return probe.emails[email_key]


def check_mapping_once(ctx: StepContext) -> None:
    """``check_mapping`` once per step run (the account's attributes do not depend on the request)."""
    probe = _probe(ctx)
    if probe.refused is not None:
        raise probe.refused
    if not probe.mapping_ok:
        try:
            check_mapping(ctx)
        except OperatorError as exc:
            probe.refused = exc
            raise
        probe.mapping_ok = True


def esp_ready(ctx: StepContext, request: SendRequest) -> bool:
    """Ask the ESP for the request's e-mail (and check the mapping) before claiming it: a credential,
    TLS or configuration problem then holds the request while it is still Pending (``OperatorError``)."""
    email_key = request.email_key or ctx.config.sends.default_email_key
    if not email_key:
        return True  # the precheck fails it with the reason
    try:
        find_email(ctx, email_key)
        check_mapping_once(ctx)
    except OperatorError as exc:
        hold(ctx, request.id, exc)
        raise
    except TransientPeerError as exc:  # the next poll asks again; nothing is claimed
        log.warning("send_delayed", send=request.id, peer=exc.peer, error=str(exc))
        return False
    return True


HELD_NOTE = ("Held by the connector, not failed: {problem}. This is for the connector's operator to fix "
             "(configuration, credentials or the set-up at the ESP/CRM); the request goes on by itself once "
             "it is fixed, nothing to do here.")


def hold(ctx: StepContext, request_id: str, exc: Exception, *, job: SendJob | None = None) -> None:
    """Keep the request (and its job) where it is, say why on it and in the log, loudly.

    A request claimed but not yet started on (job ``claimed``) goes back to Pending: the job
    then is one whose CRM claim is still to be made, which the next run makes (``_advance``).
    """
    log.error("send_held", send=request_id, status=job.status if job else "pending",
              peer=getattr(exc, "peer", ""), reason=f"{type(exc).__name__}: {exc}")
    if job is not None:
        job.phase_detail = f"held until an operator fixes: {exc}"[:4000]
        ctx.state.save_send_job(job)
    unclaim = SendStatus.PENDING if job is not None and job.status is JobStatus.CLAIMED else None
    try:
        ctx.crm().update_send_request(request_id, SendRequestUpdate(status=unclaim,
                                                                    reason=HELD_NOTE.format(problem=exc)))
    except PeerError as again:  # the CRM may be the very problem; the log and the step run still tell
        log.warning("send_hold_not_noted", send=request_id, error=str(again))


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
        give_up(ctx, job, f"could not claim the request in CRM: {exc}")
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
                superseded = replace(batch, error=SUPERSEDED)  # ``earlier`` stays as it was, for _restore
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


def _advance(ctx: StepContext, job: SendJob, request: SendRequest | None, keep_alive, progress) -> None:
    crm = ctx.crm()
    if request is None:
        request = crm.get_send_request(job.request_id)
        if request is None:
            give_up(ctx, job, "the send request was deleted in CRM")
            return
    if job.status is JobStatus.CLAIMED and request.status is SendStatus.PENDING:  # the CRM claim did not happen yet
        claimed = crm.claim_send_request(request)
        if claimed is None:  # changed in CRM since it was read: left as it is, read again next run
            log.warning("send_claimed_elsewhere", send=job.request_id)
            return
        request = claimed
    if _cancelled(ctx, job, request):
        return
    report = (lambda phase: progress(job, phase)) if progress else None
    if job.status is JobStatus.CLAIMED:
        if not _precheck(ctx, job, request):
            return
        _existing = ctx.esp().find_send(send_key(job.request_id))
        if _existing is not None:  # released before (state lost, or a request reset after Sent)
            job.move(JobStatus.STARTING)
            job.esp_job_id, job.esp_send_key = str(_existing.job_id), send_key(job.request_id)
            job.phase_detail = f"already released at the ESP as job {_existing.job_id}; not sent again"
            ctx.state.save_send_job(job)
        else:
            job.move(JobStatus.RESOLVING)
            ctx.state.save_send_job(job)
    if job.status in (JobStatus.RESOLVING, JobStatus.HANDING_OVER):
        own_workspace(ctx, job)  # this disk's folder is a cache: not this attempt's -> take the send over
    if job.status is JobStatus.RESOLVING:
        _resolve(ctx, job, request, keep_alive, report)
        crashpoint("after_resolved")
        if job.status is JobStatus.FAILED:
            return
    if job.status is JobStatus.HANDING_OVER:
        work = work_folder(ctx.config, job.request_id)
        if job.path == "soap":
            hand_over_soap(ctx, job, work, keep_alive, report)
            job.move(JobStatus.STARTING)
            ctx.state.save_send_job(job)
        else:
            hand_over_files(ctx, job, work, keep_alive, report)
            job.move(JobStatus.IMPORTING)
            job.phase_detail = "waiting for the ESP to import the batch files"
            ctx.state.save_send_job(job)
            return
    if job.status is JobStatus.STARTING:
        release_checked(ctx, job, request)
        if report:
            report(job.status)


def release_checked(ctx: StepContext, job: SendJob, request: SendRequest) -> None:
    if _cancelled(ctx, job, request):
        return
    if not job.esp_job_id and job.handed_over == 0:
        fail(ctx, job, f"nobody was handed over to the ESP, so no send was started: {summary(job)}.")
        return
    release(ctx, job, request)
    if job.status is JobStatus.SENT:
        ctx.state.forget_member_keys(job.request_id)


def _cancelled(ctx: StepContext, job: SendJob, request: SendRequest) -> bool:
    """A request cancelled in CRM before its release fails here, with that reason."""
    if request.status is SendStatus.CANCELLED and not job.esp_job_id:
        give_up(ctx, job, "cancelled in CRM before it was released")
        log.info("send_cancelled", send=job.request_id)
        return True
    return False


def _precheck(ctx: StepContext, job: SendJob, request: SendRequest) -> bool:
    """Role, email and targets: refuse early with a reason a person can act on."""
    allowed = {r.casefold() for r in ctx.config.sends.allowed_roles}
    roles = ctx.crm().user_role_names(request.owner_id)
    if not allowed & {r.casefold() for r in roles}:
        fail(ctx, job, f"the request's owner ({request.owner_id}) holds none of the CRM security roles allowed "
                       f"to release sends ({', '.join(ctx.config.sends.allowed_roles)}). Give the owner one of "
                       f"them or change [sends] allowed_roles.")
        return False
    if request.email_problem:
        fail(ctx, job, request.email_problem + "; nothing was sent.")
        return False
    if not (request.email_key or ctx.config.sends.default_email_key):
        fail(ctx, job, "no ESP email is named: fill the request's email key or set [sends] default_email_key.")
        return False
    if request.invalid_targets and (ctx.config.sends.invalid_targets == "fail" or not request.targets):
        fail(ctx, job, invalid_targets_reason(request, ctx.config.sends.invalid_targets))
        return False
    if not request.targets:
        fail(ctx, job, "the request has no targets: add a marketing list, campaign, contact, lead or account.")
        return False
    if request.invalid_targets:
        log.warning("send_targets_left_out", send=job.request_id, count=len(request.invalid_targets),
                    reason="; ".join(request.invalid_targets))
    singles = [t for t in request.targets if TargetKind(t.kind) in SINGLE_KINDS]
    gone = ctx.crm().missing_records(singles) if singles else []
    if gone:  # before anything is written: not after a list's batches went to the ESP
        named = ", ".join(f"{TargetKind(t.kind).value} {t.id}" for t in gone[:MISSING_NAMED])
        more = f" and {len(gone) - MISSING_NAMED} more" if len(gone) > MISSING_NAMED else ""
        fail(ctx, job, f"the request targets {len(gone)} record(s) that do not exist (deleted?): {named}{more}; "
                       "nothing was sent. Remove them from its targets.")
        return False
    email_key = request.email_key or ctx.config.sends.default_email_key
    if find_email(ctx, email_key) is None:  # before any subscriber is written at the ESP
        where = ("the e-mail picked on the request" if request.email_name else "the request's email key"
                 if request.email_key else "[sends] default_email_key")
        fail(ctx, job, f"the ESP has no email {describe_email(request, email_key)} ({where}): pick an existing "
                       "e-mail, or name one by its customer key (Marketing Cloud: the External Key in the email's "
                       "properties).")
        return False
    check_mapping_once(ctx)  # an operator's problem: holds the request (OperatorError), see guarded()
    return True


def check_mapping(ctx: StepContext) -> None:
    """Every ``[mapping.*]`` target must be an attribute of the ESP account, before anyone is written.

    Raises ``ConfigError`` naming each bad mapping line: an operator's problem, not the request's.
    """
    problems = unknown_attribute_mappings(ctx.config, ctx.esp().profile_attributes(), ctx.config.esp.name)
    if problems:
        raise ConfigError("the attribute mapping names ESP attributes the account does not have: "
                          + "; ".join(str(p) for p in problems),
                          section=problems[0].section, key=problems[0].key, problems=problems)


def invalid_targets_reason(request: SendRequest, policy: str) -> str:
    listed = "; ".join(request.invalid_targets)
    if policy == "fail":
        rule = ("nothing was sent. Correct or remove them (or set [sends] invalid_targets = skip to send to "
                "the valid rest)")
    else:
        rule = "and no valid target is left, so nothing was sent. Correct them"
    return f"the request's targets cannot all be read: {listed}; {rule}."


def _resolve(ctx: StepContext, job: SendJob, request: SendRequest, keep_alive, report) -> None:
    work = work_folder(ctx.config, job.request_id)
    first_seq = max((b.seq for b in ctx.state.batches(job.request_id)), default=0) + 1
    background: list[BackgroundHandover | None] = []

    def early(written: int) -> None:
        """Once the send surely goes by files, hand finished batches over while resolving goes on."""
        if job.path != "files" and _choose_path(ctx, request, written, final=False) != "files":
            return
        if request.preview_would_send is not None:  # previewed: nothing handed over before the audience check
            return
        if job.path != "files":
            job.path = "files"
            with ctx.state.transaction() as conn:
                keep_alive(conn)  # fenced: a holder taken over meanwhile writes nothing
                ctx.state.save_send_job(job, conn=conn)
        if not background:
            background.append(BackgroundHandover.start(ctx, job.request_id, ensure_list(ctx, job), work, keep_alive))
        if background[0] is None:
            hand_over_files(ctx, job, work, keep_alive)
        else:
            background[0].kick()

    with SendWorkspace(work / "work.db") as workspace:
        try:
            point = Resolver(ctx, job, request, work, first_seq, keep_alive, report, early).run(workspace)
        except BaseException:
            if background and background[0] is not None:
                background[0].close()
            raise
        if background and background[0] is not None:
            background[0].finish()
        job.resolved, job.handed_over = point.resolved, 0
        job.skipped, job.skipped_by_reason = point.skipped, dict(point.skipped_by_reason)
        _count_kept(ctx, job)
        changed = audience_changed_reason(ctx, request, point)
        if changed:  # before any hand-over: back to Previewed with the audience as it is now
            hold_changed_audience(ctx, request, point, changed)
            give_up(ctx, job, changed)
            return
        job.path = "files" if job.path == "files" else _choose_path(ctx, request, point.written)
        job.move(JobStatus.HANDING_OVER)
        job.phase_detail = f"{point.written} recipients to hand over by {job.path}"
        rows = (QuarantineRow(job.request_id, *row) for row in workspace.iter_skips())
        with ctx.state.transaction() as conn:
            keep_alive(conn)  # fenced: a holder taken over meanwhile writes nothing
            ctx.state.quarantine(rows, conn=conn)
            ctx.state.save_send_job(job, conn=conn)
    log.info("send_resolved", send=job.request_id, resolved=job.resolved, skipped=job.skipped,
             to_hand_over=point.written, path=job.path, skipped_by_reason=job.skipped_by_reason)
    _report_progress(ctx, job)
    if point.written == 0:
        fail(ctx, job, f"nobody is left to send to after skipping: {summary(job)}.")


def _count_kept(ctx: StepContext, job: SendJob) -> None:
    """Rows an earlier instance already upserted (SOAP path, kept by a takeover) count as handed over."""
    reason = SkipReason.ESP_REJECTED if job.path == "soap" else SkipReason.IMPORT_ROW_ERROR
    for batch in current_batches(ctx.state, job.request_id):
        job.handed_over += batch.rows_ok
        add_skips(job, reason, batch.rows_error)


def _choose_path(ctx: StepContext, request: SendRequest, count: int, final: bool = True) -> str:
    """Files above the threshold (or forced); while resolving, "" until that is certain."""
    batching = ctx.config.batching
    if not batching.enabled:
        return "soap"
    if request.force_batching or batching.threshold == 0 or count > batching.threshold:
        return "files"
    return "soap" if final else ""


def _report_progress(ctx: StepContext, job: SendJob) -> None:
    """Counts so far on the CRM request (still Processing); best effort."""
    try:
        ctx.crm().update_send_request(
            job.request_id,
            SendRequestUpdate(resolved=job.resolved, skipped=job.skipped, skipped_by_reason=dict(job.skipped_by_reason)),
        )
    except TransientPeerError as exc:
        log.warning("send_progress_not_reported", send=job.request_id, error=str(exc))


__all__ = ["run_sends", "process_request", "Batch"]
