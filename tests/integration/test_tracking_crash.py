"""kill -9 in the middle of a tracking pull: the next run neither skips nor doubles anything.

A child process runs the tracking step with the in-process ESP/CRM doubles (the CRM's
organization is an SQLite file, so it outlives the child) over SQLite state and staging
files, and is killed by SIGKILL at a named crash point. A second child runs to the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys
from datetime import timedelta
from pathlib import Path
from connector.models import EventType as E
from connector.steps.tracking import run_tracking
from tests.doubles.esp import FakeEsp
from tests.fixtures.tracking import CAMPAIGN, JOB, REQUEST, T0, make_event, tracking_context, tracking_crm

tmp = Path(sys.argv[1])
esp = FakeEsp(page_size=7, shuffle=True)
esp.add(*(make_event(E.SENT, i, T0 + timedelta(seconds=i)) for i in range(40)))
esp.add(*(make_event(E.OPEN, i, T0 + timedelta(minutes=i)) for i in range(0, 40, 2)))
esp.add(*(make_event(E.OPEN, i, T0 + timedelta(minutes=i, seconds=30)) for i in range(0, 40, 4)))
crm = tracking_crm(tmp / "crm.db", contacts=40)  # the CRM's organization outlives the child
ctx = tracking_context(tmp, esp, crm, mode="all", event_types=("sent", "open"), overlap_minutes=0)
ctx.state.add_tracked_send("default", JOB, REQUEST, CAMPAIGN, "Spring")
outcome = run_tracking(ctx)
print("OUTCOME", outcome.ok, outcome.processed, flush=True)
ctx.staging().close()
ctx.state.close()
"""

EXPECTED_EVENTS = 40 + 20 + 10


def run_child(tmp: Path, crash_at: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CONNECTOR_CRASH_AT", None)
    if crash_at:
        env["CONNECTOR_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", CHILD, str(tmp)], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=120)


def staging_rows(tmp: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{tmp / 'staging.db'}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("select count(*) from connector_tracking_events")).scalar_one()
    finally:
        engine.dispose()


def send_counts(tmp: Path) -> dict:
    from connector.state.store import StateStore

    store = StateStore(f"sqlite:///{tmp / 'state.db'}", holder="check")
    try:
        return store.send_counts("1001")
    finally:
        store.close()


@pytest.mark.parametrize("crash_at", ["tracking_after_page:3", "tracking_after_staging:4", "tracking_after_page:5"])
def test_kill_9_between_pages_neither_skips_nor_doubles(tmp_path: Path, crash_at: str) -> None:
    first = run_child(tmp_path, crash_at)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert "OUTCOME" not in first.stdout
    partial = staging_rows(tmp_path)
    assert 0 < partial < EXPECTED_EVENTS

    second = run_child(tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "OUTCOME True" in second.stdout

    assert staging_rows(tmp_path) == EXPECTED_EVENTS
    assert send_counts(tmp_path) == {"sent": 40, "opens": 30, "unique_opens": 20}
    from tests.doubles.crm import FakeCrm

    crm = FakeCrm(tmp_path / "crm.db")  # the organization the children wrote to
    created = [row["cesp_trackingkey"] for row in crm.store.rows("campaignresponses")]
    assert len(created) == len(set(created)) == 40 + 20  # one per recipient per kind, at most once

    third = run_child(tmp_path)  # a later run re-reads the overlap: nothing changes
    assert third.returncode == 0
    assert staging_rows(tmp_path) == EXPECTED_EVENTS
    assert send_counts(tmp_path) == {"sent": 40, "opens": 30, "unique_opens": 20}
