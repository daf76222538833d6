"""Tracking mode ``aggregate``: a send's counts from the ESP's Send counters, one Retrieve per send.

Marketing Cloud keeps a summary on each Send (NumberSent, NumberDelivered, UniqueOpens,
UniqueClicks, HardBounces, SoftBounces, OtherBounces, Unsubscribes, NumberExcluded ...),
so the counts a CRM send request shows need one Retrieve per send, not a page per
2,500 sent, open and click events. Aggregate mode still pulls the bounce and
unsubscribe events: their record effects (bounce details, do-not-bulk-email) are owed
whatever the mode, and they give the bounce categories the counters lump together.

What goes on the send request in this mode: sent, delivered, unique opens, unique clicks
and not-sent (NumberExcluded) from the counters; unsubscribes and the five bounce kinds
from the pulled events. Total opens and clicks are not written: the Send has no such
counters (use ``responders`` or ``all`` for them).
"""

from __future__ import annotations

from typing import Any, Mapping

import structlog

from connector.errors import PeerError
from connector.models import EventType
from connector.steps.tracking.rules import BOUNCE_COUNTERS

log = structlog.get_logger(__name__)

COUNTER_EVENT_TYPES = frozenset({EventType.BOUNCE, EventType.UNSUB})
"""The event types aggregate mode still pulls."""

FROM_COUNTERS = {"sent": "sent", "delivered": "delivered", "unique_opens": "unique_opens",
                 "unique_clicks": "unique_clicks", "excluded": "notsent"}
"""Send counter (as ``EspSend.counts`` names it) -> CRM count name."""

FROM_EVENTS = ("unsubscribes", *BOUNCE_COUNTERS.values())


def counter_totals(counters: Mapping[str, int], event_counts: Mapping[str, int]) -> dict[str, int]:
    """The CRM counts of one send: its Send counters plus the counts of its pulled events."""
    out = {crm: int(counters[name]) for name, crm in FROM_COUNTERS.items() if name in counters}
    out.update({name: int(event_counts.get(name, 0)) for name in FROM_EVENTS})
    return out


def read_counters(ctx: Any, account: str, problems: list[str]) -> dict[str, dict[str, int]]:
    """job id -> CRM counts, for every active tracked send of a CRM request whose Send the ESP shows."""
    esp = ctx.esp()
    out: dict[str, dict[str, int]] = {}
    for send in ctx.state.tracked_sends(account):
        if ctx.stopping.is_set():
            break
        if not send.request_id:
            continue
        try:
            summary = esp.send_summary(send.job_id)
        except PeerError as exc:
            log.warning("tracking_counters_failed", job_id=send.job_id, error=str(exc))
            problems.append(f"counters of ESP send {send.job_id}: {exc}")
            continue
        if summary is None:  # a send is retrievable only a while after its start
            log.info("tracking_counters_deferred", job_id=send.job_id, reason="the ESP does not show the send yet")
            continue
        out[send.job_id] = counter_totals(summary.counts, ctx.state.send_counts(send.job_id))
    log.info("tracking_counters_read", sends=len(out))
    return out
