"""``connector send-now REQUEST_ID -c service.ini`` end to end against the sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from connector.config import load_config
from connector.state.store import StateStore

ROOT = Path(__file__).resolve().parents[2]


def test_send_now_runs_one_request_with_progress(sandbox, tmp_path) -> None:
    ini = sandbox.write_service_ini(tmp_path / "service.ini", batching__threshold=0, batching__batch_size=10,
                                    imports__poll_seconds=0.2, tracking__mode="none")
    org = sandbox.seeded
    rid = sandbox.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "Now", "cesp_status": 100000000,
        "cesp_targets": json.dumps([{"kind": "list", "id": org.lists["newsletter"]}]),
        "ownerid": org.users["mia"], "ownerid__type": "systemuser"})
    done = subprocess.run([sys.executable, "-m", "connector", "send-now", rid, "-c", str(ini), "--poll-seconds", "0.2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert any(line.startswith("resolving") for line in lines)
    assert lines[-1].startswith("sent: ESP job ")
    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == 100000002 and row["cesp_espjobid"] in lines[-1]
    with StateStore.from_config(load_config(ini)) as store:  # registered as its own process, like `connector run`
        (me,) = [i for i in store.instances(include_stopped=True) if i["label"].split("/")[-1] == "send-now"]
        assert me["stopped_at"] is not None and me["holder"].startswith(f"{me['label']}@{me['host']}:{me['pid']}:")
        assert store.lease_holder(f"send:{rid}") is None

    again = subprocess.run([sys.executable, "-m", "connector", "send-now", rid, "-c", str(ini)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "not Pending" in again.stderr
    assert len(sandbox.esp.store.sends_for(f"cesp-send-{rid}")) == 1
