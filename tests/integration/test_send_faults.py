"""Faults at every peer slow a send down but do not fail it, lose nobody or duplicate anything.

CRM 429 storms and dropped connections, Marketing Cloud HTTP 500 throttling and
drops, SFTP drops: the send runs in the foreground (``send-now``'s loop) against the
sandbox with the fault knobs on, and must end Sent with the counts adding up.
"""

from __future__ import annotations

import io
import json
import threading

import pytest

from connector.commands.send_now import ProgressBar, run_one
from connector.config import load_config
from connector.sandbox.marketing_cloud import Latency

PENDING, SENT = 100000000, 100000002


def new_request(sb, **extra) -> str:
    org = sb.seeded
    targets = [{"kind": "list", "id": org.lists["newsletter"]}, {"kind": "list", "id": org.lists["vip"]}]
    return sb.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "Faults", "cesp_status": PENDING, "cesp_targets": json.dumps(targets),
        "ownerid": org.users["mia"], "ownerid__type": "systemuser", **extra})


def check(sb, rid: str) -> dict:
    row = sb.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == SENT, row["cesp_reason"]
    assert row["cesp_handedover"] + row["cesp_skipped"] == row["cesp_resolved"]
    assert sum(json.loads(row["cesp_skippedbyreason"]).values()) == row["cesp_skipped"]
    assert len(sb.esp.store.sends_for(f"cesp-send-{rid}")) == 1
    for seq in range(1, 50):
        assert len(sb.esp.store.runs_for(f"cesp-import-{rid}-{seq}")) <= 1, f"batch {seq} was imported twice"
    assert len(sb.esp.store.list_by_key(f"cesp-list-{rid}").members) == row["cesp_handedover"]
    return row


@pytest.mark.slow
def test_faults_slow_down_but_do_not_fail(sandbox, tmp_path) -> None:
    threshold = 0  # the file path meets all three peers (the SOAP path is exercised by the crash tests)
    # A Perform lost to a dropped connection may have reached the ESP: the start guard then waits
    # [esp] visibility_minutes before starting it again. Sandbox time scaled down (sends visible
    # after 0.6 s, import results after 0.3 s) and a horizon still well above that keep this quick.
    sandbox.esp.store.latency = Latency(scale=0.01)
    ini = sandbox.write_service_ini(tmp_path / "service.ini", batching__threshold=threshold,
                                    batching__batch_size=10, sends__soap_chunk_size=10, imports__poll_seconds=0.1,
                                    logging__console="off", tracking__mode="none", crm__max_retries=8,
                                    esp__max_retries=8, esp__visibility_minutes=0.05)
    config = load_config(ini)
    clean = new_request(sandbox)
    assert run_one(config, clean, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1) == 0
    reference = check(sandbox, clean)

    sandbox.crm.faults.set("throttle", next_n=4, rate=0.05, seconds=0.05)  # a 429 storm, then a drizzle
    sandbox.crm.faults.set("drop", next_n=1, rate=0.03)
    sandbox.esp.faults.set("http500", next_n=3, rate=0.05)
    sandbox.esp.faults.set("drop", next_n=1)
    sandbox.sftp.faults.set("drop", next_n=1)
    rid = new_request(sandbox)
    out = io.StringIO()
    assert run_one(config, rid, threading.Event(), ProgressBar(out, tty=False), 0.1) == 0, out.getvalue()
    row = check(sandbox, rid)
    assert row["cesp_resolved"] == reference["cesp_resolved"]
    assert sandbox.crm.faults.taken("throttle") and sandbox.esp.faults.taken("http500")
