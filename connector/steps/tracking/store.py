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
from connector.steps.tracking.rules import SEEN_RETENTION_DAYS, crm_counts

log = structlog.get_logger(__name__)


PENDING_COUNTS_META = "tracking_counts_pending:{account}"


def push_counts(ctx: StepContext, account: str, touched: dict, problems: list[str]) -> None:
    """Write the totals of every send whose counts changed to its CRM send request.

    Sends whose write failed are remembered in the state database and written by the
    next run even if no new event comes for them.
    """
    meta_key = PENDING_COUNTS_META.format(account=account)
    pending = set(load_json(ctx.state.get_meta(meta_key), []))
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
