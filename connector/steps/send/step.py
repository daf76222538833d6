"""The sends and imports steps: which send requests get worked on in one run, and the tally.

* ``run_sends`` (every ``[sends] poll_minutes``): resume the attempts in flight, then
  claim the requests Pending in CRM, each carried as far as it goes now
  (``attempt.process_request``: claim, check, resolve, hand over, release);
* ``run_imports`` (every ``[imports] poll_seconds``): poll the imports of the sends that
  go by files, and release a send when its last file is in (``attempt.poll_send``).

Both drive the same ``SendAttempt`` (``connector.steps.send.attempt``), each request in a
thread of the step's process-lifetime pool (``connector.steps.workers``), under its lease
``send:<id>``; ``StepTally`` is what they share: one request's trouble is reported, never
raised into the others', and the run's outcome counts the jobs by status.
"""

from __future__ import annotations

from typing import Callable

import structlog

from connector.errors import OperatorError, TransientPeerError
from connector.models import SendRequest
from connector.state.lifecycle import JobStatus
from connector.state.records import SendJob
from connector.steps import StepContext, StepOutcome
from connector.steps.send.attempt import SENDS_STEP, poll_send, process_request
from connector.steps.send.checks import new_probe
from connector.steps.send.preview import run_previews
from connector.steps.send.turns import turn
from connector.steps.workers import in_workers

log = structlog.get_logger(__name__)

RESUMABLE = tuple(s for s in JobStatus if s in SENDS_STEP)
"""Job statuses the send step carries on with; ``importing`` belongs to the imports step."""


class StepTally:
    """What the two steps share in one run: each request's trouble caught and told, the jobs counted."""

    def __init__(self) -> None:
        self.outcome = StepOutcome()
        self.held: list[str] = []

    def guard(self, request_id: str, work: Callable[[], SendJob | None]) -> SendJob | None:
        try:
            return work()
        except OperatorError as exc:  # logged and noted on the request by hold(); the step run reports it
            self.outcome.ok = False
            self.held.append(f"{request_id}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one request's trouble must not stop the others
            log.exception("send_request_error", send=request_id, error=f"{type(exc).__name__}: {exc}")
            self.outcome.ok = False
        return None

    def count(self, jobs: list[SendJob | None]) -> None:
        for job in jobs:
            if job is not None:
                self.outcome.processed += 1
                self.outcome.details[job.status] = self.outcome.details.get(job.status, 0) + 1

    def finish(self, done: str) -> StepOutcome:
        outcome = self.outcome
        outcome.message = f"{outcome.processed} {done}"
        if self.held:
            outcome.details["held"] = len(self.held)
            outcome.message += (f"; {len(self.held)} held until an operator fixes the connector's configuration or "
                                f"credentials (the requests stay as they are and resume then): {self.held[0]}")
        return outcome  # a send that fails for a reason in CRM is reported there, not a failed step run


def run_sends(ctx: StepContext) -> StepOutcome:
    """One poll: resume the jobs in flight, then claim and process new pending requests.

    With ``[sends] workers`` > 1, several requests are worked on at once, each in a
    thread of a pool that lives as long as the process (``connector.steps.workers``:
    each thread keeps its own adapters); the lease on each request keeps any two
    threads apart. Each request gets turns of ``[sends] time_slice_seconds`` (``connector.steps.send.turns``): one
    past its turn pauses at a checkpoint and waits for the next round, so a long one
    does not hold up the others; each round also takes in requests that became Pending.
    """
    tally = StepTally()
    new_probe(ctx)  # a run asks the ESP afresh (even under a reused run id)
    try:
        previewed = run_previews(ctx)  # "Preview requested": resolved, nothing sent
        if previewed:
            tally.outcome.details["previewed"] = previewed
    except OperatorError as exc:
        tally.outcome.ok, tally.outcome.message = False, f"previews held: {exc}"
    work: list[tuple[str, SendRequest | None]] = [(job.request_id, None) for job in ctx.state.send_jobs(RESUMABLE)]
    seen = {rid for rid, _ in work}
    last: dict[str, SendJob | None] = {}

    def one(item: tuple[str, SendRequest | None]) -> tuple[SendJob | None, bool]:
        if ctx.stopping.is_set():
            return None, False
        request_id, pending = item
        with turn(ctx.config.sends.time_slice_seconds) as current:
            job = tally.guard(request_id, lambda: process_request(ctx, request_id, pending=pending))
        return job, bool(current and current.used)

    rounds, room = 0, ctx.config.sends.max_requests_per_poll  # new requests taken in this run, at most
    while not ctx.stopping.is_set():
        fresh = _newly_pending(ctx, seen, room, first=rounds == 0)
        room -= len(fresh)
        work += fresh
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
    tally.count(list(last.values()))
    if rounds > 1:
        tally.outcome.details["rounds"] = rounds
    return tally.finish("send request(s) worked on")


def run_imports(ctx: StepContext) -> StepOutcome:
    """Poll every importing send once; with ``[imports] workers`` > 1 several at once.

    Each send is polled under its own lease ``send:<id>`` in a thread of the step's
    process-lifetime pool (``connector.steps.workers``), so a send whose ESP or CRM
    calls are slow holds up only its own thread, not the other sends' polls.
    """
    tally = StepTally()

    def one(request_id: str) -> SendJob | None:
        if ctx.stopping.is_set():
            return None
        return tally.guard(request_id, lambda: poll_send(ctx, request_id))

    work = [job.request_id for job in ctx.state.send_jobs([JobStatus.IMPORTING])]
    tally.count(list(in_workers("import", ctx.config.imports.workers, one, work)))
    return tally.finish("importing send(s) polled")


def _newly_pending(ctx: StepContext, seen: set[str], room: int, first: bool) -> list[tuple[str, SendRequest | None]]:
    """Up to ``room`` Pending requests not yet worked on in this run (after the first round: best effort).

    The run as a whole takes at most ``[sends] max_requests_per_poll`` new requests: later rounds
    only fill what the earlier ones left of it.
    """
    if room <= 0:
        return []
    limit = ctx.config.sends.max_requests_per_poll
    try:
        fresh = [(r.id, r) for r in ctx.crm().pending_send_requests(limit=limit) if r.id not in seen][:room]
    except TransientPeerError as exc:
        if first:
            raise
        log.warning("send_pending_not_listed", error=str(exc))
        return []
    seen.update(rid for rid, _ in fresh)
    return fresh
