"""``connector status -c FILE [--json]``: the service at a glance, from the state database.

Shows each step's last and next run and outcome, the last error per step, send
requests in flight with their progress, tracking watermarks and lag, the
registered instances (host, pid, version, heartbeat, what each holds, and a
warning when two live processes share one ``instance_id``), the leases and the
state database's health. ``--json`` prints the same as one JSON object for
monitoring. Exit 0 when the state database is reachable and migrated, 1 when
not, 3 when the configuration is invalid.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from connector.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from connector.errors import StateError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show steps, sends in flight, watermarks and state DB health")
    parser.add_argument("-c", "--config", required=True, type=Path, help="path of service.ini")
    parser.add_argument("--json", action="store_true", help="print one JSON object (for monitoring)")
    parser.set_defaults(func=status_command)


def status_command(args: argparse.Namespace) -> int:
    from connector.commands.run import load_or_report
    from connector.state.store import StateStore

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        with StateStore.from_config(config, holder="status") as store:
            report = collect_status(config, store)
    except StateError as exc:
        report = {"state_db": {"reachable": False, "error": str(exc)}}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=_iso))
    else:
        print(render_text(report))
    healthy = report["state_db"].get("reachable") and report["state_db"].get("up_to_date")
    return EXIT_OK if healthy else EXIT_FAILURE


def collect_status(config: Any, store: Any, now: datetime | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (datetimes aware UTC)."""
    now = now or datetime.now(timezone.utc)
    report: dict[str, Any] = {"generated_at": now, "state_db": store.health()}
    if not report["state_db"]["up_to_date"]:
        return report
    report["steps"] = _steps(config, store, now)
    report["sends_in_flight"] = _sends(store, now)
    report["sends_finished_recently"] = _finished(store, now)
    report["watermarks"] = [
        {
            "account": w.account,
            "event_type": w.event_type,
            "watermark": w.value,
            "lag_seconds": int((now - w.value).total_seconds()),
            "updated_at": w.updated_at,
        }
        for w in store.watermarks()
    ]
    report["tracked_sends_active"] = len(store.tracked_sends(active_only=True))
    report["sync"] = _sync(config, store, now)
    report["kpi"] = _kpi(config, store)
    leases = store.leases()
    held = {r["resource"]: r["holder"] for r in leases if r["expires_at"] >= now}
    for send in report["sends_in_flight"]:
        send["held_by"] = held.get(f"send:{send['request_id']}", "")
    report["instances"], report["label_conflicts"] = _instances(store, leases, now)
    labels = {i["holder"]: i["label"] for i in report["instances"]}
    report["leases"] = [
        {"resource": r["resource"], "holder": r["holder"], "label": labels.get(r["holder"], ""),
         "expires_at": r["expires_at"], "expired": r["expires_at"] < now}
        for r in leases
    ]
    return report


def _kpi(config: Any, store: Any) -> dict[str, Any] | None:
    """The KPI rows the connector keeps in CRM for its source, and the rows the last load reported."""
    if not config.kpi.enabled:
        return None
    name = config.kpi.source_name
    return {"source": name, **store.kpi_counts(name), "reported": store.quarantine_counts(f"kpi:{name}")}


def _sync(config: Any, store: Any, now: datetime) -> dict[str, Any]:
    """The sync step's checkpoints: the ESP watermark and its lag, per table a delta link or not, records agreed."""
    from connector.sync.engine import delta_key, watermark_key

    mark = store.get_meta(watermark_key(config.esp.name))
    value = datetime.fromisoformat(mark) if mark else None
    tables = {table: {"checkpoint": bool(store.get_meta(delta_key(table))), "records": store.shadow_count(table)}
              for table, rules in getattr(config, "sync_rules", {}).items() if rules}
    return {"esp_watermark": value, "lag_seconds": int((now - value).total_seconds()) if value else None,
            "tables": tables}


def _instances(store: Any, leases: list[dict], now: datetime) -> tuple[list[dict], list[dict]]:
    """Registered processes (not stopped) with what they hold; labels used by more than one live process."""
    from connector.state.instances import STALE_AFTER_SECONDS

    rows = []
    for row in store.instances():
        alive = (now - row["heartbeat_at"]).total_seconds() <= STALE_AFTER_SECONDS
        holds = sorted(r["resource"] for r in leases if r["holder"] == row["holder"] and r["expires_at"] >= now)
        rows.append({key: row[key] for key in ("holder", "label", "host", "pid", "version", "started_at",
                                               "heartbeat_at")} | {"alive": alive, "holds": holds})
    by_label: dict[str, list[str]] = {}
    for row in rows:
        if row["alive"]:
            by_label.setdefault(row["label"], []).append(row["holder"])
    conflicts = [{"label": label, "holders": holders} for label, holders in sorted(by_label.items()) if len(holders) > 1]
    return rows, conflicts


def _steps(config: Any, store: Any, now: datetime) -> dict[str, Any]:
    from connector.service import configured_steps, next_run, step_intervals

    intervals = step_intervals(config)
    summary = store.step_runs_summary()
    answering = _answering_holders(store, now)
    steps: dict[str, Any] = {}
    for name in sorted(set(configured_steps(config)) | set(summary)):
        info = summary.get(name, {})
        last, error, ok = info.get("last"), info.get("last_error"), info.get("last_ok")
        interval = intervals.get(name, 0.0)
        started = last.started_at if last else None
        running = bool(last and last.outcome == "running" and answering(last.holder))
        steps[name] = {
            "interval_seconds": interval,
            "runs": info.get("runs", 0),
            "last_run": _run(last),
            "last_ok_at": ok.finished_at if ok else None,
            "last_error": {"at": error.finished_at, "message": error.message, "run_id": error.run_id} if error else None,
            "next_run": next_run(started, interval, now) if started else None,
            "running_seconds": int((now - started).total_seconds()) if running and started else None,
            "overdue": not running and bool(started and (now - started).total_seconds() > 2 * interval + 60),
        }
    return steps


def _answering_holders(store: Any, now: datetime):  # noqa: ANN202 - a small predicate
    """holder -> whether its process still beats (one not registered is taken at its word)."""
    from connector.state.instances import STALE_AFTER_SECONDS

    rows = {row["holder"]: row for row in store.instances(include_stopped=True)}

    def answering(holder: str) -> bool:
        row = rows.get(holder)
        if row is None:
            return True
        return row["stopped_at"] is None and (now - row["heartbeat_at"]).total_seconds() <= STALE_AFTER_SECONDS

    return answering


def _run(run: Any) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "run_id": run.run_id,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "outcome": run.outcome,
        "processed": run.processed,
        "message": run.message,
        "holder": run.holder,
    }


def _sends(store: Any, now: datetime) -> list[dict[str, Any]]:
    from connector.state.records import FINAL_SEND_STATUSES, SEND_JOB_STATUSES

    jobs = store.send_jobs([s for s in SEND_JOB_STATUSES if s not in FINAL_SEND_STATUSES])
    progress = store.batch_progress([j.request_id for j in jobs]) if jobs else {}
    return [
        {
            "request_id": j.request_id,
            "name": j.name,
            "status": j.status,
            "phase_detail": j.phase_detail,
            "path": j.path,
            "resolved": j.resolved,
            "handed_over": j.handed_over,
            "skipped": j.skipped,
            "batches": progress.get(j.request_id, {"total": 0, "imported": 0, "failed": 0}),
            "esp_job_id": j.esp_job_id,
            "updated_at": j.updated_at,
            "idle_seconds": int((now - j.updated_at).total_seconds()) if j.updated_at else None,
        }
        for j in jobs
    ]


def _finished(store: Any, now: datetime, limit: int = 10, hours: int = 24) -> list[dict[str, Any]]:
    from connector.state.records import FINAL_SEND_STATUSES

    return [
        {
            "request_id": j.request_id,
            "name": j.name,
            "status": j.status,
            "handed_over": j.handed_over,
            "skipped": j.skipped,
            "esp_job_id": j.esp_job_id,
            "error": j.error,
            "finished_at": j.updated_at,
        }
        for j in store.recent_send_jobs(limit, FINAL_SEND_STATUSES)
        if j.updated_at and (now - j.updated_at).total_seconds() <= hours * 3600
    ]


# -- text ---------------------------------------------------------------------


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="seconds")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    seconds = int((now - value).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    text = _span(seconds)
    return f"in {text}" if future else f"{text} ago"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 90 * 60:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"


def _lag(seconds: float) -> str:
    # an ESP whose clock runs ahead of ours (or a sandbox's simulated time) puts events in our future
    return _span(seconds) if seconds >= 0 else f"none (the newest event is {_span(-seconds)} ahead of this clock)"


def render_text(report: dict[str, Any]) -> str:
    now = report.get("generated_at") or datetime.now(timezone.utc)
    db = report["state_db"]
    lines = [_db_line(db)]
    if "steps" not in report:
        return "\n".join(lines)
    lines += ["", "Steps:", f"  {'step':<9} {'last run':<14} {'outcome':<14} {'processed':>9}  next run"]
    for name, step in report["steps"].items():
        last = step["last_run"] or {}
        next_text = "at start" if step["next_run"] is None else _ago(step["next_run"], now)
        if not step["interval_seconds"]:
            next_text = "by hand only"
        if step["next_run"] is not None and step["next_run"] <= now:
            next_text = "due now"
        lines.append(
            f"  {name:<9} {_ago(last.get('started_at'), now):<14} {last.get('outcome', '-'):<14} "
            f"{last.get('processed', 0):>9}  {next_text}{_step_note(step, last)}"
        )
    for name, step in report["steps"].items():
        if step["last_error"]:
            err = step["last_error"]
            lines.append(f"  last error of {name} ({_ago(err['at'], now)}): {err['message']}")
    sends = report["sends_in_flight"]
    lines += ["", f"Send requests in flight: {len(sends)}"]
    for s in sends:
        batches = s["batches"]
        files = f", batches imported {batches['imported']}/{batches['total']}" if batches["total"] else ""
        lines.append(
            f"  {s['request_id']}  {s['name'][:30]!r}  {s['status']}"
            f"{' (' + s['phase_detail'] + ')' if s['phase_detail'] else ''}: handed over "
            f"{s['handed_over']}/{s['resolved']}, skipped {s['skipped']}{files}; updated {_ago(s['updated_at'], now)}"
            f"{'; held by ' + s['held_by'] if s.get('held_by') else ''}"
        )
    finished = report.get("sends_finished_recently", [])
    if finished:
        lines += ["", "Finished in the last 24 hours:"]
        for s in finished:
            outcome = f"ESP job {s['esp_job_id']}" if s["status"] == "sent" else f"reason: {s['error'][:120]}"
            lines.append(
                f"  {s['request_id']}  {s['name'][:30]!r}  {s['status']} {_ago(s['finished_at'], now)}: handed over "
                f"{s['handed_over']}, skipped {s['skipped']}; {outcome}"
            )
    lines += ["", f"Tracking: {report['tracked_sends_active']} send(s) tracked"]
    for w in report["watermarks"]:
        lines.append(
            f"  {w['account']:<12} {w['event_type']:<8} watermark {_iso(w['watermark'])}  lag {_lag(w['lag_seconds'])}"
        )
    sync = report.get("sync") or {}
    if sync.get("tables"):
        mark = sync["esp_watermark"]
        lines += ["", f"Sync: ESP watermark {_iso(mark) if mark else '(none: the next run reads every subscriber)'}"
                      + (f"  lag {_lag(sync['lag_seconds'])}" if mark else "")]
        for table, info in sync["tables"].items():
            link = "change-tracking checkpoint" if info["checkpoint"] else "no checkpoint (the next run reads it whole)"
            lines.append(f"  {table:<8} {info['records']:>9} record(s) agreed; {link}")
    kpi = report.get("kpi")
    if kpi:
        reported = ", ".join(f"{n} {reason}" for reason, n in sorted(kpi["reported"].items())) or "none"
        lines += ["", f"KPIs ({kpi['source']}): {kpi['active']} active row(s) in CRM, {kpi['inactive']} deactivated;"
                      f" rows the last load reported: {reported}"]
    lines += _instance_lines(report, now)
    expired = [lease for lease in report["leases"] if lease["expired"]]
    lines += ["", f"Leases: {len(report['leases'])} held, {len(expired)} expired (reaped at the next run)"]
    for lease in report["leases"]:
        state = "EXPIRED" if lease["expired"] else f"until {_ago(lease['expires_at'], now)}"
        lines.append(f"  {lease['resource']:<48} {lease['holder']}  {state}")
    return "\n".join(lines)


def _instance_lines(report: dict[str, Any], now: datetime) -> list[str]:
    rows = report.get("instances", [])
    lines = ["", f"Instances: {sum(1 for r in rows if r['alive'])} alive, {len(rows)} registered"]
    for r in rows:
        state = "alive" if r["alive"] else "NO HEARTBEAT (stopped without saying so?)"
        holds = f"; holds {', '.join(r['holds'])}" if r["holds"] else ""
        lines.append(f"  {r['label'] or '(no instance_id)'}  {r['holder']}  version {r['version']}, started "
                     f"{_ago(r['started_at'], now)}, heartbeat {_ago(r['heartbeat_at'], now)}: {state}{holds}")
    for conflict in report.get("label_conflicts", []):
        lines.append(f"  WARNING: {len(conflict['holders'])} live processes use the instance_id "
                     f"{conflict['label']!r} ({', '.join(conflict['holders'])}); each is told apart by host, pid "
                     f"and token, but give every instance its own [service] instance_id")
    return lines


def _step_note(step: dict[str, Any], last: dict[str, Any]) -> str:
    if step.get("running_seconds") is not None:
        return f"  (running for {step['running_seconds'] // 60} min)"
    if not step["overdue"]:
        return ""
    if last.get("outcome") == "running":
        return f"  (OVERDUE: its run by {last.get('holder')} has no heartbeat: is that instance still running?)"
    return "  (OVERDUE: is the service running?)"


def _db_line(db: dict[str, Any]) -> str:
    if not db.get("reachable"):
        return f"State database: UNREACHABLE {db.get('url', '')}: {db.get('error', '')}"
    latest = "latest" if db.get("up_to_date") else f"NOT latest ({db.get('head')}): {db.get('error')}"
    return f"State database: {db['backend']} {db['url']}: reachable, schema {db.get('revision') or 'empty'} ({latest})"
