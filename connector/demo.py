"""``connector demo``: the whole connector, end to end, against the local sandbox.

What it does, in order (each step printed as it happens):

1. starts the sandbox (Dataverse with its Entra ID authority, Marketing Cloud SOAP,
   SFTP; HTTPS with a CA of its own) with a generated organization, *without* the
   connector's CRM customizations;
2. writes a service.ini for the sandbox and runs ``connector crm-setup`` against it, so
   the customizations are made through the metadata API as in a real organization;
3. files three send requests as CRM users would, as Drafts with their targets added as
   related records (marketing lists, leads): a small one (SOAP path), one over the
   batching threshold (SFTP batch files, the campaign's lists), and one from a user
   without an allowed security role;
4. starts the real daemon, ``connector run -c service.ini`` in its own process (same
   service, pools, config and code paths as production), and shows progress until every
   request is released or failed (one updating line with a bar per phase on a terminal;
   in a log, a line only when something changed and at most every 15 s: connector.progress);
   once the daemon has copied the ESP's e-mails into CRM's e-mail picker, each request gets
   its e-mail picked from it; the first is previewed first (Preview requested -> Previewed,
   its counts shown), then all three are set Pending;
5. moves the sandbox's simulated clock forward so opens, clicks, bounces and
   unsubscribes happen, waits for the tracking step to pull them, then stops the daemon
   with SIGTERM (the graceful path);
6. prints a summary and checks it against the sandbox's own records (sends at the ESP,
   subscribers on each send's list, events, campaign responses, staging rows).

Exit 0 when everything checks out, 1 with the reasons otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from connector.crm.records import COUNT_COLUMNS as CRM_COUNT_COLUMNS
from connector.crm.records import STATUS_BY_CODE, STATUS_CODES, STATUS_LABELS
from connector.models import SendStatus
from connector.private import open_private
from connector.progress import Progress
from connector.steps.tracking.rules import tracking_key_prefix

# the send request's picklist, as the summary shows it ("Sent", "Failed", ...)
STATUS = {code: STATUS_LABELS[status] for code, status in STATUS_BY_CODE.items()}
TERMINAL = {"Sent", "Failed", "Cancelled"}
DEMO_EMAIL_KEY = "cesp-demo-email"
"""The sandbox ESP's e-mail the demo's requests pick."""
# the tracking count columns on the send request, without the "count" suffix, in their order
COUNT_COLUMNS = tuple(dict.fromkeys(column.removesuffix("count") for column in CRM_COUNT_COLUMNS.values()))


@dataclass
class DemoOptions:
    data_dir: Path | None = None
    contacts: int = 50_000
    seed: int = 1
    threshold: int = 25_000
    batch_size: int = 5_000
    tracking_mode: str = "all"
    timeout: float = 900.0
    advance_hours: float = 96.0
    # called with (sandbox, result) before the sandbox stops: lets a test compare the
    # summary with the sandbox's own records independently of the demo's checks
    inspect: Callable[[Any, "DemoResult"], None] | None = None


@dataclass
class PlannedSend:
    label: str
    request_id: str
    owner: str
    expect: str  # Sent | Failed
    path: str  # soap | files | refused


@dataclass
class DemoResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    service_ini: Path | None = None
    log_file: Path | None = None


def _connector_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "connector", *args]


def _run_checked(cmd: list[str], what: str, env: dict[str, str], log_to: Path) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    with open_private(log_to, "w", encoding="utf-8") as handle:  # command output may name recipients
        handle.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise DemoFailed(f"{what} failed (exit {result.returncode}); its output is in {log_to}:\n"
                         + (result.stderr or result.stdout)[-2000:])
    return result.stdout


class DemoFailed(Exception):
    pass


def _file_requests(sandbox: Any) -> list[PlannedSend]:
    """The three send requests the demo's CRM users file: Drafts (the way a CRM form saves them), their
    targets added as related records (the N:N relationships a form's subgrids add to)."""
    store = sandbox.crm.store
    org = sandbox.seeded
    planned = []

    def request(label: str, owner: str, related: list[tuple[str, str]], expect: str, path: str,
                campaign: str | None = None) -> None:
        row: dict[str, Any] = {"cesp_name": label, "cesp_status": STATUS_CODES[SendStatus.DRAFT],
                               "ownerid": ("systemuser", org.users[owner])}
        if campaign:
            row["cesp_campaignid"] = ("campaign", campaign)
        request_id = store.insert("cesp_sendrequests", row)
        for table, record_id in related:
            store.associate(f"cesp_sendrequest_{table}", request_id, record_id)
        planned.append(PlannedSend(label, request_id, owner, expect, path))

    lead_ids = [r[0] for r in store.execute("SELECT leadid FROM e_lead ORDER BY rowid LIMIT 3")]
    request("VIP contacts and key accounts", "mia",
            [("list", org.lists["vip"]), ("list", org.lists["accounts"])] + [("lead", lid) for lid in lead_ids],
            "Sent", "soap")
    spring = org.campaigns["spring"]
    request("Spring newsletter (campaign)", "ada",
            [("list", lid) for lid in store.associated_ids("campaignlist_association", spring)],
            "Sent", "files", campaign=spring)
    request("Trade fair leads (sent by a salesperson)", "sam", [("list", org.lists["leads"])], "Failed", "refused")
    return planned


def _pick_email_preview_and_release(sandbox: Any, planned: list[PlannedSend], progress: Progress,
                                    wait: Callable[[Callable[[], bool], str], None]) -> None:
    """What the marketers do next in CRM: pick the e-mail from the picker, preview the first request,
    then set all three Pending."""
    store = sandbox.crm.store

    def picker_row() -> str | None:
        return next((r["cesp_emailid"] for r in store.rows("cesp_emails")
                     if r.get("cesp_customerkey") == DEMO_EMAIL_KEY), None)

    wait(lambda: picker_row() is not None, "waiting for the daemon to fill the e-mail picker")
    email = picker_row()
    progress.say(f"      the e-mail picker holds {store.count('cesp_emails')} e-mail(s) from the ESP; "
                 f"each request gets {DEMO_EMAIL_KEY!r} picked")
    for p in planned:
        store.patch("cesp_sendrequests", p.request_id, {"cesp_emailid": ("cesp_email", email)})
    first = planned[0]
    store.patch("cesp_sendrequests", first.request_id,
                {"cesp_status": STATUS_CODES[SendStatus.PREVIEW_REQUESTED]})
    wait(lambda: (store.get("cesp_sendrequests", first.request_id) or {}).get("cesp_status")
         == STATUS_CODES[SendStatus.PREVIEWED], "waiting for the preview of #1")
    row = store.get("cesp_sendrequests", first.request_id) or {}
    sample = sum(1 for r in store.rows("cesp_previewrecipients") if r.get("_cesp_sendrequestid_value")
                 == first.request_id)
    progress.say(f"      #1 previewed: {row.get('cesp_previewresolved', 0):,} resolved, "
                 f"{row.get('cesp_previewwouldsend', 0):,} would be sent, skipped "
                 f"{row.get('cesp_previewskippedbyreason') or '{}'}, {sample} sample recipient(s); nothing sent")
    for p in planned:
        store.patch("cesp_sendrequests", p.request_id, {"cesp_status": STATUS_CODES[SendStatus.PENDING]})
    progress.say("      all three set Pending")


def _requests_state(sandbox: Any, planned: list[PlannedSend]) -> dict[str, dict]:
    return {p.request_id: sandbox.crm.store.get("cesp_sendrequests", p.request_id) or {} for p in planned}


def _wait(predicate: Callable[[], bool], timeout: float, daemon: subprocess.Popen, what: str,
          tick: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if tick:
            tick()
        if predicate():
            return
        if daemon.poll() is not None:
            raise DemoFailed(f"the daemon exited (code {daemon.returncode}) while {what}")
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout:.0f} s while {what}")
        time.sleep(0.5)


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> DemoResult:
    from connector.config import load_config
    from connector.sandbox import start_sandbox
    from connector.state.store import StateStore

    progress = Progress(out)
    base = Path(options.data_dir) if options.data_dir else Path(tempfile.mkdtemp(prefix="connector-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    sandbox_log = _SandboxLog(base / "sandbox.log")
    started = time.monotonic()
    progress.say(f"connector demo: working folder {base}")
    progress.say(f"[1/6] starting the sandbox and generating an organization of {options.contacts:,} contacts ...")
    try:
        sandbox = start_sandbox(base / "sandbox", seed=options.seed, contacts=options.contacts, customizations=False)
    except BaseException:
        sandbox_log.close()
        raise
    daemon: subprocess.Popen | None = None
    state: Any = None
    try:
        if sandbox.missing:
            raise DemoFailed("the sandbox is incomplete: " + "; ".join(sandbox.missing))
        org = sandbox.seeded
        progress.say(f"      CRM  {sandbox.crm.url}  ({org.contacts:,} contacts, {org.leads:,} leads, "
                     f"{org.accounts:,} accounts)")
        progress.say(f"      ESP  {sandbox.esp.soap_url}")
        progress.say(f"      SFTP {sandbox.sftp.host}:{sandbox.sftp.port}")
        ini = sandbox.write_service_ini(
            base / "service.ini",
            service={"data_dir": str(base / "var"), "drain_seconds": "30"},
            logging={"folder": str(base / "var" / "log"), "console": "off", "level": "INFO"},
            sends={"poll_minutes": "0.05"},
            imports={"poll_seconds": "1"},
            tracking={"poll_minutes": "0.1", "mode": options.tracking_mode, "initial_lookback_days": "2"},
            batching={"threshold": str(options.threshold), "batch_size": str(options.batch_size)},
        )
        config = load_config(ini)
        log_file = config.logging.folder / "connector.log"
        env = dict(os.environ)
        env.pop("CONNECTOR_CRASH_AT", None)
        progress.say(f"      service.ini: {ini}")

        progress.say("[2/6] applying the connector's CRM customizations: connector crm-setup ...")
        report = _run_checked(_connector_cmd("crm-setup", "-c", str(ini)), "connector crm-setup", env,
                              base / "crm-setup.out")
        for line in report.strip().splitlines()[-6:]:
            progress.say("      " + line)

        progress.say("[3/6] CRM users file three send requests (Drafts, targets added as related records)")
        planned = _file_requests(sandbox)
        for p in planned:
            progress.say(f"      - {p.label} (by {p.owner}; expected: {p.expect.lower()}"
                         f"{', ' + p.path + ' path' if p.path != 'refused' else ', no allowed role'})")

        progress.say("[4/6] starting the daemon: connector run -c service.ini")
        daemon_out = open_private(base / "daemon.out", "w", encoding="utf-8")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(_connector_cmd("run", "-c", str(ini)), stdout=daemon_out,
                                  stderr=subprocess.STDOUT, env=env)
        daemon_out.close()
        state = StateStore(config.state_url(), holder="demo-observer")
        _pick_email_preview_and_release(
            sandbox, planned, progress,
            lambda predicate, what: _wait(predicate, options.timeout, daemon, what))

        def sends_done() -> bool:
            rows = _requests_state(sandbox, planned)
            return all(STATUS.get(r.get("cesp_status")) in TERMINAL for r in rows.values())

        def show_send_progress() -> None:
            rows = _requests_state(sandbox, planned)
            parts = []
            try:
                jobs = {j.request_id: j for j in state.send_jobs()}
                batch_progress = state.batch_progress([p.request_id for p in planned])
            except Exception:  # noqa: BLE001 - the daemon may still be migrating the state database
                jobs, batch_progress = {}, {}
            for i, p in enumerate(planned, 1):
                status = STATUS.get(rows[p.request_id].get("cesp_status"), "?")
                job = jobs.get(p.request_id)
                detail = ""
                if job is not None and status not in TERMINAL:
                    detail = f" {job.status} {job.handed_over:,}/{job.resolved:,}"
                    bp = batch_progress.get(p.request_id)
                    if bp and bp.get("total"):
                        detail += f" files {bp.get('imported', 0)}/{bp['total']}"
                parts.append(f"#{i} {status}{detail}")
            finished = sum(STATUS.get(r.get("cesp_status")) in TERMINAL for r in rows.values())
            progress.update(" | ".join(parts), fraction=finished / len(planned))

        progress.phase("sends")
        _wait(sends_done, options.timeout, daemon, "waiting for the send requests", show_send_progress)
        progress.done()
        rows = _requests_state(sandbox, planned)
        for i, p in enumerate(planned, 1):
            r = rows[p.request_id]
            progress.say(f"      #{i} {STATUS.get(r.get('cesp_status'))}: handed over {r.get('cesp_handedover') or 0:,}"
                         f", skipped {r.get('cesp_skipped') or 0:,}, ESP job {r.get('cesp_espjobid') or '-'}")

        progress.say(f"[5/6] {options.advance_hours:.0f} simulated hours pass at the ESP (opens, clicks, bounces, "
                     "unsubscribes); waiting for the tracking step to pull them ...")
        sandbox.esp.advance(options.advance_hours)
        sandbox.esp.wait_idle(60)
        marker = state.now()

        def tracking_runs() -> int:
            # complete tracking runs that started after the clock moved: the second one
            # proves the first left nothing behind
            try:
                runs = state.recent_step_runs("tracking", limit=10)
            except Exception:  # noqa: BLE001
                return 0
            return len([r for r in runs if r.started_at and r.started_at >= marker and r.finished_at])

        def tracking_caught_up() -> bool:
            return tracking_runs() >= 2

        def show_tracking_progress() -> None:
            try:
                marks = state.watermarks()
            except Exception:  # noqa: BLE001
                marks = []
            progress.update("watermarks " + ", ".join(f"{w.event_type} {w.value:%m-%d %H:%M}"
                                                      for w in marks if w.value),
                            fraction=min(2, tracking_runs()) / 2)

        progress.phase("tracking")
        _wait(tracking_caught_up, options.timeout, daemon, "waiting for tracking", show_tracking_progress)
        progress.done()

        progress.say("[6/6] stopping the daemon (SIGTERM: finish in-flight work, then exit)")
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=120)
        except subprocess.TimeoutExpired:
            daemon.kill()
            raise DemoFailed("the daemon did not stop within 120 s of SIGTERM") from None
        result = _summarize(sandbox, config, planned, progress)
        if code != 0:
            result.problems.append(f"the daemon exited with code {code} after SIGTERM (see {base / 'daemon.out'})")
            result.ok = False
        result.service_ini = ini
        result.log_file = log_file
        progress.say("")
        progress.say(f"service.ini: {ini}")
        progress.say(f"logs:        {log_file}")
        progress.say(f"sandbox log: {base / 'sandbox.log'}")
        progress.say(f"took {time.monotonic() - started:.0f} s")
        if result.ok:
            progress.say("demo: OK — every figure above matches the sandbox's own records")
        else:
            progress.say("demo: FAILED")
            for problem in result.problems:
                progress.say(f"  - {problem}")
        if options.inspect is not None:
            options.inspect(sandbox, result)
        return result
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if state is not None:
            state.close()
        sandbox.stop()
        sandbox_log.close()


class _SandboxLog:
    """The sandbox runs in this process: its log lines (structlog and library loggers) go to a
    file, not over the progress, until ``close()``, which restores the logging set-up."""

    def __init__(self, path: Path) -> None:
        import logging

        import structlog

        self.handle = open_private(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.previous = structlog.get_config()
        root = logging.getLogger()
        self.previous_root = (list(root.handlers), root.level)
        structlog.configure(
            processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                        structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.JSONRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.WriteLoggerFactory(file=self.handle),
            cache_logger_on_first_use=False,
        )
        # library loggers (paramiko's server threads, urllib3) too
        self.stdlib = logging.StreamHandler(self.handle)
        self.stdlib.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.handlers[:] = [self.stdlib]
        root.setLevel(logging.INFO)

    def close(self) -> None:
        import logging

        import structlog

        structlog.configure(**self.previous)
        root = logging.getLogger()
        root.handlers[:], level = self.previous_root
        root.setLevel(level)
        self.handle.close()


def _summarize(sandbox: Any, config: Any, planned: list[PlannedSend], progress: Progress) -> DemoResult:
    import sqlalchemy as sa

    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    crm = sandbox.crm.store
    esp = sandbox.esp.store
    staging_engine = sa.create_engine(config.staging_url())
    table = config.staging.table
    progress.say("")
    progress.say("Summary")
    for i, p in enumerate(planned, 1):
        r = crm.get("cesp_sendrequests", p.request_id) or {}
        status = STATUS.get(r.get("cesp_status"), "?")
        skipped = json.loads(r.get("cesp_skippedbyreason") or "{}")
        counts = {c: int(r.get(f"cesp_{c}count") or 0) for c in COUNT_COLUMNS}
        job = r.get("cesp_espjobid") or ""
        responses = crm.execute(
            "SELECT count(*) FROM e_campaignresponse WHERE cesp_trackingkey LIKE ?",
            (tracking_key_prefix(str(job)) + "%",))[0][0] if job else 0
        staged = 0
        if job and config.tracking.mode == "all":  # the only mode with a staging table
            with staging_engine.connect() as conn:
                staged = conn.execute(sa.text(f'SELECT count(*) FROM "{table}" WHERE job_id = :job'),
                                      {"job": str(job)}).scalar_one()
        row = {"request": p.label, "id": p.request_id, "status": status, "resolved": r.get("cesp_resolved") or 0,
               "handed_over": r.get("cesp_handedover") or 0, "skipped": r.get("cesp_skipped") or 0,
               "skipped_by_reason": skipped, "esp_job": job, "tracking": counts,
               "campaign_responses": responses, "staging_rows": staged, "reason": r.get("cesp_reason") or ""}
        rows.append(row)
        progress.say(f"#{i} {p.label} — {status}" + (f", ESP job {job}" if job else ""))
        if status == "Failed":
            progress.say(f"    reason: {row['reason'][:200]}")
        else:
            progress.say(f"    recipients: {row['resolved']:,} resolved, {row['handed_over']:,} handed over, "
                         f"{row['skipped']:,} skipped"
                         + (" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items())) + ")" if skipped else ""))
            progress.say("    tracking: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v))
            progress.say(f"    campaign responses: {responses:,}   staging rows: {staged:,}")
        # checks against the sandbox's own records
        if status != p.expect:
            problems.append(f"#{i} {p.label}: status {status}, expected {p.expect} ({row['reason'][:200]})")
            continue
        if p.expect == "Failed":
            if "role" not in row["reason"].lower():
                problems.append(f"#{i} failed without naming the missing security role: {row['reason'][:200]}")
            if esp.sends_for(f"cesp-send-{p.request_id}"):
                problems.append(f"#{i} was refused in CRM but has a send at the ESP")
            continue
        if row["handed_over"] + row["skipped"] != row["resolved"]:
            problems.append(f"#{i} counts do not add up: {row['handed_over']} + {row['skipped']} != {row['resolved']}")
        sends = esp.sends_for(f"cesp-send-{p.request_id}")
        if len(sends) != 1:
            problems.append(f"#{i} has {len(sends)} sends at the ESP, expected exactly 1")
            continue
        send = sends[0]
        if str(send.id) != str(job):
            problems.append(f"#{i} CRM says ESP job {job}, the ESP's send is {send.id}")
        esp_counts = esp.send_counts(send)
        if esp_counts["sent"] != row["handed_over"]:
            problems.append(f"#{i} the ESP sent {esp_counts['sent']:,} emails, CRM says {row['handed_over']:,} handed over")
        if counts["sent"] != esp_counts["sent"]:
            problems.append(f"#{i} tracking counted {counts['sent']:,} sent, the ESP has {esp_counts['sent']:,}")
        # aggregate mode reads the Send's counters, which hold unique opens and clicks only
        # (the simulated recipients open and click at most once)
        opens, clicks = ("uniqueopen", "uniqueclick") if config.tracking.mode == "aggregate" else ("open", "click")
        if counts[opens] != esp_counts["open"] or counts[clicks] != esp_counts["click"]:
            problems.append(f"#{i} tracking {opens}/{clicks} {counts[opens]}/{counts[clicks]} differ from the ESP's "
                            f"{esp_counts['open']}/{esp_counts['click']}")
        if config.tracking.mode == "all":
            expected = sum(esp.event_count(t, send_id=send.id) for t in
                           ("SentEvent", "OpenEvent", "ClickEvent", "BounceEvent", "UnsubEvent", "NotSentEvent"))
            if staged != expected:
                problems.append(f"#{i} staging has {staged:,} rows, the ESP has {expected:,} events")
        if config.tracking.mode in ("responders", "all") and responses == 0:
            problems.append(f"#{i} no campaign responses were created")
        if p.path == "files" and not esp.runs_for(f"cesp-import-{p.request_id}-1"):
            problems.append(f"#{i} was expected to go by SFTP batch files, but the ESP ran no import")
    staging_engine.dispose()
    return DemoResult(ok=not problems, problems=problems, rows=rows)
