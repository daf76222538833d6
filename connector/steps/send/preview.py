"""Preview before send (issue 20.3): a request set to "Preview requested" is resolved as a send would be,
and nothing is sent.

The preview runs the send's own resolve phase (:class:`~connector.steps.send.resolve.Resolver`:
the same targets, mapping, de-duplication, suppression list and ESP statuses), in a scratch
workspace of its own, with a writer that counts the recipients a send would hand over and
keeps the first ``[sends] preview_sample`` of them instead of writing batch files. Nothing is
recorded in the state database (a preview interrupted is simply run again) and nothing reaches
the ESP but the status look-ups a send makes too. The result goes to the request: the counts
(``cesp_previewresolved``, ``cesp_previewwouldsend``, ``cesp_previewskippedbyreason``,
``cesp_previewedon``), the sample as ``cesp_previewrecipient`` rows, a summary in
``cesp_reason``, and the status Previewed. A request that cannot be previewed (no targets,
unreadable targets, a picked e-mail without a key or one the ESP no longer has) goes back to
Draft with the reason.

When the marketer then sets it Pending, the send compares its own audience with the
preview's (``connector.steps.send.audience``).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from connector.batchfiles import OpenBatch
from connector.errors import NotFoundError, OperatorError, PermanentPeerError, TransientPeerError
from connector.models import SendRequest, SendRequestUpdate, SendStatus, Subscriber, TargetKind
from connector.state.store import SendJob
from connector.steps.send.resolve import SINGLE_KINDS, Resolver
from connector.steps.send.turns import Interrupted
from connector.suppression import ResolveCheckpoint, SendWorkspace, read_suppression_file

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps import StepContext

log = structlog.get_logger(__name__)

NAMED = 10
"""Missing target records named one by one in a reason."""


class SampleWriter:
    """Stands in for the batch writer: counts who would be handed over, keeps the first few."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.rows = 0
        self.sample: list[Subscriber] = []

    def write(self, sub: Subscriber) -> None:
        self.rows += 1
        if len(self.sample) < self.keep:
            self.sample.append(sub)

    def checkpoint(self) -> OpenBatch:
        return OpenBatch(1, self.rows, 0)


class PreviewResolver(Resolver):
    """The send's resolver, run to its end in a scratch workspace; no batch files, no state rows."""

    def preview(self, workspace: SendWorkspace, writer: SampleWriter) -> ResolveCheckpoint:
        point = ResolveCheckpoint(open_seq=1)
        if self.config.sends.suppression_file:
            workspace.load_suppression(read_suppression_file(self.config.sends.suppression_file))
        workspace.commit(point)
        self._stream(workspace, writer, point)  # type: ignore[arg-type] - the writer's duck type
        point.done = True
        return point

    def _save_progress(self, workspace: SendWorkspace, point: ResolveCheckpoint, new_batches: bool) -> None:
        if self.progress is not None:
            self.progress("previewing")

    def _record_finished(self, workspace: SendWorkspace) -> None:
        return None


def run_previews(ctx: StepContext) -> int:
    """Preview every request in "Preview requested" (at most ``[sends] max_requests_per_poll``); how many."""
    try:
        requests = ctx.crm().requests_in_status(SendStatus.PREVIEW_REQUESTED, ctx.config.sends.max_requests_per_poll)
    except NotImplementedError:
        return 0
    done = 0
    for request in requests:
        if ctx.stopping.is_set():
            break
        job = ctx.state.get_send_job(request.id)
        if job is not None and job.in_flight:  # set to Preview requested while being sent: the send goes on
            log.warning("preview_skipped_send_in_flight", send=request.id, job_status=str(job.status))
            continue
        resource = f"send:{request.id}"  # a preview and a send of one request never overlap
        if not ctx.state.acquire_lease(resource, ctx.config.state.lease_seconds):
            continue
        try:
            with structlog.contextvars.bound_contextvars(send=request.id):
                done += preview_request(ctx, request)
        finally:
            ctx.state.release_lease(resource)
    return done


def preview_request(ctx: StepContext, request: SendRequest) -> bool:
    """Preview one request; True when the request got its preview, False when it went back to Draft
    (or the peers were not reachable: then it stays "Preview requested" for the next run)."""
    try:
        problem = preview_problem(ctx, request)
        if problem:
            back_to_draft(ctx, request, problem)
            return False
        point, writer = resolve_audience(ctx, request)
    except TransientPeerError as exc:
        log.warning("preview_delayed", send=request.id, peer=exc.peer, error=str(exc))
        return False
    except Interrupted:  # stopping: nothing was kept, the next run previews it afresh
        log.info("preview_interrupted", send=request.id)
        return False
    except OperatorError:
        raise  # credentials, TLS, the mapping: the step run reports it; the request waits
    except PermanentPeerError as exc:
        back_to_draft(ctx, request, str(exc))
        return False
    write_preview(ctx, request, point, writer)
    return True


def preview_problem(ctx: StepContext, request: SendRequest) -> str:
    """Why the request cannot be previewed (what a send's check would refuse), or ''."""
    if request.email_problem:
        return request.email_problem
    if request.invalid_targets:
        return "the request's targets cannot all be read: " + "; ".join(request.invalid_targets)
    if not request.targets:
        return ("the request has no targets: add marketing lists, contacts, leads or accounts to it (or a campaign "
                "in its targets), then request the preview again")
    singles = [t for t in request.targets if TargetKind(t.kind) in SINGLE_KINDS]
    gone = ctx.crm().missing_records(singles) if singles else []
    if gone:
        named = ", ".join(f"{TargetKind(t.kind).value} {t.id}" for t in gone[:NAMED])
        return f"the request targets {len(gone)} record(s) that do not exist (deleted?): {named}"
    key = request.email_key or ctx.config.sends.default_email_key
    if not key:
        return "no ESP e-mail is picked: choose the request's e-mail"
    if ctx.esp().find_email(key) is None:
        return f"the ESP has no e-mail {describe_email(request, key)} any more: pick another e-mail"
    return ""


def describe_email(request: SendRequest, key: str) -> str:
    """The e-mail as a marketer knows it: its name and key when picked from the list, else the key."""
    return f"{request.email_name!r} (key {key!r})" if request.email_name else f"with the key {key!r}"


def resolve_audience(ctx: StepContext, request: SendRequest) -> tuple[ResolveCheckpoint, SampleWriter]:
    """The send's resolve phase over ``request`` in a scratch folder (removed afterwards)."""
    folder = Path(ctx.config.service.data_dir) / "previews" / request.id
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        job = SendJob(request_id=request.id, name=request.name, campaign_id=request.campaign_id or "")
        resolver = PreviewResolver(ctx, job, request, folder, 1, lambda conn=None: None)
        writer = SampleWriter(ctx.config.sends.preview_sample)
        with SendWorkspace(folder / "work.db") as workspace:
            point = resolver.preview(workspace, writer)
        return point, writer
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_preview(ctx: StepContext, request: SendRequest, point: ResolveCheckpoint, writer: SampleWriter) -> None:
    crm = ctx.crm()
    failed = [r for r in crm.replace_preview_sample(request.id, writer.sample) if not r.ok]
    skipped = dict(point.skipped_by_reason)
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "none"
    summary = (f"Preview: {point.resolved} recipient(s) resolved, {writer.rows} would be sent, {point.skipped} "
               f"skipped ({reasons}); nothing was sent. Set the request to Pending to send it.")
    if failed:
        summary += f" {len(failed)} sample row(s) could not be written: {failed[0].message}"
    crm.update_send_request(request.id, SendRequestUpdate(
        status=SendStatus.PREVIEWED, reason=summary, preview_resolved=point.resolved, preview_would_send=writer.rows,
        preview_skipped_by_reason=skipped, previewed_on=datetime.now(timezone.utc)))
    log.info("send_previewed", send=request.id, resolved=point.resolved, count=writer.rows, skipped=point.skipped)


def back_to_draft(ctx: StepContext, request: SendRequest, problem: str) -> None:
    log.warning("preview_refused", send=request.id, reason=problem)
    try:
        ctx.crm().update_send_request(request.id, SendRequestUpdate(
            status=SendStatus.DRAFT, reason=f"No preview: {problem}. Nothing was sent."))
    except NotFoundError:  # deleted meanwhile
        log.info("preview_request_gone", send=request.id)
