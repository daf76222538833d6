"""The KPI step: aggregated KPIs from an external SQL source -> ``<prefix>_kpi`` rows in CRM.

Runs every ``[kpi] poll_minutes`` (off unless set) in its own executor, and by hand as
``connector kpi -c FILE [--dry-run]``; under the lease ``kpi:<source_name>``, so only
one instance loads a source at a time. It starts only once the KPI table's alternate
key is Active (``connector crm-setup`` creates and waits for it): every write goes by
that key. The work itself: ``connector.steps.kpi.load``; the model: docs/kpi.md.
"""

from __future__ import annotations

import structlog

from connector.errors import ConfigError, ConnectorError
from connector.models import CrmTable
from connector.steps import StepContext, StepOutcome
from connector.steps.kpi.load import KpiLoad, KpiStats, Progress
from connector.steps.kpi.source import KpiSource

__all__ = ["KpiStats", "open_source", "run_kpi", "summary"]

log = structlog.get_logger(__name__)


def open_source(config: object) -> KpiSource:
    """The configured source (its password from the environment or the secrets file, never logged)."""
    cfg = config.kpi  # type: ignore[attr-defined]
    try:
        query = cfg.query_text()
    except OSError as exc:
        raise ConfigError(f"[kpi] query_file {cfg.query_file} cannot be read: {exc.strerror or exc}",
                          section="kpi", key="query_file") from exc
    return KpiSource(cfg.source_url, query, timeout=float(config.timeouts.sql_seconds))  # type: ignore[attr-defined]


def run_kpi(ctx: StepContext, *, dry_run: bool = False, full: bool = False,
            progress: Progress | None = None) -> StepOutcome:
    """Load the KPIs once; see the module docstring."""
    cfg = ctx.config.kpi
    if not cfg.enabled:
        return StepOutcome(message="kpi not configured ([kpi] source_url)")
    refused = None if dry_run else _key_refusal(ctx)
    if refused:
        log.error("step_refused", reason=refused)
        return StepOutcome(ok=False, message=refused)
    resource = f"kpi:{cfg.source_name}"
    if not dry_run and not ctx.state.acquire_lease(resource, ctx.config.state.lease_seconds):
        holder = ctx.state.lease_holder(resource)
        log.info("kpi_lease_busy", resource=resource, holder=holder)
        return StepOutcome(message=f"another instance ({holder}) is loading the KPIs of {cfg.source_name}",
                           details={"busy": True})
    source = open_source(ctx.config)
    try:
        with structlog.contextvars.bound_contextvars(kpi_source=cfg.source_name):
            stats = KpiLoad(ctx, source, dry_run=dry_run, full=full, progress=progress).run()
    finally:
        source.close()
        if not dry_run:
            ctx.state.release_lease(resource)
    log.info("kpi_loaded", **{k: v for k, v in stats.as_dict().items() if k not in ("failures",)})
    ok = stats.complete and not stats.failed
    return StepOutcome(ok=ok, processed=stats.written + stats.removed, message=summary(stats, dry_run),
                       details=stats.as_dict())


def summary(stats: KpiStats, dry_run: bool = False) -> str:
    """One line a person can read: what was read, written, left alone, removed and reported."""
    verb = "would write" if dry_run else "written"
    text = (f"{stats.read} source rows: {stats.written} {verb}, {stats.unchanged} unchanged, "
            f"{stats.removed} {'would be ' if dry_run else ''}removed")
    if stats.unmatched:
        text += (f"; {stats.unmatched} rows of unknown customers (e.g. {', '.join(stats.unmatched_sample[:5])}) "
                 "in the quarantine")
    if stats.bad:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(stats.by_reason.items()) if r not in ("unmatched", "ambiguous"))
        text += f"; {stats.bad} bad rows ({reasons}) in the quarantine"
    if stats.failed:
        text += f"; {stats.failed} CRM writes failed, retried next run: {stats.failures[0]}"
    if not stats.complete:
        text += "; stopped before the end of the source (the next run goes on; nothing was removed)"
    return text[:2000]


def _key_refusal(ctx: StepContext) -> str:
    """Why the step may not write yet (the KPI table's alternate key is not Active), or ""."""
    table = CrmTable(ctx.config.kpi.customer_table)
    try:
        status, name = ctx.crm().kpi_key_status(table)
    except ConnectorError as exc:
        return f"kpi not started: CRM cannot be asked for the KPI table's key: {exc}"
    if status == "Active":
        return ""
    what = {"Missing": "does not exist: run `connector crm-setup -c service.ini`"}.get(
        status, f"is {status}: `connector crm-setup -c service.ini` shows its progress and what to do")
    return (f"kpi not started: the alternate key {name} that KPI rows are written by {what}. "
            "The other steps go on; the KPI load starts by itself once the key is Active")
