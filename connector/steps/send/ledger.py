"""A send's books, as every phase keeps them: the current attempt's batches and the counts.

``resolved = handed_over + skipped`` once the send is released; the skips counted while
handing over (``HANDOVER_SKIPS``) are the ESP's, the rest were decided while resolving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.models import SkipReason
from connector.state.records import Batch, SendJob

if TYPE_CHECKING:  # pragma: no cover
    from connector.state.store import StateStore

HANDOVER_SKIPS = (SkipReason.ESP_REJECTED.value, SkipReason.IMPORT_ROW_ERROR.value)
"""Skips counted while handing over (the rest were decided while resolving)."""


def current_batches(state: StateStore, request_id: str) -> list[Batch]:
    """The batches of this attempt (a retried request keeps its earlier batches, superseded;
    a takeover sets aside the batches that were only on the other instance's disk)."""
    return [b for b in state.batches(request_id) if not b.set_aside]


def add_skips(job: SendJob, reason: SkipReason, count: int) -> None:
    if count:
        job.skipped += count
        job.skipped_by_reason[reason.value] = job.skipped_by_reason.get(reason.value, 0) + count


def skipped_before_handover(job: SendJob) -> int:
    return job.skipped - sum(job.skipped_by_reason.get(reason, 0) for reason in HANDOVER_SKIPS)


def summary(job: SendJob) -> str:
    text = f"{job.handed_over} of {job.resolved} recipients handed over"
    if job.skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(job.skipped_by_reason.items()))
        text += f"; {job.skipped} skipped ({reasons}); details in the connector's quarantine table"
    return text
