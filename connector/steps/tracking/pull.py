"""One pass over one event type of one ESP account (see the package docstring)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from connector.crashpoints import crashpoint
from connector.errors import TransientPeerError
from connector.models import EventType, TrackingEvent, TrackingMode
from connector.state.tracking import ordered_key
from connector.steps import StepContext
from connector.steps.tracking.effects import EffectsMixin
from connector.steps.tracking.records import RecordCache
from connector.steps.readahead import ReadAhead
from connector.steps.tracking.pages import with_lookahead
from connector.steps.tracking.rules import (
    COUNTER_OF_TYPE,
    MAX_RETRY_ENTRIES,
    ONE_TICK,
    count_events,
    seen_key,
    unique_key,
)
from connector.steps.tracking.store import load_json, now, short_hash

log = structlog.get_logger(__name__)


@dataclass
class Shared:
    """What the event types of one run share."""

    touched: dict[str, Any] = field(default_factory=dict)  # job id -> TrackedSend with new counts
    checked: set[str] = field(default_factory=set)  # jobs whose CRM send request exists
    records: RecordCache = field(default_factory=RecordCache)  # subscriber key -> CRM record
    call_errors: list[str] = field(default_factory=list)  # CRM calls that failed after their retries


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


class EventTypeRun(EffectsMixin):
    """One pass over one event type of one account."""

    def __init__(
        self, ctx: StepContext, account: str, etype: EventType, mode: TrackingMode, stats: RunStats, shared: Shared
    ) -> None:
        self.ctx, self.account, self.etype, self.mode = ctx, account, etype, mode
        self.cfg = ctx.config.tracking
        self.state = ctx.state
        self.stats = stats
        self.touched = shared.touched
        self.checked = shared.checked
        self.records = shared.records
        self.call_errors = shared.call_errors
        self.tracked = {t.job_id: t for t in self.state.tracked_sends(account)}
        self.previous: datetime | None = None
        self.pages = 0
        self.max_seen: datetime | None = None
        self.floor: datetime | None = None  # earliest event left for a retry
        self._crm = None
        self._warned_campaign: set[str] = set()
        self._key_of: dict[int, str] = {}  # id(event) -> seen key, for the page in hand
        self._stored: dict[str, bytes] = {}  # seen key -> its stored (time-ordered) form, for the page in hand
        self.legacy_before: datetime | None = None  # events older may be marked in the pre-0005 table
        # first opens / clicks: their keys wait in firsts_pending, merged and counted with the last page
        self.firsts_counter = f"unique_{COUNTER_OF_TYPE[etype]}" if etype in (EventType.OPEN, EventType.CLICK) else ""
        self.resource = f"tracking:{account}:{etype.value}"
        self.lease_lost = False
        self._retry_meta = f"tracking_retries:{account}:{etype.value}"
        self.attempts: dict[str, int] = {}  # short hash of a seen key -> failed runs so far
        self._attempts_dirty = False
        self.failed_calls = 0  # CRM calls in a row that failed after their retries

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
            since = now(self.state) - timedelta(days=self.cfg.initial_lookback_days)
        added = [t.added_at for t in self.tracked.values()]
        if self.cfg.only_connector_sends and added and all(a is not None for a in added):
            since = max(since, min(added) - timedelta(days=self.cfg.initial_lookback_days))
        return since

    def run(self) -> None:
        if self.cfg.only_connector_sends and not self.tracked:
            log.debug("tracking_nothing_to_track")
            return
        since = self.since()
        self.attempts = load_json(self.state.get_meta(self._retry_meta), {})
        self.legacy_before = self.state.legacy_seen_before()
        self._merge_firsts()  # what a run stopped part-way left (its pages are committed)
        log.info("tracking_pull_started", since=since.isoformat(), sends=len(self.tracked))
        # the ESP retrieves the next page in a helper thread while this one writes the current
        # page, so a pull takes about max(retrieve, write) instead of their sum
        pages = self.ctx.esp().iter_event_pages(self.etype, since)
        with ReadAhead(pages, 1, name="tracking-prefetch") as chunks:
            for (page,), last in with_lookahead(chunks):
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
        wanted: dict[str, TrackingEvent] = {}
        stored: dict[str, bytes] = {}
        for event in page:
            if self._wanted(event):
                key = seen_key(self.account, event)
                wanted[key] = event
                stored[key] = ordered_key(event.event_time, key)
        self._stored = stored
        fresh_keys = self._unseen(wanted)
        fresh = [e for k, e in wanted.items() if k in fresh_keys]
        self._key_of = {id(e): k for k, e in wanted.items() if k in fresh_keys}
        failed: set[str] = set()
        if fresh:
            try:
                fresh = self._drop_deleted_sends(fresh)
                failed = self._write_effects(fresh)
            except TransientPeerError as exc:  # a look-up failed even after the retries
                failed = self._hold(fresh, "a CRM call failed", exc)
        done = {self._key_of[id(e)]: e for e in fresh if self._key_of[id(e)] not in failed}
        self._commit(done, last)

    def _hold(self, events: list[TrackingEvent], why: str, exc: TransientPeerError | None = None) -> set[str]:
        """Leave these new events for the next run (their seen keys); the others go on.

        They are not marked seen or counted, and the watermark is held below the earliest,
        so the next run reads them again. With ``exc`` (the call that failed for all of
        them) the failure counts towards ``MAX_FAILED_CALLS``: past it the CRM looks down
        and the event type stops here (what was done stays done).
        """
        held = {self._key_of[id(e)] for e in events}
        earliest = min(e.event_time for e in events)
        if self.floor is None or earliest < self.floor:
            self.floor = earliest
        self.stats.retry_later += len(held)
        log.warning("tracking_events_held", events=len(held), first=str(earliest), reason=why,
                    error=str(exc) if exc else "", hint="the next run retries them")
        if exc is not None:
            self._crm_call_failed(exc)
        return held

    def _wanted(self, event: TrackingEvent) -> bool:
        if event.job_id in self.tracked:
            return True
        return not self.cfg.only_connector_sends

    def _unseen(self, wanted: dict[str, TrackingEvent]) -> set[str]:
        """Keys not yet processed (a read; marking happens in the page's transaction)."""
        if not wanted:
            return set()
        natural = {self._stored[k]: k for k in wanted}
        unseen = self.state.unseen_events(natural, legacy=self._legacy(natural, wanted))
        return {natural[k] for k in unseen}

    def _legacy(self, natural: dict[bytes, str], events: dict[str, TrackingEvent]) -> dict[bytes, str] | None:
        """The keys of events that may have been marked before migration 0005 (old enough)."""
        before = self.legacy_before
        if before is None:
            return None
        return {k: n for k, n in natural.items() if events[n].event_time < before}

    def _drop_deleted_sends(self, events: list[TrackingEvent]) -> list[TrackingEvent]:
        jobs = {e.job_id for e in events if e.job_id in self.tracked} - self.checked
        for job in sorted(jobs):
            send = self.tracked[job]
            if not send.request_id or self.crm.send_request_exists(send.request_id):
                self.checked.add(job)
                continue
            reason = f"CRM send request {send.request_id} was deleted; tracking of ESP job {job} stopped"
            log.warning("tracking_send_deleted", job_id=job, request_id=send.request_id, send=send.name)
            self.state.stop_tracking(job, reason)
            del self.tracked[job]
            self.touched.pop(job, None)
        return [e for e in events if self._wanted(e)]

    # -- the state transaction ---------------------------------------------------------

    def _commit(self, done: dict[str, TrackingEvent], last: bool) -> None:
        with self.state.transaction() as conn:
            natural = {self._stored[k]: k for k in done}
            new_keys = self.state.mark_events_seen(natural, conn, legacy=self._legacy(natural, done))
            new = [e for k, e in done.items() if self._stored[k] in new_keys]
            self._add_counts(new, conn)
            self._save_attempts(done, conn)
            if not last:  # one commit per page: the lease is extended with the page's state
                self.lease_lost = not self.state.extend_lease(
                    self.resource, self.ctx.config.state.lease_seconds, conn=conn
                )
            if last:
                self._merge_firsts(conn)
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

    def _merge_firsts(self, conn: Any = None) -> None:
        """Count the first opens / clicks pending for this stream (this run's, or a stopped run's)."""
        if not self.firsts_counter:
            return
        for job, new in self.state.merge_firsts_pending(self.firsts_counter, conn).items():
            if new and job in self.tracked:
                self.touched[job] = self.tracked[job]

    def _save_attempts(self, done: dict[str, TrackingEvent], conn: Any) -> None:
        if self.attempts:
            for key in done:
                if self.attempts.pop(short_hash(key), None) is not None:
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
            if self.firsts_counter:  # counted when merged (``_merge_firsts``), ordered by the send's added_at
                added = self.tracked[job].added_at
                keys = {ordered_key(added, k): k for k in {unique_key(self.account, e) for e in events}}
                before = self.legacy_before
                legacy = keys if before is not None and added < before else None
                self.state.add_firsts_pending(job, self.firsts_counter, keys, conn, legacy=legacy)
            self.state.add_send_counts(job, counts, conn)
            self.touched[job] = self.tracked[job]
