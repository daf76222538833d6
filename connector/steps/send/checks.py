"""What is checked before a send is worked on, and what happens when the operator must act.

* ``esp_ready``: before a Pending request is claimed, the ESP is asked for its e-mail
  (and the attribute mapping checked), once per step run (``_EspProbe``): a credential,
  TLS or configuration problem then holds the request while it is still Pending.
* ``precheck``: the claimed request's owner, e-mail and targets, refused early with a
  reason a person can act on.
* ``hold``: an operator's problem (``OperatorError``) fails nothing; the request and its
  job stay where they are, with a note on the request, until the problem is fixed.
"""

from __future__ import annotations

import structlog

from connector.errors import ConfigError, OperatorError, PeerError, TransientPeerError
from connector.mapping import unknown_attribute_mappings
from connector.models import SendRequest, SendRequestUpdate, SendStatus, TargetKind
from connector.state.lifecycle import JobStatus
from connector.state.records import SendJob
from connector.steps import StepContext
from connector.steps.send.preview import describe_email
from connector.steps.send.release import fail
from connector.steps.send.resolve import SINGLE_KINDS

log = structlog.get_logger(__name__)

MISSING_NAMED = 10
"""Targets whose record does not exist named one by one on the request; the rest are counted."""


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


def new_probe(ctx: StepContext) -> _EspProbe:
    global _PROBE
    _PROBE = _EspProbe(ctx.run_id)
    return _PROBE


def _probe(ctx: StepContext) -> _EspProbe:
    probe = _PROBE
    return probe if ctx.run_id and probe.run_id == ctx.run_id else new_probe(ctx)


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
    then is one whose CRM claim is still to be made, which the next run makes (``SendAttempt.ready``).
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



def precheck(ctx: StepContext, job: SendJob, request: SendRequest) -> bool:
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
    check_mapping_once(ctx)  # an operator's problem: holds the request (OperatorError), see SendAttempt.run_phase()
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


