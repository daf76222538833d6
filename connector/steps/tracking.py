"""The tracking step: ESP events -> send counts, campaign responses, contact updates, staging.

Per ESP account and event type, under the lease ``tracking:<account>:<type>``:

1. read events with EventDate > watermark - overlap (first run: now - initial lookback),
   page by page (2,500 events at most in memory, plus one page read ahead);
2. keep the events of sends this connector released (unless ``only_connector_sends`` is
   off) and drop the ones already processed (the seen-event keys in the state database);
3. write their effects at the peers, each idempotent: staging rows (unique natural key),
   campaign responses (tracking key ``<job>:<subscriber>:<type>``), bounce details and
   opt-outs (setting a value twice is harmless);
4. then, in ONE state transaction: the seen keys of the events whose effects all
   succeeded, the per-send counters they add, and - with the last page - the watermark.

Exactly once: a crash anywhere before step 4 commits leaves the keys unseen, so the
next run redoes the page (the peers ignore what they already have); after it, the keys
make the re-read of the overlap a no-op. The watermark is written only after the last
page, because Marketing Cloud does not promise EventDate order across pages: a
watermark taken from page 1 could pass over an older event still on page 2.

CRM partial failures: an event whose CRM write failed is not marked seen and not
counted, and the watermark is held just below the earliest such event, so the next run
reads it again and retries it. A failure the CRM calls permanent (record deleted, table
without bounce columns) is not retried: it is logged and recorded in the quarantine.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import queue
import sys
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import structlog

from connector.crashpoints import crashpoint
from connector.errors import NotFoundError, PeerError, StateError
from connector.models import (
    BounceType,
    BounceUpdate,
    CampaignResponse,
    CrmTable,
    EventType,
    RecordRef,
    SendRequestUpdate,
    TrackingEvent,
    TrackingMode,
    WriteResult,
)
from connector.steps import StepContext, StepOutcome

log = structlog.get_logger(__name__)

T = TypeVar("T")

RESPONSE_CODES = {  # Dataverse campaignresponse.responsecode
    EventType.OPEN: (1, "Opened"),  # Interested
    EventType.CLICK: (1, "Clicked"),  # Interested
    EventType.BOUNCE: (4, "Bounced"),  # Error
    EventType.UNSUB: (3, "Unsubscribed"),  # Do Not Send Marketing Materials
    EventType.SENT: (1, "Sent"),
}
CHANNEL_EMAIL = 1  # campaignresponse.channeltypecode Email
RESPONDER_TYPES = frozenset({EventType.OPEN, EventType.CLICK, EventType.BOUNCE, EventType.UNSUB})
PERMANENT_CODES = frozenset({"not_found", "unsupported_table", "0x80040217", "404", "400", "403"})
"""WriteResult codes that repeating the write will not fix (record gone, wrong table, refused)."""

COUNTER_OF_TYPE = {
    EventType.SENT: "sent",
    EventType.OPEN: "opens",
    EventType.CLICK: "clicks",
    EventType.UNSUB: "unsubscribes",
    EventType.NOT_SENT: "notsent",
}
BOUNCE_COUNTERS = {b: f"{b.value}_bounces" for b in BounceType}
ONE_TICK = timedelta(microseconds=1)
MAX_ATTEMPTS = 24
"""Runs an event's failing CRM write is retried (a day at the default hourly pull) before it
is parked in the quarantine, so one bad record cannot hold the watermark back for ever."""
MAX_RETRY_ENTRIES = 10_000
SEEN_RETENTION_DAYS = 180
"""Seen-event keys (and first-open/first-click keys) older than this are pruned. Only the
overlap behind the watermark is ever re-read, so this is a wide margin; a subscriber who
first opens a send again after it would count as a unique opener a second time."""


# -- pure helpers ------------------------------------------------------------------------


def bounce_type(category: str, kind: str = "") -> BounceType:
    """Normalize Marketing Cloud's BounceCategory / BounceType to the CRM's five types."""
    text = f"{category} {kind}".lower()
    for word, result in (
        ("hard", BounceType.HARD),
        ("soft", BounceType.SOFT),
        ("block", BounceType.BLOCK),
        ("technical", BounceType.TECHNICAL),
        ("other", BounceType.TECHNICAL),
    ):
        if word in text:
            return result
    return BounceType.UNKNOWN


def seen_key(account: str, event: TrackingEvent) -> str:
    """The natural key of an event, as marked seen in the state database."""
    when = event.event_time
    if when.tzinfo is not timezone.utc:
        when = when.astimezone(timezone.utc)
    return "\x1f".join(("ev", account, event.job_id, event.subscriber_key, event.event_type.value,
                         when.isoformat(timespec="microseconds"), event.url))


def unique_key(account: str, event: TrackingEvent) -> str:
    """Key of 'this subscriber did this at least once' (unique opens and clicks)."""
    return "\x1f".join(("uq", account, event.job_id, event.subscriber_key, event.event_type.value))


def tracking_key(event: TrackingEvent) -> str:
    """Campaign-response key: one response per recipient per kind (at most 100 characters)."""
    key = f"{event.job_id}:{event.subscriber_key}:{event.event_type.value}"
    if len(key) <= 100:
        return key
    digest = hashlib.sha256(event.subscriber_key.encode("utf-8")).hexdigest()[:40]
    return f"{event.job_id}:{digest}:{event.event_type.value}"[:100]


def count_events(events: Iterable[TrackingEvent]) -> dict[str, int]:
    """Counter deltas for a set of new events (unique counts are added by the caller)."""
    counts: Counter[str] = Counter()
    for event in events:
        if event.event_type is EventType.BOUNCE:
            counts[BOUNCE_COUNTERS[bounce_type(event.bounce_category, event.bounce_type)]] += 1
        else:
            counts[COUNTER_OF_TYPE[event.event_type]] += 1
    return dict(counts)


def crm_counts(totals: dict[str, int]) -> dict[str, int]:
    """What goes on the CRM send request; delivered = sent - bounces."""
    out = {name: int(totals.get(name, 0)) for name in _CRM_COUNTERS}
    bounces = sum(out[name] for name in BOUNCE_COUNTERS.values())
    out["delivered"] = max(0, out["sent"] - bounces)
    return out


_CRM_COUNTERS = (
    "sent", "opens", "unique_opens", "clicks", "unique_clicks", "unsubscribes", "notsent",
    *BOUNCE_COUNTERS.values(),
)


def with_lookahead(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Yield (item, is_last), reading one item ahead."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for following in it:
        yield current, False
        current = following
    yield current, True


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a helper thread, at most ``depth`` items ahead.

    The ESP retrieves the next page while this thread writes the current one, so a pull
    takes about max(retrieve, write) instead of their sum. Errors surface here, in order.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), name="tracking-prefetch",
                              daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        # leaving normally: let the helper close the ESP iterator; on an error or a
        # second SIGTERM do not wait for an ESP call in flight (the thread is a daemon)
        thread.join(timeout=0.5 if sys.exc_info()[0] is not None else 60)


class _Probe(Exception):
    """Rolls back the read-only use of ``mark_events_seen``."""


# -- the step ----------------------------------------------------------------------------


@dataclass
class Shared:
    """What the event types of one run share."""

    touched: dict[str, Any] = field(default_factory=dict)  # job id -> TrackedSend with new counts
    checked: set[str] = field(default_factory=set)  # jobs whose CRM send request exists


@dataclass
class RunStats:
    pages: int = 0
    events: int = 0
    new: int = 0
    staged: int = 0
    responses: int = 0
    bounces: int = 0
    opt_outs: int = 0
    retry_later: int = 0
    given_up: int = 0
    unknown_subscribers: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_tracking(ctx: StepContext) -> StepOutcome:
    """Pull every configured event type once; see the module docstring."""
    cfg = ctx.config.tracking
    mode = TrackingMode(cfg.mode)
    if mode is TrackingMode.NONE:
        log.info("tracking_skipped", reason="[tracking] mode = none")
        return StepOutcome(message="tracking mode none: nothing pulled")
    account = ctx.config.esp.name
    stats = RunStats()
    shared = Shared()
    problems: list[str] = []
    for name in cfg.event_types:
        if ctx.stopping.is_set():
            break
        etype = EventType(name)
        try:
            with structlog.contextvars.bound_contextvars(step="tracking", account=account, event_type=name):
                _run_type_leased(ctx, account, etype, mode, stats, shared)
        except (PeerError, StateError) as exc:
            log.warning("tracking_type_failed", event_type=name, error=str(exc), kind=type(exc).__name__)
            problems.append(f"{name}: {exc}")
    _push_counts(ctx, account, shared.touched, problems)
    _prune(ctx)
    message = f"{stats.new} new events of {stats.events} read"
    if problems:
        message += "; " + " | ".join(problems)[:1000]
    return StepOutcome(ok=not problems, processed=stats.new, message=message, details=stats.as_dict())


def _run_type_leased(
    ctx: StepContext, account: str, etype: EventType, mode: TrackingMode, stats: RunStats, shared: "Shared"
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


class EventTypeRun:
    """One pass over one event type of one account."""

    def __init__(
        self, ctx: StepContext, account: str, etype: EventType, mode: TrackingMode, stats: RunStats, shared: "Shared"
    ) -> None:
        self.ctx, self.account, self.etype, self.mode = ctx, account, etype, mode
        self.cfg = ctx.config.tracking
        self.state = ctx.state
        self.stats = stats
        self.touched = shared.touched
        self.checked = shared.checked
        self.tracked = {t.job_id: t for t in self.state.tracked_sends(account)}
        self.previous: datetime | None = None
        self.pages = 0
        self.max_seen: datetime | None = None
        self.floor: datetime | None = None  # earliest event left for a retry
        self._crm = None
        self._warned_campaign: set[str] = set()
        self._key_of: dict[int, str] = {}  # id(event) -> seen key, for the page in hand
        self.resource = f"tracking:{account}:{etype.value}"
        self.lease_lost = False
        self._retry_meta = f"tracking_retries:{account}:{etype.value}"
        self.attempts: dict[str, int] = {}  # short hash of a seen key -> failed runs so far
        self._attempts_dirty = False

    @property
    def crm(self) -> Any:
        if self._crm is None:
            self._crm = self.ctx.crm()
        return self._crm

    def since(self) -> datetime:
        """Watermark - overlap (first time: now - lookback), bounded by the tracked sends.

        With only_connector_sends, the pull never starts more than the lookback before
        the oldest tracked send was recorded: a stale watermark (months without a
        tracked send) does not make the ESP page through months of other sends' events,
        while a send recorded late (after a crash) still gets the whole lookback.
        """
        self.previous = self.state.get_watermark(self.account, self.etype.value)
        overlap = timedelta(minutes=self.cfg.overlap_minutes)
        if self.previous is not None:
            since = self.previous - overlap
        else:
            since = _now(self.state) - timedelta(days=self.cfg.initial_lookback_days)
        added = [t.added_at for t in self.tracked.values()]
        if self.cfg.only_connector_sends and added and all(a is not None for a in added):
            since = max(since, min(added) - timedelta(days=self.cfg.initial_lookback_days))
        return since

    def run(self) -> None:
        if self.cfg.only_connector_sends and not self.tracked:
            log.debug("tracking_nothing_to_track")
            return
        since = self.since()
        self.attempts = _load_json(self.state.get_meta(self._retry_meta), {})
        log.info("tracking_pull_started", since=since.isoformat(), sends=len(self.tracked))
        pages = self.ctx.esp().iter_event_pages(self.etype, since)
        for page, last in with_lookahead(prefetch(pages)):
            if self.ctx.stopping.is_set():
                log.info("tracking_stopped_early", reason="shutdown; the watermark stays, the next run resumes")
                return
            self.stats.pages += 1
            self.pages += 1
            self.stats.events += len(page)
            self._page(page, last)
            crashpoint("tracking_after_page")
            if self.lease_lost:
                log.warning("tracking_lease_lost", resource=self.resource,
                            hint="another instance took over this event type; this run stops here")
                return

    # -- one page ----------------------------------------------------------------------

    def _page(self, page: Sequence[TrackingEvent], last: bool) -> None:
        if page:
            page_max = max(e.event_time for e in page)
            if self.max_seen is None or page_max > self.max_seen:
                self.max_seen = page_max
        wanted = {seen_key(self.account, e): e for e in page if self._wanted(e)}
        fresh_keys = self._unseen(list(wanted))
        fresh = [e for k, e in wanted.items() if k in fresh_keys]
        self._key_of = {id(e): k for k, e in wanted.items() if k in fresh_keys}
        failed: set[str] = set()
        if fresh:
            fresh = self._drop_deleted_sends(fresh)
            failed = self._write_effects(fresh)
        done = {self._key_of[id(e)]: e for e in fresh if self._key_of[id(e)] not in failed}
        self._commit(done, last)

    def _wanted(self, event: TrackingEvent) -> bool:
        if event.job_id in self.tracked:
            return True
        return not self.cfg.only_connector_sends

    def _unseen(self, keys: list[str]) -> set[str]:
        """Keys not yet processed (read only)."""
        if not keys:
            return set()
        unseen = getattr(self.state, "unseen_events", None)
        if callable(unseen):
            return set(unseen(keys))
        if hasattr(self.state, "engine"):
            return _select_unseen(self.state, keys)
        return self._unseen_by_rollback(keys)

    def _unseen_by_rollback(self, keys: list[str]) -> set[str]:
        """mark_events_seen in a transaction that is rolled back (state stores without unseen_events)."""
        result: set[str] = set()
        try:
            with self.state.transaction() as conn:
                result = self.state.mark_events_seen(keys, conn)
                raise _Probe
        except _Probe:
            pass
        return result

    def _drop_deleted_sends(self, events: list[TrackingEvent]) -> list[TrackingEvent]:
        jobs = {e.job_id for e in events if e.job_id in self.tracked} - self.checked
        for job in sorted(jobs):
            send = self.tracked[job]
            if not send.request_id or self.crm.get_send_request(send.request_id) is not None:
                self.checked.add(job)
                continue
            reason = f"CRM send request {send.request_id} was deleted; tracking of ESP job {job} stopped"
            log.warning("tracking_send_deleted", job_id=job, request_id=send.request_id, send=send.name)
            self.state.stop_tracking(job, reason)
            del self.tracked[job]
            self.touched.pop(job, None)
        return [e for e in events if self._wanted(e)]

    def _write_effects(self, events: list[TrackingEvent]) -> set[str]:
        """Staging, responses, bounces, opt-outs; returns the seen keys of events to retry."""
        needs_records = self.mode in (TrackingMode.RESPONDERS, TrackingMode.ALL) or self.etype in (
            EventType.BOUNCE,
            EventType.UNSUB,
        )
        refs: dict[str, RecordRef] = {}
        if needs_records:
            refs = self.crm.find_records(sorted({e.subscriber_key for e in events}))
            self.stats.unknown_subscribers += len({e.subscriber_key for e in events} - set(refs))
        if self.mode is TrackingMode.ALL:
            self.stats.staged += self.ctx.staging().write_events(events, refs)
            crashpoint("tracking_after_staging")
        failed: set[str] = set()
        if self.mode in (TrackingMode.RESPONDERS, TrackingMode.ALL):
            failed |= self._responses(events, refs)
        if self.etype is EventType.BOUNCE:
            failed |= self._bounces(events, refs)
        if self.etype is EventType.UNSUB:
            failed |= self._opt_outs(events, refs)
        return failed

    def _responses(self, events: list[TrackingEvent], refs: dict[str, RecordRef]) -> set[str]:
        if self.etype not in RESPONDER_TYPES and not (self.etype is EventType.SENT and self.mode is TrackingMode.ALL):
            return set()
        by_key: dict[str, list[TrackingEvent]] = defaultdict(list)
        first: dict[str, TrackingEvent] = {}  # tracking key -> earliest event of the kind
        campaigns = {job: self._campaign(job) for job in {e.job_id for e in events}}
        for event in events:
            if event.subscriber_key not in refs or not campaigns[event.job_id]:
                continue
            key = tracking_key(event)
            by_key[key].append(event)
            held = first.get(key)
            if held is None or event.event_time < held.event_time:
                first[key] = event
        responses = {
            key: self._response(e, key, refs[e.subscriber_key], campaigns[e.job_id]) for key, e in first.items()
        }
        if not responses:
            return set()
        results = self.crm.create_campaign_responses(list(responses.values()))
        self.stats.responses += sum(1 for r in results if r.ok)
        return self._failures(results, by_key, "campaign response")

    def _campaign(self, job_id: str) -> str:
        send = self.tracked.get(job_id)
        campaign = (send.campaign_id if send else "") or self.cfg.default_campaign
        if not campaign and job_id not in self._warned_campaign:
            self._warned_campaign.add(job_id)
            log.warning(
                "tracking_no_campaign",
                job_id=job_id,
                hint="the send has no campaign and [tracking] default_campaign is blank: no campaign responses",
            )
        return campaign

    def _response(self, event: TrackingEvent, key: str, ref: RecordRef, campaign: str) -> CampaignResponse:
        code, label = RESPONSE_CODES[event.event_type]
        send = self.tracked.get(event.job_id)
        name = (send.name if send else "") or f"ESP job {event.job_id}"
        detail = {
            EventType.CLICK: event.url,
            EventType.BOUNCE: " ".join(p for p in (event.bounce_category, event.smtp_code, event.smtp_reason) if p),
            EventType.UNSUB: event.reason,
        }.get(event.event_type, "")
        return CampaignResponse(
            tracking_key=key,
            campaign_id=campaign,
            customer=ref,
            subject=f"{label}: {name}"[:200],
            received_on=event.event_time,
            response_code=code,
            channel_code=CHANNEL_EMAIL,
            closed=self.cfg.responses_closed,
            email=event.email,
            description=detail[:2000],
        )

    def _bounces(self, events: list[TrackingEvent], refs: dict[str, RecordRef]) -> set[str]:
        latest: dict[str, tuple[BounceUpdate, list[TrackingEvent]]] = {}
        for event in events:
            ref = refs.get(event.subscriber_key)
            if ref is None or ref.table not in (CrmTable.CONTACT, CrmTable.LEAD):
                continue
            update = BounceUpdate(ref, event.event_time, bounce_type(event.bounce_category, event.bounce_type), event.job_id)
            held = latest.get(ref.id)
            group = (held[1] if held else []) + [event]
            if held is None or update.bounced_on >= held[0].bounced_on:
                latest[ref.id] = (update, group)
            else:
                latest[ref.id] = (held[0], group)
        if not latest:
            return set()
        results = self.crm.set_bounces([u for u, _ in latest.values()])
        self.stats.bounces += sum(1 for r in results if r.ok)
        return self._failures(results, {k: g for k, (_, g) in latest.items()}, "bounce details")

    def _opt_outs(self, events: list[TrackingEvent], refs: dict[str, RecordRef]) -> set[str]:
        groups: dict[str, list[TrackingEvent]] = defaultdict(list)
        records: dict[str, RecordRef] = {}
        for event in events:
            ref = refs.get(event.subscriber_key)
            if ref is not None:
                groups[ref.id].append(event)
                records[ref.id] = ref
        if not records:
            return set()
        results = self.crm.set_opt_outs(list(records.values()))
        self.stats.opt_outs += sum(1 for r in results if r.ok)
        return self._failures(results, groups, "opt-out")

    def _failures(self, results: list[WriteResult], groups: dict[str, list[TrackingEvent]], what: str) -> set[str]:
        """Seen keys of events whose write failed and is worth retrying; permanent ones are parked."""
        retry: set[str] = set()
        parked = []
        for result in results:
            if result.ok:
                continue
            events = groups.get(result.key, [])
            if result.code in PERMANENT_CODES:
                parked.append((result, events))
                continue
            if self._attempt(events):
                parked.append((result, events))
                continue
            for event in events:
                retry.add(self._key_of[id(event)])
                if self.floor is None or event.event_time < self.floor:
                    self.floor = event.event_time
        if retry:
            self.stats.retry_later += len(retry)
            log.warning("tracking_crm_write_retry", what=what, events=len(retry), first=str(self.floor))
        for result, events in parked:
            self.stats.given_up += len(events)
            log.warning("tracking_crm_write_failed", what=what, key=result.key, code=result.code, error=result.message)
        if parked:
            self._quarantine(parked, what)
        return retry

    def _attempt(self, events: list[TrackingEvent]) -> bool:
        """Count one more failed run for these events; True once they have used up MAX_ATTEMPTS."""
        exhausted = False
        for event in events:
            short = _short(self._key_of[id(event)])
            tries = self.attempts.get(short, 0) + 1
            self.attempts[short] = tries
            exhausted = exhausted or tries >= MAX_ATTEMPTS
        self._attempts_dirty = True
        if exhausted:
            for event in events:
                self.attempts.pop(_short(self._key_of[id(event)]), None)
        return exhausted

    def _quarantine(self, parked: list[tuple[WriteResult, list[TrackingEvent]]], what: str) -> None:
        from connector.state.records import QuarantineRow

        rows = []
        for result, events in parked:
            for event in events[:1]:
                send = self.tracked.get(event.job_id)
                rows.append(
                    QuarantineRow(
                        request_id=send.request_id if send else f"esp-job:{event.job_id}",
                        table="",
                        record_id=event.subscriber_key,
                        email=event.email,
                        reason=f"tracking_{event.event_type.value}_{what.replace(' ', '_')}",
                        detail=f"{result.code}: {result.message}"[:1000],
                    )
                )
        self.state.quarantine(rows)

    # -- the state transaction ---------------------------------------------------------

    def _commit(self, done: dict[str, TrackingEvent], last: bool) -> None:
        with self.state.transaction() as conn:
            new_keys = self.state.mark_events_seen(list(done), conn)
            new = [e for k, e in done.items() if k in new_keys]
            self._add_counts(new, conn)
            self._save_attempts(done, conn)
            if not last:  # one commit per page: the lease is extended with the page's state
                self.lease_lost = not self.state.extend_lease(
                    self.resource, self.ctx.config.state.lease_seconds, conn=conn
                )
            if last and self.max_seen is not None:
                watermark = self.max_seen if self.previous is None else max(self.previous, self.max_seen)
                if self.floor is not None:
                    watermark = min(watermark, self.floor - ONE_TICK)
                self.state.set_watermark(self.account, self.etype.value, watermark, conn)
        self.stats.new += len(new)
        self.stats.by_type[self.etype.value] = self.stats.by_type.get(self.etype.value, 0) + len(new)
        if last:
            log.info("tracking_pull_finished", pages=self.pages, max_event_time=str(self.max_seen),
                     retry_later=self.stats.retry_later)

    def _save_attempts(self, done: dict[str, TrackingEvent], conn: Any) -> None:
        if self.attempts:
            for key in done:
                if self.attempts.pop(_short(key), None) is not None:
                    self._attempts_dirty = True
        if not self._attempts_dirty:
            return
        if len(self.attempts) > MAX_RETRY_ENTRIES:  # keep the newest entries (dicts keep insertion order)
            self.attempts = dict(list(self.attempts.items())[-MAX_RETRY_ENTRIES:])
        self.state.set_meta(self._retry_meta, json.dumps(self.attempts), conn)
        self._attempts_dirty = False

    def _add_counts(self, new: list[TrackingEvent], conn: Any) -> None:
        by_job: dict[str, list[TrackingEvent]] = defaultdict(list)
        for event in new:
            if event.job_id in self.tracked and self.tracked[event.job_id].request_id:
                by_job[event.job_id].append(event)
        for job, events in by_job.items():
            counts = count_events(events)
            if self.etype in (EventType.OPEN, EventType.CLICK):
                firsts = self.state.mark_events_seen({unique_key(self.account, e) for e in events}, conn)
                counts[f"unique_{COUNTER_OF_TYPE[self.etype]}"] = len(firsts)
            self.state.add_send_counts(job, counts, conn)
            self.touched[job] = self.tracked[job]


PENDING_COUNTS_META = "tracking_counts_pending:{account}"


def _push_counts(ctx: StepContext, account: str, touched: dict, problems: list[str]) -> None:
    """Write the totals of every send whose counts changed to its CRM send request.

    Sends whose write failed are remembered in the state database and written by the
    next run even if no new event comes for them.
    """
    meta_key = PENDING_COUNTS_META.format(account=account)
    pending = set(_load_json(ctx.state.get_meta(meta_key), []))
    if pending:
        for send in ctx.state.tracked_sends(account):
            if send.job_id in pending and send.job_id not in touched:
                touched[send.job_id] = send
    if not touched:
        return
    failed: list[str] = []
    crm = ctx.crm()
    for job, send in sorted(touched.items()):
        totals = crm_counts(ctx.state.send_counts(job))
        try:
            crm.update_send_request(send.request_id, SendRequestUpdate(counts=totals))
        except NotFoundError:
            log.warning("tracking_send_deleted", job_id=job, request_id=send.request_id)
            ctx.state.stop_tracking(job, f"CRM send request {send.request_id} was deleted")
        except PeerError as exc:
            log.warning("tracking_counts_not_written", job_id=job, request_id=send.request_id, error=str(exc))
            problems.append(f"counts of send {send.request_id}: {exc}")
            failed.append(job)
    if failed or pending:
        ctx.state.set_meta(meta_key, json.dumps(sorted(failed)))


def _short(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]  # noqa: S324 - a lookup key, not security


def _load_json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _select_unseen(state: Any, keys: list[str]) -> set[str]:
    """Read-only twin of ``StateStore.mark_events_seen``: which keys are not stored yet."""
    import sqlalchemy as sa

    from connector.state.schema import seen_events
    from connector.state.tracking import event_key_hash

    by_hash = {event_key_hash(k): k for k in keys}
    hashes = list(by_hash)
    found: set[str] = set()
    try:
        with state.engine.connect() as conn:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                query = sa.select(seen_events.c.key_hash).where(seen_events.c.key_hash.in_(chunk))
                found.update(conn.execute(query).scalars())
    except sa.exc.SQLAlchemyError as exc:
        raise StateError(f"state database: reading seen tracking events failed: {exc}") from exc
    return {k for h, k in by_hash.items() if h not in found}


def _prune(ctx: StepContext) -> None:
    keep_days = max(SEEN_RETENTION_DAYS, ctx.config.tracking.initial_lookback_days + 1)
    try:
        pruned = ctx.state.prune_seen_events(_now(ctx.state) - timedelta(days=keep_days))
    except StateError as exc:
        log.warning("tracking_prune_failed", error=str(exc))
        return
    if pruned:
        log.info("tracking_seen_keys_pruned", keys=pruned, older_than_days=keep_days)


def _now(state: Any) -> datetime:
    now = getattr(state, "now", None)
    return now() if callable(now) else datetime.now(timezone.utc)
