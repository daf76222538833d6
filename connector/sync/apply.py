"""Carrying a plan out: the peers' writes first, then ONE state transaction with what they made true.

Order, for kill -9 at any point:

1. ESP updates (``update_subscribers``) and CRM updates (``update_records``), both update-only
   and safe to repeat;
2. one transaction: the shadow rows of the writes that succeeded (and of the agreements),
   the change-log rows, the quarantine rows of the skips and failures and - with the last
   page of a table - the checkpoint (the CRM delta link).

A crash before 2 leaves the shadow where it was: the next run reads the same changes again
(the checkpoint did not move) and finds the target side already holding the new value, so
the decision is "agree" and nothing is written twice (``connector.sync.decide``). A write the
peer refused leaves its shadow rows out, so the next run tries again; it is logged as
``failed`` with the peer's message and quarantined.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import structlog

from connector.crashpoints import crashpoint
from connector.models import CrmTable, WriteResult
from connector.sync.plan import Change, Pending, Plan

log = structlog.get_logger(__name__)

QUARANTINE_REASON = "sync_skipped"
NOT_AT_ESP = "12001"
"""Marketing Cloud's error code for an update of a subscriber that does not exist."""


def apply_plan(ctx: Any, plan: Plan, esp: Any, *, checkpoint: tuple[str, str] | None, dry_run: bool,
               report: Callable[[Change], None] | None = None) -> list[Change]:
    """Write the plan (``esp``: the ESP side, ``connector.sync.esp_side``); returns every
    change-log row it made (or, dry, would make)."""
    failed: list[Change] = []
    if not dry_run:
        failed += _write(plan, plan.esp_pending, esp.write(plan.esp) if plan.esp else {}, "ESP")
        failed += _write(plan, plan.crm_pending, _crm_writes(ctx, plan), "CRM")
    done = [p for p in (*plan.esp_pending.values(), *plan.crm_pending.values())]
    changes = [*plan.changes, *(c for p in done for c in p.changes), *failed]
    if report is not None:
        for change in changes:
            report(change)
    if dry_run:
        return changes
    shadows = list(plan.shadows)
    drops = list(plan.drops)
    for key, pending in (*plan.esp_pending.items(), *plan.crm_pending.items()):
        shadows += [(key, *row) for row in pending.shadows]
        if pending.drop:
            drops.append(key)
    crashpoint("sync_after_writes")
    state = ctx.state
    with state.transaction() as conn:
        state.put_shadows(plan.table, shadows, ctx.run_id, conn=conn)
        if drops:
            state.drop_shadows(plan.table, drops, conn=conn)
        state.log_changes([_row(c, ctx.run_id) for c in changes], conn=conn)
        quarantine = [_quarantined(c, plan, ctx.run_id) for c in changes if c.direction in ("skipped", "failed")]
        if quarantine:
            state.quarantine(quarantine, conn=conn)
        if checkpoint is not None:
            state.set_meta(*checkpoint, conn=conn)
    crashpoint("sync_after_commit")
    return changes


def _crm_writes(ctx: Any, plan: Plan) -> dict[str, WriteResult]:
    if not plan.crm:
        return {}
    results = ctx.crm().update_records(CrmTable(plan.table), list(plan.crm.items()))
    return {r.key: r for r in results}


def _write(plan: Plan, pending: dict[str, Pending], results: dict[str, WriteResult], peer: str) -> list[Change]:
    """Take the records whose write failed out of ``pending``; their changes come back as ``failed``."""
    failed: list[Change] = []
    for key in list(pending):
        result = results.get(key)
        if result is not None and result.ok:
            continue
        gone = pending.pop(key)
        message = result.message if result is not None else "no result for this record"
        if peer == "ESP" and result is not None and result.code == NOT_AT_ESP:
            plan.count("no_subscriber")
            continue  # the subscriber is gone at the ESP; a full run reflects it on the record
        plan.count("failed")
        plan.count(f"to_{peer.lower()}", -sum(1 for c in gone.changes if c.rule.startswith("sync.")))
        log.warning("sync_write_failed", peer=peer.lower(), table=plan.table, record_id=key, reason=message)
        failed += [replace(c, direction="failed", note=f"{peer} refused the write: {message}"[:1000])
                   for c in gone.changes]
    return failed


def _row(change: Change, run_id: str) -> dict[str, Any]:
    return {"table": change.table, "record_id": change.record_id, "field": change.field,
            "old_value": change.old, "new_value": change.new, "direction": change.direction,
            "rule": change.rule, "source": ("sync: " + change.note)[:200] if change.note else "sync",
            "run_id": run_id}


def _quarantined(change: Change, plan: Plan, run_id: str) -> dict[str, Any]:
    return {"request_id": f"sync:{run_id}"[:64], "table": change.table, "record_id": change.record_id,
            "email": plan.emails.get(change.record_id, ""), "reason": QUARANTINE_REASON,
            "detail": f"{change.field}: {change.note} ({change.rule})"[:4000]}


def count_changes(changes: Sequence[Change]) -> dict[str, int]:
    found: dict[str, int] = {}
    for change in changes:
        found[change.direction] = found.get(change.direction, 0) + 1
    return found
