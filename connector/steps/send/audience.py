"""A previewed request's audience at send time: compared with the preview's, held when it changed too much.

After resolving, a request that was previewed (``SendRequest.preview_would_send`` set) has
its audience - the recipients it would hand over - compared with the preview's; changed by
more than ``[sends] preview_max_change``, the send stops before anything is handed over and
the request goes back to Previewed with the new counts and the reason.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import structlog

from connector.models import SendRequest, SendRequestUpdate, SendStatus
from connector.suppression import ResolveCheckpoint

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps import StepContext

log = structlog.get_logger(__name__)


def audience_change(request: SendRequest, would_send: int) -> float | None:
    """The share by which a previewed request's audience changed (None: it was never previewed)."""
    if request.preview_would_send is None:
        return None
    before = request.preview_would_send
    if before == 0:
        return 0.0 if would_send == 0 else 1.0
    return abs(would_send - before) / before


def audience_changed_reason(ctx: StepContext, request: SendRequest, point: ResolveCheckpoint) -> str:
    """Why the send must stop before its hand-over, or '': its audience (``point.written``) differs from
    the preview's by more than ``[sends] preview_max_change``."""
    change = audience_change(request, point.written)
    limit = ctx.config.sends.preview_max_change
    if change is None or change <= limit:
        return ""
    return (f"Held before anything was sent: the audience changed by {change:.0%} since the preview "
            f"({request.preview_would_send} -> {point.written} recipients), more than [sends] preview_max_change "
            f"({limit:.0%}). The preview now shows the new audience; set the request to Pending again to send "
            "to it, or Preview requested to see it afresh")


def hold_changed_audience(ctx: StepContext, request: SendRequest, point: ResolveCheckpoint, reason: str) -> None:
    """The request back to Previewed with the counts of the audience it has now, and the reason."""
    ctx.crm().update_send_request(request.id, SendRequestUpdate(
        status=SendStatus.PREVIEWED, reason=reason, preview_resolved=point.resolved, preview_would_send=point.written,
        preview_skipped_by_reason=dict(point.skipped_by_reason), previewed_on=datetime.now(timezone.utc)))
    log.warning("send_held_audience_changed", send=request.id, reason=reason)
