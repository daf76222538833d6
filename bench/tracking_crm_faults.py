"""Tracking while the Dataverse sandbox answers a share of its requests with HTTP 500.

    python bench/tracking_crm_faults.py [--recipients 5200] [--rate 0.07] [--runs 5] [--max-retries 5]

The scenario of issue 19.4: one send of N recipients with sent, open, click, bounce and
unsub events (5 x N), tracking mode ``all``, the CRM sandbox's ``http500`` knob at the
given rate. Runs the tracking step ``--runs`` times with the fault on, then once more
with it off, and prints per run: ok, new events, events left for the next run, 500s
injected, seconds. At the end it checks exactly once: staging rows, campaign responses
and the send request's counts against 5 x N. The short version is
``tests/integration/test_tracking_crm_faults.py``; figures are in docs/tracking.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(_var, None)

TYPES = ("SentEvent", "OpenEvent", "ClickEvent", "BounceEvent", "UnsubEvent")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=5200)
    parser.add_argument("--rate", type=float, default=0.07)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-retries", type=int, default=5)
    args = parser.parse_args()

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    from connector.crm.dataverse import DataverseCrmClient
    from connector.esp.marketing_cloud import MarketingCloudEspClient
    from connector.sandbox.dataverse import start_crm_sandbox
    from connector.sandbox.marketing_cloud import start_esp_sandbox
    from connector.sandbox.marketing_cloud.events import synthetic_keys
    from connector.sandbox.tls import SandboxCA
    from connector.staging.sql import SqlStagingStore
    from connector.state.store import StateStore
    from connector.steps import StepContext
    from connector.steps.tracking import run_tracking
    from tests.fixtures.tracking import sandbox_tracking_config, seed_crm_contacts, seed_crm_send

    n = args.recipients
    with tempfile.TemporaryDirectory(prefix="bench-crm-500-") as tmp_name:
        tmp = Path(tmp_name)
        ca = SandboxCA(tmp / "ca")
        crm = start_crm_sandbox(tmp / "crm", ca, customizations=True)
        root = tmp / "sftp-root"
        (root / "Import").mkdir(parents=True)
        esp = start_esp_sandbox(tmp / "esp", ca, import_root=root)
        try:
            job = str(esp.store.generate_events(n, event_types=TYPES, seed=5, hours=20.0))
            seed_crm_contacts(crm, synthetic_keys(n, 5))
            request_id, campaign_id = seed_crm_send(crm)
            config = sandbox_tracking_config(tmp, crm, esp, ca.ca_file, mode="all", initial_lookback_days=2,
                                             event_types=("sent", "open", "click", "bounce", "unsub"))
            config = config.model_copy(update={"crm": config.crm.model_copy(update={"max_retries": args.max_retries})})
            state = StateStore(config.state_url(), holder="bench")
            state.migrate()
            state.add_tracked_send("default", job, request_id, campaign_id, "Bench")
            e, c, s = (MarketingCloudEspClient.from_config(config), DataverseCrmClient.from_config(config),
                       SqlStagingStore.from_config(config))
            ctx = StepContext(config=config, state=state, crm=lambda: c, esp=lambda: e, file_drop=lambda: None,
                              staging=lambda: s, run_id="bench", holder="bench")
            print(f"{n} recipients, {5 * n} events, mode all, http500 at {args.rate:.0%}, "
                  f"[crm] max_retries = {args.max_retries}")
            for run in range(args.runs + 1):
                faulty = run < args.runs
                crm.faults.set("http500", rate=args.rate if faulty else 0.0)
                before = crm.faults.taken("http500") if faulty else 0
                started = time.monotonic()
                outcome = run_tracking(ctx)
                took = time.monotonic() - started
                injected = (crm.faults.taken("http500") - before) if faulty else 0
                print(f"run {run + 1} ({'500s on' if faulty else '500s off'}): ok={outcome.ok} "
                      f"new={outcome.processed} left={outcome.details['retry_later']} 500s={injected} "
                      f"{took:.1f} s" + ("" if outcome.ok else f" :: {outcome.message[-160:]}"))
            req = crm.store.get("cesp_sendrequests", request_id)
            bounces = sum(req[f"cesp_{k}bouncecount"] for k in ("hard", "soft", "block", "technical", "unknown"))
            counts = (req["cesp_sentcount"], req["cesp_opencount"], req["cesp_clickcount"], bounces,
                      req["cesp_unsubscribecount"])
            totals = (s.count(), crm.store.count("campaignresponses"))
            exact = totals == (5 * n, 5 * n) and counts == (n,) * 5
            print(f"staging rows {totals[0]}, campaign responses {totals[1]}, counts {counts}: "
                  f"{'exactly once' if exact else 'NOT exactly once'}")
            for adapter in (e, c, s):
                adapter.close()
            state.close()
            return 0 if exact else 1
        finally:
            crm.stop()
            esp.stop()


if __name__ == "__main__":
    sys.exit(main())
