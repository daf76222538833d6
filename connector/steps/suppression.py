"""The ``suppression`` step: refresh the statutory suppression list from its source.

Every ``[suppression] refresh_minutes`` (and before the first send that needs it) the
source (``[suppression] file`` or ``source_url`` + ``query``; ``connector.suppression_list``)
is read from start to end, ``SUPPRESSION_CHUNK`` entries at a time, each chunk's digests
stored in one transaction with this refresh's generation number; once the whole source was read, the
entries it no longer holds are deleted and the summary is stored (``meta``
``suppression:refreshed``). A malformed line is logged with its line number and skipped
(the first ``MALFORMED_LOGGED`` one by one, then counted). A file unchanged since the last
complete refresh (same size and modification time) is not read again. With ``[suppression]
opt_out_records`` the CRM records of addresses new to the list are opted out and their
subscribers unsubscribed at the ESP (``_opt_out_new``).

The refresh holds the lease ``suppression``; a refresh that dies half-way leaves the old
list plus what it had read (never less), and the next one starts over.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Iterator

import structlog

from connector import defaults as d
from connector.errors import TransientPeerError
from connector.models import CrmTable, RecordRef, SubscriberStatus, SubscriberUpdate
from connector.steps import StepContext, StepOutcome
from connector.suppression_list import Entry, entry_digest, read_list_file, read_list_query

log = structlog.get_logger(__name__)

RESOURCE = "suppression"
REFRESHED_KEY = "suppression:refreshed"
MALFORMED_LOGGED = 100
"""Malformed lines logged one by one per refresh; the rest are counted."""


@dataclass
class RefreshStats:
    """What one refresh read and changed."""

    read: int = 0
    addresses: int = 0
    domains: int = 0
    malformed: int = 0
    added: int = 0
    removed: int = 0
    crm_opted_out: int = 0
    esp_unsubscribed: int = 0
    failed: int = 0
    unchanged_source: bool = False
    malformed_lines: list[str] = field(default_factory=list)  # the first few, "line 12: ..."

    def summary(self) -> str:
        if self.unchanged_source:
            return "suppression list unchanged since the last refresh: not read again"
        text = (f"suppression list refreshed: {self.read} entries read ({self.addresses} addresses, {self.domains} "
                f"domains), {self.added} added, {self.removed} removed, {self.malformed} malformed lines skipped")
        if self.crm_opted_out or self.esp_unsubscribed or self.failed:
            text += (f"; {self.crm_opted_out} CRM records opted out, {self.esp_unsubscribed} ESP subscribers "
                     f"unsubscribed, {self.failed} writes failed")
        if self.malformed_lines:
            text += " (" + "; ".join(self.malformed_lines[:5]) + (", ..." if self.malformed > 5 else "") + ")"
        return text


def source_signature(ctx: StepContext) -> str:
    """What the list is read from now: a file's path, size and modification time, or the URL
    (password hidden) and query. Equal to the last complete refresh's: a file need not be read."""
    cfg = ctx.config.suppression
    if cfg.file is not None:
        try:
            info = cfg.file.stat()
        except OSError:
            return f"file:{cfg.file}"
        return f"file:{cfg.file}:{info.st_size}:{info.st_mtime_ns}"
    from connector.secrets import hide_url_passwords

    return f"sql:{hide_url_passwords(cfg.source_url)}:{cfg.query}"


def _entries(ctx: StepContext) -> Iterator[Entry]:
    cfg = ctx.config.suppression
    if cfg.file is not None:
        return read_list_file(cfg.file)
    return read_list_query(cfg.source_url, cfg.query, timeout=float(ctx.config.timeouts.sql_seconds),
                           chunk=d.SUPPRESSION_CHUNK)


def last_refresh(ctx: StepContext) -> dict | None:
    """The stored summary of the last complete refresh (``None``: never refreshed)."""
    text = ctx.state.get_meta(REFRESHED_KEY)
    return json.loads(text) if text else None


def refresh_suppression(ctx: StepContext, *, force: bool = False) -> RefreshStats:
    """Read the whole source into the state database (see the module docstring)."""
    signature = source_signature(ctx)
    previous = last_refresh(ctx)
    if (not force and previous is not None and signature.startswith("file:")
            and previous.get("source") == signature):
        return RefreshStats(unchanged_source=True)
    refresh = ctx.state.next_suppression_generation()
    stats = RefreshStats()
    chunk: list[tuple[bytes, str]] = []
    addresses: dict[bytes, str] = {}  # this chunk's addresses, for opting out those new to the list
    opt_out = ctx.config.suppression.opt_out_records
    for entry in _entries(ctx):
        if not entry.kind:
            stats.malformed += 1
            where = f"line {entry.line}: {entry.problem}"
            if stats.malformed <= MALFORMED_LOGGED:
                log.warning("suppression_entry_malformed", line=entry.line, problem=entry.problem,
                            action="skipped; fix the line in the suppression list")
                stats.malformed_lines.append(where)
            continue
        stats.read += 1
        if entry.kind == "domain":
            stats.domains += 1
        else:
            stats.addresses += 1
        digest = entry_digest(entry.kind, entry.value)
        chunk.append((digest, entry.kind))
        if opt_out and entry.kind == "address":
            addresses[digest] = entry.value
        if len(chunk) >= d.SUPPRESSION_CHUNK:
            _opt_out_new(ctx, addresses, stats)
            stats.added += _store(ctx, chunk, refresh)
            chunk, addresses = [], {}
    if chunk:
        _opt_out_new(ctx, addresses, stats)
        stats.added += _store(ctx, chunk, refresh)
    with ctx.state.transaction() as conn:
        stats.removed = ctx.state.drop_suppression_except(refresh, conn=conn)
        summary = {"at": ctx.state.now().isoformat(), "source": signature,
                   **{k: v for k, v in asdict(stats).items() if k not in ("malformed_lines", "unchanged_source")}}
        ctx.state.set_meta(REFRESHED_KEY, json.dumps(summary), conn=conn)
    if stats.malformed > MALFORMED_LOGGED:
        log.warning("suppression_entries_malformed", count=stats.malformed, logged=MALFORMED_LOGGED)
    return stats


def _opt_out_new(ctx: StepContext, addresses: dict[bytes, str], stats: RefreshStats) -> None:
    """``[suppression] opt_out_records``: the records of addresses not yet on the stored list are
    opted out in CRM (``donotbulkemail``, contacts and leads, matched on ``emailaddress1``) and
    their subscribers unsubscribed at the ESP. Before the chunk is stored: a crash in between
    writes them again next time (both writes are safe to repeat), never skips them."""
    if not addresses:
        return
    known = ctx.state.suppression_matches(list(addresses))
    new = [value for digest, value in addresses.items() if digest not in known]
    if not new:
        return
    crm = ctx.crm()
    by_key = ctx.config.sends.subscriber_key == "email"
    refs: list[RecordRef] = []
    keys: dict[str, str] = {}  # subscriber key -> address
    for table in (CrmTable.CONTACT, CrmTable.LEAD):
        for address, ids in crm.match_customers(table, "emailaddress1", new).items():
            for record_id in ids:
                refs.append(RecordRef(table, record_id))
                keys[address if by_key else record_id] = address
    if not refs:
        return
    for result in crm.set_opt_outs(refs):
        if result.ok:
            stats.crm_opted_out += 1
        else:
            stats.failed += 1
            log.error("suppression_opt_out_failed", record=result.key, reason=result.message,
                      action="the next refresh that reads this address as new tries again; opt it out by hand")
    updates = [SubscriberUpdate(key, status=SubscriberStatus.UNSUBSCRIBED) for key in keys]
    for result in ctx.esp().update_subscribers(updates):
        if result.ok:
            stats.esp_unsubscribed += 1
        else:  # most often: no subscriber yet (the send path skips the address anyway)
            log.info("suppression_unsubscribe_skipped", subscriber=result.key, reason=result.message)


def _store(ctx: StepContext, chunk: list[tuple[bytes, str]], refresh: int) -> int:
    if ctx.stopping.is_set():
        raise TransientPeerError("the service is stopping: the suppression refresh ends here; the next one "
                                 "starts over (the stored list keeps every entry it had)",
                                 peer="suppression source", operation="read the suppression list")
    with ctx.state.transaction() as conn:
        return ctx.state.store_suppression(chunk, refresh, conn=conn)


def run_suppression_refresh(ctx: StepContext, *, force: bool = False) -> StepOutcome:
    """The scheduled step (and ``connector suppression``): one refresh under the lease ``suppression``."""
    if not ctx.config.suppression.enabled:
        return StepOutcome(message="no [suppression] file or source_url: nothing to refresh")
    if not ctx.state.acquire_lease(RESOURCE, ctx.config.state.lease_seconds):
        return StepOutcome(message="another process is refreshing the suppression list", details={"busy": True})
    try:
        stats = refresh_suppression(ctx, force=force)
    finally:
        ctx.state.release_lease(RESOURCE)
    details = {k: v for k, v in asdict(stats).items() if k != "malformed_lines"}
    log.info("suppression_refreshed", **details)
    return StepOutcome(processed=stats.read, message=stats.summary(), details=details)


def ensure_suppression_ready(ctx: StepContext) -> None:
    """Before a send resolves: with a list configured but never refreshed, refresh it now (a
    statutory list is never skipped); when another process is refreshing, the send waits for
    its next turn (a transient error)."""
    if not ctx.config.suppression.enabled or last_refresh(ctx) is not None:
        return
    outcome = run_suppression_refresh(ctx)
    if outcome.details.get("busy") or last_refresh(ctx) is None:
        raise TransientPeerError("the suppression list is being read for the first time by another process; "
                                 "the send resolves once it is stored", peer="suppression source",
                                 operation="read the suppression list")
