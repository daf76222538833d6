"""The CRM side of one page: campaign responses, bounce details, opt-outs, and their failures.

Each write is idempotent at the CRM. Per-item failures come back as ``WriteResult``; a
transient one leaves the event for the next run (at most ``rules.MAX_ATTEMPTS`` runs), a
permanent one (or one out of attempts) is parked in the quarantine. Writes go in slices of
``[crm] batch_size`` records: a slice whose call still fails after the client's retries
fails only its own records (code ``transient``, retried next run without using up an
attempt), the others' progress is kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from connector.crashpoints import crashpoint
from connector.errors import TransientPeerError
from connector.models import (
    BounceUpdate,
    CampaignResponse,
    CrmTable,
    EventType,
    RecordRef,
    TrackingEvent,
    TrackingMode,
    WriteResult,
)
from connector.steps.tracking import rules
from connector.steps.tracking.rules import (
    CHANNEL_EMAIL,
    PERMANENT_CODES,
    RESPONDER_TYPES,
    RESPONSE_CODES,
    TRANSIENT_CODE,
    bounce_type,
    tracking_key,
)
from connector.steps.tracking.records import RecordCache
from connector.steps.tracking.store import short_hash

log = structlog.get_logger(__name__)


class EffectsMixin:
    """Methods of ``EventTypeRun`` that write to the staging table and the CRM."""

    ctx: Any
    cfg: Any
    mode: TrackingMode
    etype: EventType
    stats: Any
    tracked: dict
    floor: Any
    attempts: dict[str, int]
    _attempts_dirty: bool
    _key_of: dict[int, str]
    _warned_campaign: set[str]
    records: RecordCache
    crm: Any
    state: Any
    failed_calls: int
    call_errors: list[str]
    _hold: Callable[..., set[str]]

    def _write_effects(self, events: list[TrackingEvent]) -> set[str]:
        """Staging, responses, bounces, opt-outs; returns the seen keys of events to retry."""
        needs_records = self.mode in (TrackingMode.RESPONDERS, TrackingMode.ALL) or self.etype in (
            EventType.BOUNCE,
            EventType.UNSUB,
        )
        refs: dict[str, RecordRef] = {}
        held: set[str] = set()
        if needs_records:
            keys = {e.subscriber_key for e in events}
            refs, unresolved = self.records.lookup_in_slices(keys, self.crm.find_records, rules.LOOKUP_SLICE,
                                                             self._lookup_failed, self._crm_call_succeeded)
            if unresolved:  # their events wait for the next run; the others go on
                waiting = [e for e in events if e.subscriber_key in unresolved]
                held = self._hold(waiting, "their CRM record look-up failed")
                events = [e for e in events if e.subscriber_key not in unresolved]
            self.stats.unknown_subscribers += len(keys) - len(unresolved) - len(refs)
        if not events:
            return held
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
        return failed | held

    def _lookup_failed(self, exc: TransientPeerError) -> None:
        log.warning("tracking_lookup_deferred", error=str(exc),
                    reason="the look-up failed after its retries; its events are retried next run")
        self._crm_call_failed(exc)

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
        results = self._write_slices(self.crm.create_campaign_responses, list(responses.values()),
                                     lambda r: r.tracking_key, "campaign response")
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
        kind = event.event_type
        if kind is EventType.CLICK:
            detail = event.url
        elif kind is EventType.BOUNCE:
            detail = " ".join(p for p in (event.bounce_category, event.smtp_code, event.smtp_reason) if p)
        elif kind is EventType.UNSUB:
            detail = event.reason
        else:
            detail = ""
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
        latest: dict[str, BounceUpdate] = {}  # record id -> its newest bounce on this page
        groups: dict[str, list[TrackingEvent]] = defaultdict(list)
        for event in events:
            ref = refs.get(event.subscriber_key)
            if ref is None or ref.table not in (CrmTable.CONTACT, CrmTable.LEAD):
                continue
            groups[ref.id].append(event)
            held = latest.get(ref.id)
            if held is None or event.event_time >= held.bounced_on:
                kind = bounce_type(event.bounce_category, event.bounce_type)
                latest[ref.id] = BounceUpdate(ref, event.event_time, kind, event.job_id)
        if not latest:
            return set()
        results = self._write_slices(self.crm.set_bounces, list(latest.values()), lambda u: u.ref.id,
                                     "bounce details")
        self.stats.bounces += sum(1 for r in results if r.ok)
        return self._failures(results, groups, "bounce details")

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
        results = self._write_slices(self.crm.set_opt_outs, list(records.values()), lambda r: r.id, "opt-out")
        self.stats.opt_outs += sum(1 for r in results if r.ok)
        return self._failures(results, groups, "opt-out")

    def _write_slices(self, write: Callable[[Sequence[Any]], list[WriteResult]], items: list[Any],
                      key: Callable[[Any], str], what: str) -> list[WriteResult]:
        """One CRM bulk write per ``[crm] batch_size`` items; a failed call fails only its slice."""
        size = max(1, int(self.ctx.config.crm.batch_size))
        results: list[WriteResult] = []
        for start in range(0, len(items), size):
            part = items[start:start + size]
            try:
                results += write(part)
            except TransientPeerError as exc:
                log.warning("tracking_crm_write_deferred", what=what, count=len(part), error=str(exc),
                            reason="the call failed after its retries; these records are retried next run")
                self._crm_call_failed(exc)
                results += [WriteResult(key(item), False, str(exc)[:500], TRANSIENT_CODE) for item in part]
            else:
                self._crm_call_succeeded()
        return results

    def _crm_call_succeeded(self) -> None:
        self.failed_calls = 0  # "in a row": a call that works resets the count

    def _crm_call_failed(self, exc: TransientPeerError) -> None:
        """Count a CRM call that failed after its retries; past ``MAX_FAILED_CALLS`` in a row, stop."""
        self.failed_calls += 1
        self.call_errors.append(str(exc))
        if self.failed_calls >= rules.MAX_FAILED_CALLS:
            raise exc

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
            if result.code != TRANSIENT_CODE and self._attempt(events):
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
            short = short_hash(self._key_of[id(event)])
            tries = self.attempts.get(short, 0) + 1
            self.attempts[short] = tries
            exhausted = exhausted or tries >= rules.MAX_ATTEMPTS
        self._attempts_dirty = True
        if exhausted:
            for event in events:
                self.attempts.pop(short_hash(self._key_of[id(event)]), None)
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
