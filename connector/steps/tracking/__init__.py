"""The tracking step: ESP events -> send counts, campaign responses, contact updates, staging.

Per ESP account and event type (a stream), under the lease ``tracking:<account>:<type>``;
with ``[tracking] workers`` > 1 that many streams run at once, each in a thread of the
step's process-lifetime pool (``connector.steps.workers``) with its own adapters, so a
slow stream holds up only itself. The streams of a run share one CRM record cache
(``records``: a recipient is looked up once a run). Their counts are written to CRM once
all are done:

1. read events with EventDate > watermark - overlap (first run: now - initial lookback),
   page by page (2,500 events a page; a helper thread retrieves the next page while
   this one is written, never more than a few pages ahead);
2. keep the events of sends this connector released (unless ``only_connector_sends`` is
   off) and drop the ones already processed (the seen-event keys in the state database);
3. write their effects at the peers, each idempotent: staging rows (unique natural key),
   campaign responses (tracking key ``<job>:<subscriber>:<type>``), bounce details and
   opt-outs (setting a value twice is harmless);
4. then, in ONE state transaction: the seen keys of the events whose effects all
   succeeded, the per-send counters they add (first opens / clicks wait in
   ``firsts_pending``), and - with the last page - the pending first opens / clicks
   merged and counted, and the watermark.

Mode ``aggregate`` pulls only bounce and unsubscribe events (their record effects are
owed in every mode) and takes the other counts from each send's Send counters, one
Retrieve per send (``counters``).

Exactly once: a crash anywhere before step 4 commits leaves the keys unseen, so the
next run redoes the page (the peers ignore what they already have); after it, the keys
make the re-read of the overlap a no-op. The watermark is written only after the last
page, because Marketing Cloud does not promise EventDate order across pages: a
watermark taken from page 1 could pass over an older event still on page 2.

CRM partial failures: an event whose CRM write failed is not marked seen and not
counted, and the watermark is held just below the earliest such event, so the next run
reads it again and retries it. Writes go in slices of ``[crm] batch_size``: a slice whose
call fails (after the client's retries) fails only its own events; a page whose CRM
look-up fails is held whole the same way, and the next pages go on. After
``rules.MAX_FAILED_CALLS`` failed calls in a row the event type stops for this run. A
failure the CRM calls permanent (record deleted, table
without bounce columns) is not retried: it is logged and recorded in the quarantine.
"""

from __future__ import annotations

import structlog

from connector.errors import PeerError, StateError
from connector.models import EventType, TrackingMode
from connector.steps import StepContext, StepOutcome
from connector.steps.tracking.counters import COUNTER_EVENT_TYPES, read_counters
from connector.steps.tracking.pages import with_lookahead
from connector.steps.tracking.pull import EventTypeRun, RunStats, Shared
from connector.steps.tracking.records import RecordCache
from connector.steps.tracking.rules import (
    bounce_type,
    crm_counts,
    seen_key,
    tracking_key,
)
from connector.steps.tracking.store import prune, push_counts
from connector.steps.workers import in_workers

__all__ = ["bounce_type", "crm_counts", "run_tracking", "seen_key", "tracking_key", "with_lookahead"]

log = structlog.get_logger(__name__)


def run_tracking(ctx: StepContext) -> StepOutcome:
    """Pull every configured event type once; see the module docstring."""
    cfg = ctx.config.tracking
    mode = TrackingMode(cfg.mode)
    if mode is TrackingMode.NONE:
        log.info("tracking_skipped", reason="[tracking] mode = none")
        return StepOutcome(message="tracking mode none: nothing pulled")
    account = ctx.config.esp.name
    types = [EventType(name) for name in cfg.event_types]
    if mode is TrackingMode.AGGREGATE:  # the other counts come from the Send counters
        types = [etype for etype in types if etype in COUNTER_EVENT_TYPES]
    if min(cfg.workers, len(types)) <= 1:
        stats, shared = RunStats(), Shared()
        problems = [p for etype in types for p in _stream(ctx, account, etype, mode, stats, shared)]
    else:  # one stream per thread, each with its own lease and stats (merged after); one record cache
        records = RecordCache()
        runs = [(etype, RunStats(), Shared(records=records)) for etype in types]
        found = in_workers("tracking", cfg.workers, lambda r: _stream(ctx, account, r[0], mode, r[1], r[2]), runs)
        problems = [p for stream in found for p in stream]
        stats, shared = _merged(runs)
    counters = read_counters(ctx, account, problems) if mode is TrackingMode.AGGREGATE else None
    push_counts(ctx, account, shared.touched, problems, counters)
    prune(ctx)
    message = f"{stats.new} new events of {stats.events} read"
    if stats.retry_later:
        message += f"; {stats.retry_later} left for the next run (CRM write or look-up failed)"
    if problems:
        message += "; " + " | ".join(problems)[:1000]
    return StepOutcome(ok=not problems, processed=stats.new, message=message, details=stats.as_dict())


def _stream(
    ctx: StepContext, account: str, etype: EventType, mode: TrackingMode, stats: RunStats, shared: Shared
) -> list[str]:
    """One (account, event type) stream under its lease; the problems to report."""
    if ctx.stopping.is_set():
        return []
    name = etype.value
    errors_before = len(shared.call_errors)
    try:
        with structlog.contextvars.bound_contextvars(step="tracking", account=account, event_type=name):
            _run_type_leased(ctx, account, etype, mode, stats, shared)
    except (PeerError, StateError) as exc:
        log.warning("tracking_type_failed", event_type=name, error=str(exc), kind=type(exc).__name__)
        return [f"{name}: {exc}"]
    failed_calls = shared.call_errors[errors_before:]
    if failed_calls:  # the run went on; say so, the events wait for the next run
        return [f"{name}: {len(failed_calls)} CRM call(s) failed after their retries, "
                f"their events are left for the next run: {failed_calls[0]}"]
    return []


def _merged(runs: list[tuple[EventType, RunStats, Shared]]) -> tuple[RunStats, Shared]:
    """The stats and touched sends of parallel streams, as one sequential run would have them."""
    stats, shared = RunStats(), Shared()
    for _, part, own in runs:
        for key, value in part.as_dict().items():
            if key == "by_type":
                for etype, n in value.items():
                    stats.by_type[etype] = stats.by_type.get(etype, 0) + n
            else:
                setattr(stats, key, getattr(stats, key) + value)
        shared.touched.update(own.touched)
        shared.call_errors += own.call_errors
    return stats, shared


def _run_type_leased(
    ctx: StepContext, account: str, etype: EventType, mode: TrackingMode, stats: RunStats, shared: Shared
) -> None:
    resource = f"tracking:{account}:{etype.value}"
    seconds = ctx.config.state.lease_seconds
    if not ctx.state.acquire_lease(resource, seconds):
        log.info("tracking_lease_busy", resource=resource)
        return
    try:
        EventTypeRun(ctx, account, etype, mode, stats, shared).run()
    finally:
        ctx.state.release_lease(resource)
