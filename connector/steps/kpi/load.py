"""One KPI load: the source read slice by slice, the differential, the writes, the removals.

Per slice of ``[kpi] slice_rows`` source rows (the only source rows in memory):

1. validate each row (``rows.parse_row``); a bad one is reported, never written;
2. look its (source, customer key, KPI) up in the state database: unchanged (same value
   hash, active) rows need nothing but the "seen in this run" mark; a key already seen in
   this run is a duplicate row of the source (reported; the first one counts);
3. commit the seen marks and the reported rows (quarantine, ``request_id`` ``kpi:<source>``);
   the changed rows wait, until a slice's worth of them waits (or the source ends), so a
   run where 1% changed still writes full ``$batch`` requests, not a handful per slice;
4. then, for the waiting rows: match their customers in CRM by ``[kpi] match_column`` (in
   sets; no match or several: reported as ``unmatched`` / ``ambiguous``), upsert them
   ($batch slices, by the alternate key: a repeat never makes a second row), and commit
   in ONE state transaction the hashes of the writes CRM confirmed.

Every commit also extends the lease (a load taken over meanwhile commits nothing more).
A kill -9 before 4 commits leaves the hashes as they were: the next run writes the same
values again, as upserts by key - the same rows. After a complete read (not a stopped
or failed one, and not an empty source: more likely a broken query than no KPIs at all),
the active rows of earlier runs are the KPIs that left the source: deactivated (or
deleted) in CRM, then marked inactive in the state database.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import structlog

from connector.crashpoints import crashpoint
from connector.errors import StateError
from connector.models import CrmTable, KpiValue
from connector.state.kpi import KpiState, KpiWritten, kpi_key_hash
from connector.state.records import QuarantineRow
from connector.steps import StepContext
from connector.steps.kpi.rows import BadRow, KpiRow, parse_row
from connector.steps.kpi.source import KpiSource

log = structlog.get_logger(__name__)

SAMPLE = 10
"""Unmatched customer keys (and failures) named in the run's message and summary."""


@dataclass
class KpiStats:
    read: int = 0
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    unmatched: int = 0
    bad: int = 0
    failed: int = 0
    slices: int = 0
    complete: bool = False
    by_reason: dict[str, int] = field(default_factory=dict)
    unmatched_sample: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def report(self, bad: BadRow) -> None:
        self.by_reason[bad.reason] = self.by_reason.get(bad.reason, 0) + 1
        if bad.reason in ("unmatched", "ambiguous"):
            self.unmatched += 1
            if len(self.unmatched_sample) < SAMPLE and bad.customer_key not in self.unmatched_sample:
                self.unmatched_sample.append(bad.customer_key)
        else:
            self.bad += 1


Progress = Callable[[KpiStats], None]


@dataclass
class _Slice:
    """One slice's decisions, before anything is written."""

    changed: list[tuple[str, KpiRow]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # key hashes the state holds, seen in this slice
    bad: list[BadRow] = field(default_factory=list)


class KpiLoad:
    """One run of the KPI job over one source."""

    def __init__(self, ctx: StepContext, source: KpiSource, *, dry_run: bool = False, full: bool = False,
                 progress: Progress | None = None) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.kpi
        self.source = source
        self.name = self.cfg.source_name
        self.table = CrmTable(self.cfg.customer_table)
        self.dry_run = dry_run
        self.full = full
        self.progress = progress
        self.stats = KpiStats()
        self.request_id = f"kpi:{self.name}"
        self.lease = f"kpi:{self.name}"
        self._active_seen = 0  # dry run: active keys the source still holds (the rest would be removed)
        self._dry_seen: set[str] = set()
        self._pending: dict[str, KpiRow] = {}  # changed rows waiting for a full write (at most slice_rows)

    # -- the read ----------------------------------------------------------------------
    def run(self) -> KpiStats:
        if not self.dry_run:
            self.ctx.state.clear_quarantine(self.request_id)
        with closing(self.source.slices(self.cfg.slice_rows)) as slices:  # closes the cursor on a stop
            for rows in slices:
                if self.ctx.stopping.is_set():
                    log.info("kpi_stopped", read=self.stats.read, reason="the service is stopping")
                    return self.stats
                self._slice(rows)
                self.stats.slices += 1
                if self.progress:
                    self.progress(self.stats)
        self._flush()
        self.stats.complete = True
        if self.stats.read == 0:
            log.warning("kpi_source_empty", source=self.name,
                        reason="the [kpi] query returned no rows: nothing is removed from CRM (check the query)")
        elif self.cfg.removed != "keep":
            self._remove_vanished()
        return self.stats

    def _slice(self, rows: list[dict[str, Any]]) -> None:
        """Decide about one slice; its changed rows join the ones waiting, written once a slice's worth waits."""
        self.stats.read += len(rows)
        plan = self._plan(rows)
        self._pending.update(plan.changed)
        self._commit(plan.seen, [], plan.bad)
        if len(self._pending) >= self.cfg.slice_rows:
            self._flush()

    def _flush(self) -> None:
        """Match and write the waiting changed rows, then commit what CRM confirmed."""
        changed, self._pending = list(self._pending.items()), {}
        if not changed:
            return
        bad: list[BadRow] = []
        confirmed = self._write(changed, bad)
        crashpoint("kpi_after_crm_write")
        self._commit([], confirmed, bad)
        crashpoint("kpi_after_slice")

    def _commit(self, seen: list[str], confirmed: list[KpiWritten], bad: list[BadRow]) -> None:
        """One state transaction, fenced by the lease: seen marks, confirmed values, reported rows."""
        for row in bad:
            self.stats.report(row)
        if self.dry_run or not (seen or confirmed or bad):
            return
        with self.ctx.state.transaction() as conn:
            self._keep_lease(conn)
            self.ctx.state.record_kpis_written(self.name, confirmed, self.ctx.run_id, conn=conn)
            self.ctx.state.mark_kpis_seen(seen, self.ctx.run_id, conn=conn)
            self.ctx.state.quarantine([self._quarantined(b) for b in bad], conn=conn)

    def _keep_lease(self, conn: Any) -> None:
        """Extend the lease inside the commit: a load taken over meanwhile commits nothing more."""
        if not self.ctx.state.extend_lease(self.lease, self.ctx.config.state.lease_seconds, conn=conn):
            raise StateError(f"lost the lease on {self.lease}: another instance took the KPI load")

    def _plan(self, rows: list[dict[str, Any]]) -> _Slice:
        plan = _Slice()
        parsed: dict[str, KpiRow] = {}
        for raw in rows:
            row = parse_row(raw)
            if isinstance(row, BadRow):
                plan.bad.append(row)
                continue
            key = kpi_key_hash(self.name, row.customer_key, row.kpi)
            if key in parsed:
                plan.bad.append(self._duplicate(row))
                continue
            parsed[key] = row
        known = self.ctx.state.known_kpis(list(parsed))
        for key, row in parsed.items():
            state = known.get(key)
            if key in self._pending or (state is not None and (state.seen_run == self.ctx.run_id
                                                                or key in self._dry_seen)):
                plan.bad.append(self._duplicate(row))
                continue
            if state is not None:
                plan.seen.append(key)
                self._active_seen += state.active
                if self.dry_run:
                    self._dry_seen.add(key)
            if state is not None and state.active and state.value_hash == row.value_hash and not self.full:
                self.stats.unchanged += 1
            else:
                plan.changed.append((key, row))
        return plan

    @staticmethod
    def _duplicate(row: KpiRow) -> BadRow:
        return BadRow(row.shown_key, row.kpi, "duplicate", "the query returned this customer and KPI more than "
                      "once: the first row counts; aggregate in the query (GROUP BY the customer and KPI)")

    # -- matching and writing -------------------------------------------------------------
    def _write(self, changed: list[tuple[str, KpiRow]], bad: list[BadRow]) -> list[KpiWritten]:
        crm = self.ctx.crm()
        matches = crm.match_customers(self.table, self.cfg.match_column, [row.customer_key for _, row in changed])
        values: list[tuple[str, KpiRow, KpiValue]] = []
        now = self.ctx.state.now()
        for key, row in changed:
            ids = matches.get(row.customer_key, [])
            if len(ids) != 1:
                bad.append(self._unmatched(row, ids))
                continue
            values.append((key, row, KpiValue(ids[0], row.kpi, row.value, row.period, self.name, now)))
        if self.dry_run or not values:
            self.stats.written += len(values)
            return []
        results = crm.upsert_kpis(self.table, [v for _, _, v in values])
        confirmed: list[KpiWritten] = []
        for (key, row, value), result in zip(values, results):
            if result.ok:
                confirmed.append(KpiWritten(key, row.customer_key, row.kpi, value.customer_id, row.value_hash))
                continue
            self.stats.failed += 1
            if len(self.stats.failures) < SAMPLE:
                self.stats.failures.append(f"{row.shown_key}/{row.kpi}: {result.message}")
            log.warning("kpi_write_failed", customer=row.shown_key, kpi=row.kpi, reason=result.message)
        self.stats.written += len(confirmed)
        return confirmed

    def _unmatched(self, row: KpiRow, ids: list[str]) -> BadRow:
        table, column = self.table.value, self.cfg.match_column
        if not ids:
            return BadRow(row.shown_key, row.kpi, "unmatched", f"no active {table} has {column} = {row.shown_key!r}")
        return BadRow(row.shown_key, row.kpi, "ambiguous", f"{len(ids)} active {table} records have {column} = "
                      f"{row.shown_key!r} ({', '.join(ids[:3])}): make the value unique in CRM")

    def _quarantined(self, bad: BadRow) -> QuarantineRow:
        return QuarantineRow(request_id=self.request_id, table=self.table.value, record_id=bad.customer_key[:64],
                             email=bad.customer_key[:320] if "@" in bad.customer_key else "", reason=bad.reason,
                             detail=f"{bad.customer_key} / {bad.kpi}: {bad.detail}")

    # -- removal -----------------------------------------------------------------------------
    def _remove_vanished(self) -> None:
        if self.dry_run:
            self.stats.removed = max(0, self.ctx.state.kpi_counts(self.name)["active"] - self._active_seen)
            return
        after = ""
        while not self.ctx.stopping.is_set():
            batch = self.ctx.state.vanished_kpis(self.name, self.ctx.run_id, after=after, limit=self.cfg.slice_rows)
            if not batch:
                return
            after = batch[-1].key_hash
            self._remove(batch)

    def _remove(self, batch: list[KpiState]) -> None:
        results = self.ctx.crm().remove_kpis(self.table, [(s.crm_id, s.kpi) for s in batch],
                                             delete=self.cfg.removed == "delete")
        done = [s.key_hash for s, r in zip(batch, results) if r.ok]
        for state, result in zip(batch, results):
            if not result.ok:
                self.stats.failed += 1
                if len(self.stats.failures) < SAMPLE:
                    self.stats.failures.append(f"removing {state.customer_key}/{state.kpi}: {result.message}")
        crashpoint("kpi_after_crm_removal")
        with self.ctx.state.transaction() as conn:
            self._keep_lease(conn)
            self.ctx.state.deactivate_kpis(done, conn=conn)
        self.stats.removed += len(done)
        log.info("kpi_removed", count=len(done), mode=self.cfg.removed)
