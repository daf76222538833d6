#!/usr/bin/env python3
"""Benchmark of the KPI job: N customers x 3 KPIs from a SQL source into the Dataverse sandbox.

    bench/kpi.py --customers 100000 [--changed 0.01] [--crm sandbox|null] [--time-scale 10]

Processes, so each one's peak RSS is its own:

1. ``serve``: the Dataverse sandbox (default service-protection limits and costs, its clock
   ``--time-scale`` times the wall clock) holding N contacts with e-mail addresses;
2. ``step`` three times, each a fresh process running ``run_kpi`` with the real adapters over
   one SQLite state database: the first load (every value new), a second over the unchanged
   source (nothing to write), a third after ``--changed`` of the values were changed in the
   source (only those written).

The source is a SQLite file with N x 3 rows (revenue_6m, orders, churn_score); the query
reads them as they are (the aggregation is the query's job, not what is measured here).
``--crm null`` replaces CRM with an in-process stand-in that matches every customer and
accepts every write, to tell the step's own cost from the sandbox's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

for _var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(_var, None)

KPIS = ("revenue_6m", "orders", "churn_score")


def email(i: int) -> str:
    return f"customer{i}@example.test"


# -- 1. the sandbox ------------------------------------------------------------------------


def serve(workdir: Path, customers: int, time_scale: float) -> int:
    import logging

    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from connector.sandbox.dataverse import KeyActivation, Limits, start_crm_sandbox
    from connector.sandbox.tls import SandboxCA

    ca = SandboxCA(workdir / "ca")
    crm = start_crm_sandbox(workdir / "crm", ca, customizations=True, limits=Limits(time_scale=time_scale),
                            key_activation=KeyActivation(pending_seconds=0, build_seconds=0))
    entity = crm.store.schema.entity("contact")
    crm.store.insert_many(entity, ({"contactid": str(uuid.UUID(int=i + 1)), "lastname": f"No{i}",
                                    "emailaddress1": email(i)} for i in range(customers)))
    info = {"ca_file": str(ca.ca_file), "url": crm.url, "authority": crm.authority, "client_id": crm.client_id,
            "client_secret": crm.client_secret}
    (workdir / "sandbox.json").write_text(json.dumps(info), encoding="utf-8")
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    prot = crm.protection
    (workdir / "protection.json").write_text(json.dumps({
        "rows": crm.store.count("cesp_kpis"), "refused": prot.throttled,
        "refused_by_code": dict(prot.refused_by_code)}), encoding="utf-8")
    crm.stop()
    return 0


# -- 2. the source -------------------------------------------------------------------------


def make_source(path: Path, customers: int) -> None:
    db = sqlite3.connect(path)
    db.execute("create table kpis (customer_key text, kpi text, value real, period text)")
    db.executemany("insert into kpis values (?, ?, ?, ?)",
                   ((email(i), kpi, float((i * 7 + n * 13) % 1000) + 0.5, "2026-06..2026-11")
                    for i in range(customers) for n, kpi in enumerate(KPIS)))
    db.commit()
    db.close()


def change_source(path: Path, share: float) -> int:
    db = sqlite3.connect(path)
    every = max(1, round(1 / share))
    changed = db.execute("update kpis set value = value + 1 where rowid % ? = 0", (every,)).rowcount
    db.commit()
    db.close()
    return changed


# -- 3. the step ---------------------------------------------------------------------------


class NullCrm:
    """Matches every customer (id from the e-mail's number) and accepts every write."""

    def match_customers(self, table, column, values):
        return {v: [str(uuid.UUID(int=int(v.split("@")[0][8:]) + 1))] for v in values}

    def upsert_kpis(self, table, values):
        from connector.models import WriteResult

        return [WriteResult(v.key, True) for v in values]

    def remove_kpis(self, table, refs, *, delete=False):
        from connector.models import WriteResult

        return [WriteResult(f"{c}/{k}", True) for c, k in refs]

    def kpi_key_status(self, table):
        return "Active", ""

    def close(self):
        pass


def bench_config(workdir: Path, crm_kind: str):
    from connector.config import Config, CrmSettings, KpiSettings, StateSettings, TimeoutSettings

    crm = CrmSettings()
    if crm_kind == "sandbox":
        info = json.loads((workdir / "sandbox.json").read_text(encoding="utf-8"))
        crm = CrmSettings(url=info["url"], authority=info["authority"], client_id=info["client_id"],
                          client_secret=info["client_secret"], ca_bundle=info["ca_file"])
    return Config(crm=crm, timeouts=TimeoutSettings(crm_seconds=120),
                  state=StateSettings(url=f"sqlite:///{workdir / 'state.db'}"),
                  kpi=KpiSettings(source_url=f"sqlite:///{workdir / 'source.db'}",
                                  query="select customer_key, kpi, value, period from kpis",
                                  match_column="emailaddress1", source_name="bench"))


def step(workdir: Path, crm_kind: str) -> int:
    import structlog
    from tracking_floor import peak_rss_mb

    from connector.state.store import StateStore
    from connector.steps import StepContext
    from connector.steps.kpi import run_kpi

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    config = bench_config(workdir, crm_kind)
    state = StateStore(config.state_url(), holder="bench")
    state.migrate()
    if crm_kind == "sandbox":
        from connector.crm.dataverse import DataverseCrmClient
        from connector.crm.setup import CrmSetup

        crm = DataverseCrmClient.from_config(config)
        CrmSetup(crm.http, kpi_customer="contact").run(poll_seconds=0.2)  # present after the first run
    else:
        crm = NullCrm()
    ctx = StepContext(config=config, state=state, crm=lambda: crm, esp=lambda: None, file_drop=lambda: None,
                      staging=lambda: None, run_id=uuid.uuid4().hex, holder="bench")
    started, cpu = time.perf_counter(), time.process_time()
    outcome = run_kpi(ctx)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    crm.close()
    state.close()
    print(json.dumps({"ok": outcome.ok, "message": outcome.message[:300], "details": outcome.details,
                      "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb()}))
    return 0


# -- orchestration -------------------------------------------------------------------------


def child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the KPI job against the sandbox.")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of the values changed before run 3")
    parser.add_argument("--crm", choices=("sandbox", "null"), default="sandbox")
    parser.add_argument("--time-scale", type=float, default=10.0,
                        help="the CRM sandbox's clock runs this many times faster than the wall clock")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("_role", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._role[:1] == ["serve"]:
        return serve(Path(args._role[1]), args.customers, args.time_scale)
    if args._role[:1] == ["step"]:
        return step(Path(args._role[1]), args.crm)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-kpi-"))
    workdir.mkdir(parents=True, exist_ok=True)
    me = str(Path(__file__).resolve())
    make_source(workdir / "source.db", args.customers)
    server = None
    serve_log = open(workdir / "serve.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    runs: dict[str, dict] = {}
    try:
        if args.crm == "sandbox":
            server = subprocess.Popen([sys.executable, me, "--customers", str(args.customers), "--time-scale",
                                       str(args.time_scale), "serve", str(workdir)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=serve_log, text=True, cwd=ROOT)
            if server.stdout.readline().strip() != "ready":
                raise SystemExit("the sandbox did not start")
        runs["first"] = child(me, "--crm", args.crm, "step", str(workdir))
        runs["unchanged"] = child(me, "--crm", args.crm, "step", str(workdir))
        changed = change_source(workdir / "source.db", args.changed)
        runs["changed"] = child(me, "--crm", args.crm, "step", str(workdir))
    finally:
        if server is not None:
            server.stdin.close()
            server.wait(timeout=120)
        serve_log.close()
    crm_rows = None
    if args.crm == "sandbox":
        crm_rows = json.loads((workdir / "protection.json").read_text(encoding="utf-8"))
    report = {
        "customers": args.customers, "rows": args.customers * len(KPIS), "changed": changed, "crm": args.crm,
        "time_scale": args.time_scale if args.crm == "sandbox" else None, "crm_side": crm_rows,
        "runs": {name: {"s": round(r["seconds"], 1), "cpu_s": round(r["cpu_seconds"], 1),
                        "rss_mb": round(r["peak_rss_mb"]), "written": r["details"]["written"],
                        "unchanged": r["details"]["unchanged"], "ok": r["ok"]} for name, r in runs.items()},
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"kpi bench: {args.customers} customers x {len(KPIS)} KPIs = {report['rows']} rows, CRM {args.crm}"
              + (f" (time scale {args.time_scale})" if args.crm == "sandbox" else ""))
        for name, r in report["runs"].items():
            print(f"  {name:<10} {r['s']:>8} s  (CPU {r['cpu_s']} s)  peak RSS {r['rss_mb']} MB  "
                  f"written {r['written']}  unchanged {r['unchanged']}  ok={r['ok']}")
        if crm_rows:
            print(f"  CRM: {crm_rows['rows']} KPI rows; refused {crm_rows['refused']} {crm_rows['refused_by_code']}")
        print(f"  values changed before the third run: {changed}; {report['machine']}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = all(r["ok"] for r in runs.values()) and runs["unchanged"]["details"]["written"] == 0 \
        and runs["changed"]["details"]["written"] == changed
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
