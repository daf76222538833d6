"""The tracking step's reads and writes of the state database beyond the StateStore basics."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connector.errors import NotFoundError, PeerError, StateError
from connector.models import SendRequestUpdate
from connector.steps import StepContext
from connector.steps.tracking.counters import FROM_EVENTS
from connector.steps.tracking.rules import SEEN_RETENTION_DAYS, crm_counts

log = structlog.get_logger(__name__)


PENDING_COUNTS_META = "tracking_counts_pending:{account}"
WRITTEN_COUNTERS_META = "tracking_counters_written:{account}"


def push_counts(ctx: StepContext, account: str, touched: dict, problems: list[str],
                counters: dict[str, dict[str, int]] | None = None) -> None:
    """Write the totals of every send whose counts changed to its CRM send request.

    Sends whose write failed are remembered in the state database and written by the
    next run even if no new event comes for them. ``counters`` (aggregate mode: job id ->
    counts from the ESP's Send counters, see ``counters``) are written for each send whose
    counters changed since they were last written.
    """
    meta_key = PENDING_COUNTS_META.format(account=account)
    pending = set(load_json(ctx.state.get_meta(meta_key), []))
    written = _changed_counters(ctx, account, counters, touched)
    if pending:
        for send in ctx.state.tracked_sends(account):
            if send.job_id in pending and send.job_id not in touched:
                touched[send.job_id] = send
    if not touched:
        return
    failed: list[str] = []
    crm = ctx.crm()
    for job, send in sorted(touched.items()):
        totals = crm_counts(ctx.state.send_counts(job)) if counters is None else _aggregate(ctx, job, counters)
        try:
            crm.update_send_request(send.request_id, SendRequestUpdate(counts=totals))
            if counters is not None and job in counters:
                written[job] = _digest(counters[job])
        except NotFoundError:
            log.warning("tracking_send_deleted", job_id=job, request_id=send.request_id)
            ctx.state.stop_tracking(job, f"CRM send request {send.request_id} was deleted")
        except PeerError as exc:
            log.warning("tracking_counts_not_written", job_id=job, request_id=send.request_id, error=str(exc))
            problems.append(f"counts of send {send.request_id}: {exc}")
            failed.append(job)
    if failed or pending:
        ctx.state.set_meta(meta_key, json.dumps(sorted(failed)))
    if counters is not None:
        ctx.state.set_meta(WRITTEN_COUNTERS_META.format(account=account), json.dumps(written, sort_keys=True))


def _changed_counters(ctx: StepContext, account: str, counters: dict | None, touched: dict) -> dict[str, str]:
    """Add the sends whose counters differ from the last written ones to ``touched``; the digests."""
    if counters is None:
        return {}
    written = load_json(ctx.state.get_meta(WRITTEN_COUNTERS_META.format(account=account)), {})
    for send in ctx.state.tracked_sends(account):
        if send.job_id in counters and written.get(send.job_id) != _digest(counters[send.job_id]):
            touched.setdefault(send.job_id, send)
    return written


def _aggregate(ctx: StepContext, job: str, counters: dict[str, dict[str, int]]) -> dict[str, int]:
    if job in counters:
        return counters[job]
    events = ctx.state.send_counts(job)  # the Send is not retrievable yet: what the pulled events say
    return {name: int(events.get(name, 0)) for name in FROM_EVENTS}


def _digest(totals: dict[str, int]) -> str:
    return short_hash(json.dumps(totals, sort_keys=True))


def short_hash(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]


def load_json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def prune(ctx: StepContext) -> None:
    keep_days = max(SEEN_RETENTION_DAYS, ctx.config.tracking.initial_lookback_days + 1)
    try:
        pruned = ctx.state.prune_seen_events(now(ctx.state) - timedelta(days=keep_days))
    except StateError as exc:
        log.warning("tracking_prune_failed", error=str(exc))
        return
    if pruned:
        log.info("tracking_seen_keys_pruned", keys=pruned, older_than_days=keep_days)


def now(state: Any) -> datetime:
    now = getattr(state, "now", None)
    return now() if callable(now) else datetime.now(UTC)
