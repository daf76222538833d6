"""`connector demo` at a small size, end to end, checked against the sandbox's own records.

The demo checks itself; this test checks the demo: it looks at the sandbox directly
(ESP sends and list members, CRM campaign responses, the staging table) and compares
with what the summary says.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.demo import DemoOptions, run_demo
from connector.steps.tracking.rules import tracking_key_prefix

pytestmark = pytest.mark.slow


def test_demo_small_matches_the_sandbox(tmp_path: Path) -> None:
    seen: dict = {}

    def inspect(sandbox, result) -> None:
        esp = sandbox.esp.store
        crm = sandbox.crm.store
        for row in result.rows:
            key = row["id"]
            facts = {"sends": esp.sends_for(f"cesp-send-{key}"), "list": esp.list_by_key(f"cesp-list-{key}")}
            facts["crm"] = crm.get("cesp_sendrequests", key)
            job = row["esp_job"]
            facts["responses"] = (crm.execute("SELECT count(*) FROM e_campaignresponse WHERE cesp_trackingkey LIKE ?",
                                              (tracking_key_prefix(str(job)) + "%",))[0][0] if job else 0)
            if facts["sends"]:
                send = facts["sends"][0]
                facts["esp_counts"] = esp.send_counts(send)
                facts["events"] = sum(esp.event_count(t, send_id=send.id) for t in (
                    "SentEvent", "OpenEvent", "ClickEvent", "BounceEvent", "UnsubEvent", "NotSentEvent"))
            seen[key] = facts

    out = io.StringIO()
    result = run_demo(DemoOptions(data_dir=tmp_path, contacts=3000, threshold=1000, batch_size=400,
                                  tracking_mode="all", timeout=300, inspect=inspect), out=out)
    text = out.getvalue()
    assert result.ok, text + "\n" + "\n".join(result.problems)
    assert "demo: OK" in text and "Summary" in text
    assert "the e-mail picker holds" in text and "#1 previewed:" in text and "nothing sent" in text
    by_label = {row["request"]: row for row in result.rows}
    small, large, refused = (by_label[name] for name in (
        "VIP contacts and key accounts", "Spring newsletter (campaign)", "Trade fair leads (sent by a salesperson)"))

    # the refused request: failed in CRM with the role named, nothing at the ESP
    assert refused["status"] == "Failed" and "security roles" in refused["reason"]
    assert seen[refused["id"]]["sends"] == [] and seen[refused["id"]]["list"] is None

    staging = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'staging.db'}")
    with staging.connect() as conn:
        staged = dict(conn.execute(sa.text(
            "SELECT job_id, count(*) FROM connector_tracking_events GROUP BY job_id")).all())
    staging.dispose()
    for row in (small, large):
        facts = seen[row["id"]]
        assert row["status"] == "Sent" == {100000002: "Sent"}[facts["crm"]["cesp_status"]]
        assert len(facts["sends"]) == 1, "exactly one ESP send per request"
        assert str(facts["sends"][0].id) == row["esp_job"] == facts["crm"]["cesp_espjobid"]
        assert row["handed_over"] + row["skipped"] == row["resolved"] > 0
        assert sum(row["skipped_by_reason"].values()) == row["skipped"]
        assert facts["esp_counts"]["sent"] == row["handed_over"] == row["tracking"]["sent"]
        assert row["tracking"]["open"] == facts["esp_counts"]["open"]
        assert row["tracking"]["click"] == facts["esp_counts"]["click"]
        assert row["tracking"]["unsubscribe"] == facts["esp_counts"]["unsub"]
        assert row["staging_rows"] == staged[row["esp_job"]] == facts["events"]
        assert row["campaign_responses"] == facts["responses"] > 0
    # the large one went over SFTP: one import per 400-row file, the small one by SOAP
    assert large["resolved"] > 1000 and small["resolved"] <= 1000
    assert "service.ini:" in text and (tmp_path / "var" / "log" / "connector.log").exists()


def test_demo_command_line_parses() -> None:
    result = subprocess.run([sys.executable, "-m", "connector", "demo", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert "--contacts" in result.stdout and "--small" in result.stdout
