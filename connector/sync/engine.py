"""One sync run: the ESP's changes, then each table's CRM changes matched with them, then the rest.

1. **ESP side.** Subscribers (or a data extension's rows, ``connector.sync.esp_side``)
   modified since the watermark minus ``[sync] overlap_minutes`` (a full run, or the first:
   all of them) are read page by page into the run's scratch (``connector.sync.scratch``,
   local disk).
2. **CRM side, per table** (``[sync] workers`` tables at once). Change tracking from the
   table's delta link (a full run, the first run, or an expired link: the whole table, and
   a new link), page by page; each page is matched with the scratch by record id (the
   subscriber key) and with the shadow, planned (``connector.sync.plan``) and carried out
   (``connector.sync.apply``); the last page's transaction stores the new delta link.
3. **The rest of the ESP side**: subscribers the ESP changed whose record CRM did not. A
   record the shadow knows is planned with CRM unchanged; one it does not know is looked up
   in CRM (differential runs; in a full run it has no CRM record in a synced table).
4. The ESP watermark (the newest modified date read) is stored, and old change-log rows pruned.

Everything runs under the lease ``sync:<esp account>``, extended page by page; a dry run
(``--dry-run`` or ``[sync] test_mode``) takes no lease and writes nothing anywhere but its
report.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import structlog

from connector.errors import NotFoundError, PermanentPeerError, StateError
from connector.models import CrmTable, EspSubscriberState, SendTarget, TargetKind
from connector.steps import StepContext, StepOutcome
from connector.steps.workers import in_workers
from connector.sync.apply import apply_plan
from connector.sync.esp_side import esp_side
from connector.sync.plan import Change, Plan, Planner
from connector.sync.report import Report
from connector.sync.scratch import Scratch

log = structlog.get_logger(__name__)

LEFTOVER_PAGE = 500


class Stopped(Exception):
    """The service is stopping: the run ends between two pages (every page is committed or not at all)."""


@dataclass
class SyncOptions:
    full: bool = False
    dry_run: bool = False
    tables: tuple[str, ...] = ()  # () = every table with rules
    report_path: Path | None = None
    progress: Callable[[str, dict[str, int]], None] | None = None


@dataclass
class RunTotals:
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, counts: dict[str, int]) -> None:
        with self.lock:
            for key, n in counts.items():
                self.counts[key] = self.counts.get(key, 0) + n


def delta_key(table: str) -> str:
    return f"sync:delta:{table}"


def watermark_key(account: str) -> str:
    return f"sync:esp:{account}"


def run_sync(ctx: StepContext, options: SyncOptions | None = None) -> StepOutcome:
    """The scheduled step (``[sync]`` settings) and ``connector sync`` (``options``)."""
    options = options or SyncOptions()
    config = ctx.config
    rules = {t: r for t, r in config.sync_rules.items() if r and (not options.tables or t in options.tables)}
    if not rules:
        return StepOutcome(message="no [sync.<table>] rules: nothing to sync")
    dry = options.dry_run or config.sync.test_mode
    account = config.esp.name
    resource = f"sync:{account}"
    if not dry and not ctx.state.acquire_lease(resource, config.state.lease_seconds):
        return StepOutcome(message=f"another process holds {resource}: this run skipped")
    report = Report.open(options.report_path or _report_path(config, ctx.run_id)) if dry else None
    try:
        with structlog.contextvars.bound_contextvars(step="sync", esp_account=account):
            run = SyncRun(ctx, options, rules, dry, resource, report)
            totals = run.run()
    finally:
        if report is not None:
            report.close()
        if not dry:
            ctx.state.release_lease(resource)
    counts = totals.counts
    message = _summary(counts, dry)
    if report is not None:
        message += f"; report: {report.path}"
        counts["report_rows"] = report.rows
    return StepOutcome(ok=not counts.get("failed"), processed=counts.get("to_esp", 0) + counts.get("to_crm", 0),
                       message=message, details=counts)


class SyncRun:
    def __init__(self, ctx: StepContext, options: SyncOptions, rules: dict[str, tuple], dry: bool,
                 resource: str, report: Report | None) -> None:
        self.ctx = ctx
        self.options = options
        self.rules = rules
        self.dry = dry
        self.resource = resource
        self.report = report
        self.totals = RunTotals()
        self.config = ctx.config.sync
        self.planners: dict[str, Planner] = {}
        self.esp_complete = False

    # -- the whole run ------------------------------------------------------------
    def run(self) -> RunTotals:
        crm = self.ctx.crm()
        self.side = esp_side(self.ctx)
        held = self.config.esp_held_column if self.side.reflects_status else ""
        for table, rules in self.rules.items():
            self.planners[table] = Planner(table, rules, self.config.conflict_rule(table),
                                           crm.column_definitions(CrmTable(table)), self.config.crm_deleted, held,
                                           tuple(self.config.synced_list_keys))
        folder = self.ctx.config.service.data_dir / "sync-scratch"
        try:
            with Scratch(folder) as scratch:
                newest = self.read_esp(scratch)
                tables = list(self.planners)
                list(in_workers("sync", min(self.config.workers, len(tables)), lambda t: self.crm_table(t, scratch),
                                tables))
                self.leftovers(scratch)
        except Stopped:
            log.info("sync_stopped", reason="the service is stopping; the next run resumes from the checkpoints")
            self.totals.add({"interrupted": 1})
            return self.totals
        if not self.dry:
            state = self.ctx.state
            if newest is not None:
                state.set_meta(watermark_key(self.ctx.config.esp.name), newest.isoformat())
            kept = state.prune_changes(state.now() - timedelta(days=self.config.change_log_keep_days))
            if kept:
                log.info("sync_change_log_pruned", count=kept)
        return self.totals

    def keep_lease(self) -> None:
        """Between pages: stop when the service stops; keep the lease (or stop when it was lost)."""
        if self.ctx.stopping.is_set():
            raise Stopped()
        if self.dry:
            return
        if not self.ctx.state.extend_lease(self.resource, self.ctx.config.state.lease_seconds):
            raise StateError(f"the lease {self.resource} was lost (another process took it over); "
                             "this run stops, the next one resumes from the checkpoints")

    # -- 1. the ESP side ----------------------------------------------------------
    def read_esp(self, scratch: Scratch) -> datetime | None:
        state = self.ctx.state
        mark = None if self.options.full else state.get_meta(watermark_key(self.ctx.config.esp.name))
        since = None if mark is None else datetime.fromisoformat(mark) - timedelta(minutes=self.config.overlap_minutes)
        self.esp_complete = mark is None
        attributes = list(dict.fromkeys(a for p in self.planners.values() for a in p.esp_attributes))
        newest = datetime.fromisoformat(mark) if mark else None
        for page in self.side.pages(since, attributes):
            scratch.add(page)
            self.totals.add({"esp_read": len(page)})
            for sub in page:
                newest = sub.modified if newest is None or sub.modified > newest else newest
            self.progress("esp")
            self.keep_lease()
        log.info("sync_esp_read", count=self.totals.counts.get("esp_read", 0),
                 since=since.isoformat() if since else "", full=self.esp_complete)
        return newest

    # -- 2. one table's CRM side ---------------------------------------------------
    def crm_table(self, table: str, scratch: Scratch) -> None:
        with structlog.contextvars.bound_contextvars(table=table):
            link = None if self.options.full else self.ctx.state.get_meta(delta_key(table))
            try:
                self._crm_pages(table, scratch, link)
            except PermanentPeerError as exc:
                if link is None or getattr(exc, "code", "") != "delta_expired":
                    raise
                log.warning("sync_delta_expired", reason=str(exc), action="full resync of the table")
                self.totals.add({"resyncs": 1})
                self._crm_pages(table, scratch, None)

    def _crm_pages(self, table: str, scratch: Scratch, link: str | None) -> None:
        planner = self.planners[table]
        state = self.ctx.state
        for rows, deleted, next_link in self.ctx.crm().iter_changes(CrmTable(table), planner.crm_columns, link):
            pk = f"{table}id"
            ids = [str(r[pk]) for r in rows if r.get(pk)]
            subscribers = scratch.take(ids)
            shadows = state.shadows(table, ids + list(deleted))
            plan = Plan(table)
            for row in rows:
                record_id = str(row.get(pk) or "")
                if record_id:
                    planner.record(plan, record_id, row, subscribers.get(record_id), shadows.get(record_id, {}),
                                   esp_complete=self.esp_complete)
            for record_id in deleted:
                planner.deleted(plan, record_id, shadows.get(record_id, {}), "deleted in CRM")
            plan.count("crm_read", len(rows) + len(deleted))
            checkpoint = (delta_key(table), next_link) if next_link else None
            self.finish(plan, checkpoint)

    # -- 3. what only the ESP changed -------------------------------------------------
    def leftovers(self, scratch: Scratch) -> None:
        for page in scratch.unused(LEFTOVER_PAGE):
            keys = [s.subscriber_key for s in page]
            tables = self.ctx.state.shadow_tables(keys)
            by_key = {s.subscriber_key: s for s in page}
            grouped: dict[str, list[str]] = {}
            unknown = []
            for key in keys:
                table = tables.get(key)
                if table in self.planners:
                    grouped.setdefault(table, []).append(key)
                elif table is None:
                    unknown.append(key)
            for table, ids in grouped.items():
                self.esp_only(table, ids, by_key)
            if unknown and not self.esp_complete:
                self.unknown_subscribers(unknown, by_key)
            else:
                self.totals.add({"esp_only": len(unknown)})

    def esp_only(self, table: str, ids: list[str], by_key: dict[str, EspSubscriberState],
                 rows: dict[str, dict] | None = None) -> None:
        planner = self.planners[table]
        shadows = self.ctx.state.shadows(table, ids)
        incomplete = [i for i in ids if rows is None and any(r.crm_column not in shadows.get(i, {})
                                                              for r in planner.rules)]
        if incomplete:  # a rule the shadow does not know yet: CRM's value is needed, not assumed
            rows = {**self._crm_rows(table, incomplete), **(rows or {})}
        plan = Plan(table)
        for record_id in ids:
            row = (rows or {}).get(record_id)
            if record_id in incomplete and row is None:
                plan.count("esp_only")  # the record is gone from CRM (or inactive)
                continue
            planner.record(plan, record_id, row, by_key[record_id], shadows.get(record_id, {}), esp_complete=False)
        self.finish(plan, None)

    def unknown_subscribers(self, keys: list[str], by_key: dict[str, EspSubscriberState]) -> None:
        refs = self.ctx.crm().find_records(keys)
        grouped: dict[str, list[str]] = {}
        for key in keys:
            ref = refs.get(key)
            if ref is not None and CrmTable(ref.table).value in self.planners:
                grouped.setdefault(CrmTable(ref.table).value, []).append(key)
            else:
                self.totals.add({"esp_only": 1})
        for table, ids in grouped.items():
            self.esp_only(table, ids, by_key, self._crm_rows(table, ids))

    def _crm_rows(self, table: str, ids: list[str]) -> dict[str, dict]:
        planner = self.planners[table]
        targets = [SendTarget(TargetKind(table), i) for i in ids]
        try:
            found = self.ctx.crm().iter_record_targets(targets, {CrmTable(table): planner.crm_columns})
            return {r.ref.id: dict(r.attributes) for r in found}
        except NotFoundError:  # one of them was deleted meanwhile: read one by one
            rows = {}
            for target in targets:
                try:
                    rows.update({r.ref.id: dict(r.attributes) for r in self.ctx.crm().iter_record_targets(
                        [target], {CrmTable(table): planner.crm_columns})})
                except NotFoundError:
                    continue
            return rows

    # -- carrying a page out ---------------------------------------------------------
    def finish(self, plan: Plan, checkpoint: tuple[str, str] | None) -> list[Change]:
        changes = apply_plan(self.ctx, plan, self.side, checkpoint=checkpoint, dry_run=self.dry,
                             report=self.report.write if self.report is not None else None)
        self.totals.add(plan.counts)
        self.progress(plan.table)
        self.keep_lease()
        return changes

    def progress(self, where: str) -> None:
        if self.options.progress is not None:
            self.options.progress(where, dict(self.totals.counts))


SUMMARY_KEYS = ("esp_read", "crm_read", "to_esp", "to_crm", "agreed", "conflicts", "skipped", "failed", "deleted",
                "held", "no_subscriber", "esp_only", "resyncs", "interrupted")


def _summary(counts: dict[str, int], dry: bool) -> str:
    parts = [f"{key.replace('_', ' ')} {counts[key]}" for key in SUMMARY_KEYS if counts.get(key)]
    text = ", ".join(parts) or "nothing changed on either side"
    return ("test mode, nothing written: " if dry else "") + text


def _report_path(config: Any, run_id: str) -> Path:
    """A new report in the report folder; reports older than ``change_log_keep_days`` leave it."""
    folder = Path(config.sync.report_folder or config.service.data_dir / "sync-reports")
    now = datetime.now(timezone.utc)
    cutoff = (now - timedelta(days=config.sync.change_log_keep_days)).timestamp()
    if folder.is_dir():
        for old in folder.glob("sync-*.csv"):
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
    return folder / f"sync-{now.strftime('%Y%m%dT%H%M%SZ')}-{run_id[:8] or 'manual'}.csv"

