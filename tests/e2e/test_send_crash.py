"""kill -9 of a real ``connector run --once`` at many points of a send; restart; check the result.

Invariant (DESIGN.md 1, 2, 5): one CRM send request releases exactly one ESP send,
every recipient is handed over once, every batch file is imported once, and handed
over + skipped = resolved, whatever point the process dies at. The peers are the
sandbox servers (CRM, ESP, SFTP), which live in the test process and so outlive the
killed connector.

The ESP sandbox is asynchronous as Marketing Cloud is: a started send is retrievable
only after a delay (here longer than the test takes, until the test moves the ESP's
clock on) and an import's results after a shorter one. So a restart right after a
crash between the Perform and the state write finds nothing at the ESP: the cases
below show that the start guard waits for the send (or import) instead of starting it
again, and that a start requested but never performed is made once its horizon passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from connector.sandbox.marketing_cloud import Latency

ROOT = Path(__file__).resolve().parents[2]
SENT, PENDING = 100000002, 100000000
LATENCY = Latency(send_visible_seconds=3600, scale=0.05)

pytestmark = pytest.mark.slow


class World:
    def __init__(self, base: Path) -> None:
        from connector.sandbox import start_sandbox

        # time scale 0.05: import results visible 1.5 s after the start; sends only after 180 s,
        # i.e. not before the test moves the ESP clock on (advance_past_delays)
        self.sb = start_sandbox(base / "sb", seed=3, contacts=200, esp_latency=LATENCY)
        common = dict(service__instance_id="crash-test", state__lease_seconds=10, imports__poll_seconds=0.2,
                      logging__console="off", tracking__mode="none", sends__soap_chunk_size=20)
        files = dict(batching__threshold=0, batching__batch_size=40)
        self.ini = {
            "files": self.sb.write_service_ini(base / "files" / "service.ini", **files, **common),
            "soap": self.sb.write_service_ini(base / "soap" / "service.ini", **common),
            # [esp] visibility_minutes of 6 s and of 30 s: above the sandbox's 1.5 s for import results,
            # below the default 30 minutes, so that a start marked but never performed (a crash between
            # the mark and the Perform, in this or the other hand-over thread) is made within the test
            "files-short": self.sb.write_service_ini(base / "files-short" / "service.ini", **files, **common,
                                                     esp__visibility_minutes=0.1),
            "files-mid": self.sb.write_service_ini(base / "files-mid" / "service.ini", **files, **common,
                                                   esp__visibility_minutes=0.5),
        }
        self.expected: dict[str, tuple] = {}

    def new_request(self) -> str:
        org = self.sb.seeded
        targets = [{"kind": "list", "id": org.lists["newsletter"]}, {"kind": "list", "id": org.lists["vip"]}]
        return self.sb.crm.store.insert("cesp_sendrequests", {
            "cesp_name": "Crash test", "cesp_status": PENDING, "cesp_targets": json.dumps(targets),
            "ownerid": org.users["mia"], "ownerid__type": "systemuser"})

    def run_once(self, path: str, crash: str | None = None) -> int:
        env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_CRASH_AT"}
        if crash:
            env["CONNECTOR_CRASH_AT"] = crash
        done = subprocess.run([sys.executable, "-m", "connector", "run", "-c", str(self.ini[path]), "--once"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode in (0, -signal.SIGKILL), done.stderr[-3000:]
        return done.returncode

    def request(self, rid: str) -> dict:
        return self.sb.crm.store.get("cesp_sendrequests", rid)

    def run_to_crash(self, path: str, rid: str, crash: str) -> None:
        for _ in range(6):
            if self.run_once(path, crash) == -signal.SIGKILL:
                return
        raise AssertionError(f"crash point {crash} was never reached")

    def job(self, path: str, rid: str):  # noqa: ANN201 - a state SendJob
        from connector.config import load_config
        from connector.state.store import StateStore

        store = StateStore(load_config(self.ini[path]).state_url(), holder="crash-test-observer")
        try:
            return store.get_send_job(rid), store.batches(rid)
        finally:
            store.close()

    def run_to_end(self, path: str, rid: str, crash: str | None = None) -> bool:
        """Runs until the request is Sent; True if the crash point was hit on the way."""
        killed = False
        # a start marked but never performed waits out its horizon (up to 30 s here): run until a
        # deadline, not a number of runs (on a fast machine 40 runs take less than the horizon)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.request(rid)["cesp_status"] == SENT:
                break
            rc = self.run_once(path, None if killed else crash)
            killed = killed or rc == -signal.SIGKILL
        if self.request(rid)["cesp_status"] != SENT:
            job, batches = self.job(path, rid)
            raise AssertionError(f"not Sent: {self.request(rid).get('cesp_reason')}; job {job}; "
                                 f"batches {[(b.seq, b.status, b.error) for b in batches]}")
        return killed

    def outcome(self, rid: str) -> tuple:
        esp = self.sb.esp.store
        row = self.request(rid)
        sends = esp.sends_for(f"cesp-send-{rid}")
        assert len(sends) == 1, f"{len(sends)} ESP sends for one request"
        assert row["cesp_espjobid"] == str(sends[0].id)
        assert row["cesp_handedover"] + row["cesp_skipped"] == row["cesp_resolved"]
        by_reason = json.loads(row["cesp_skippedbyreason"])
        assert sum(by_reason.values()) == row["cesp_skipped"]
        members = frozenset(esp.list_by_key(f"cesp-list-{rid}").members)
        assert len(members) == row["cesp_handedover"]
        for seq in range(1, 20):
            assert len(esp.runs_for(f"cesp-import-{rid}-{seq}")) <= 1, f"batch file {seq} was imported twice"
        # ESP-side skips (unsubscribed/bounced/held) change as earlier sends in this module produce
        # events; the CRM-side reasons and the total that reached the ESP's screening do not.
        esp_side = sum(v for k, v in by_reason.items() if k.startswith("esp_"))
        crm_side = tuple(sorted((k, v) for k, v in by_reason.items() if not k.startswith("esp_")))
        return row["cesp_resolved"], row["cesp_handedover"] + esp_side, crm_side


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("send-crash"))
    yield w
    w.sb.stop()


@pytest.fixture(scope="module")
def expected(world: World) -> dict:
    out = {}
    for path in ("files", "soap"):
        rid = world.new_request()
        assert not world.run_to_end(path, rid)
        out[path] = world.outcome(rid)
        resolved, handed, reasons = out[path]
        assert handed > 50 and dict(reasons).get("duplicate"), (resolved, handed, reasons)
    assert out["files"] == out["soap"]
    return out


FILE_POINTS = [
    "before_crm_claim", "after_claim", "after_chunk_committed", "after_batch_finished:2", "after_resolved",
    "after_batch_uploaded:2", "after_importing_shown", "after_send_recorded", "after_crm_updated",
]
SOAP_POINTS = ["after_resolved", "after_soap_chunk:3"]


@pytest.mark.parametrize("path, point", [("files-short", p) for p in FILE_POINTS] + [("soap", p) for p in SOAP_POINTS])
def test_kill_at_any_point_releases_exactly_one_send(world: World, expected: dict, path: str, point: str) -> None:
    rid = world.new_request()
    assert world.run_to_end(path, rid, crash=point), f"crash point {point} was never reached"
    assert world.outcome(rid) == expected[path.removesuffix("-short")]


@pytest.mark.parametrize("path", ["files", "soap"])
def test_restart_before_the_started_send_is_visible_waits_for_it(world: World, expected: dict, path: str) -> None:
    """Killed between the Perform that started the send and the state write; restarted while the
    ESP does not show the send yet: the restart must wait for it, not start a second one."""
    rid = world.new_request()
    key = f"cesp-send-{rid}"
    world.run_to_crash(path, rid, "after_send_started")
    esp = world.sb.esp.store
    assert len(esp.sends_for(key)) == 1
    assert all(s.definition_key != key for s in esp.visible_sends())  # Retrieve cannot see it yet
    world.run_once(path)  # the restart, sooner than the ESP's visibility delay
    job, _ = world.job(path, rid)
    assert job.status == "starting" and not job.esp_job_id and "does not show it yet" in job.phase_detail
    assert len(esp.sends_for(key)) == 1, "the restart started the send a second time"
    world.sb.esp.advance_past_delays()  # now the ESP shows the send: the next run records it
    assert not world.run_to_end(path, rid)
    assert world.outcome(rid) == expected[path]


def test_start_requested_but_never_performed_is_made_after_the_horizon(world: World, expected: dict) -> None:
    """Killed after the durable start mark, before the Perform: nothing reached the ESP. The restart
    waits [esp] visibility_minutes (6 s here) for a send that never comes, then starts it, once."""
    rid = world.new_request()
    world.run_to_crash("files-short", rid, "before_send_started")
    assert world.sb.esp.store.sends_for(f"cesp-send-{rid}") == []
    world.run_to_end("files-short", rid)
    assert world.outcome(rid) == expected["files"]


def test_restart_before_the_started_import_is_visible_waits_for_it(world: World, expected: dict) -> None:
    """Killed between an import's Perform and the state write, restarted while the ESP shows no
    results for it yet: the import is waited for, never started twice for one file."""
    esp = world.sb.esp
    esp.store.latency = replace(LATENCY, import_summary_seconds=3600)  # results only after the clock moves
    try:
        rid = world.new_request()
        world.run_to_crash("files-mid", rid, "after_import_started:2")
        world.run_once("files-mid")  # the restart, sooner than the visibility of the import's results
        _job, batches = world.job("files-mid", rid)
        runs = {b.seq: len(esp.store.runs_for(f"cesp-import-{rid}-{b.seq}")) for b in batches}
        # the killed one (the second import started, whichever hand-over thread it was in) is still
        # waiting to be seen, with its one run at the ESP; nothing was started twice
        assert any(b.status == "starting" and runs[b.seq] == 1 for b in batches), (batches, runs)
        assert max(runs.values()) == 1, f"the restart started an import again: {runs}"
    finally:
        esp.store.latency = LATENCY
    esp.advance_past_delays()
    assert not world.run_to_end("files-mid", rid)
    assert world.outcome(rid) == expected["files"]


def test_import_start_requested_but_never_performed_is_made_after_the_horizon(world: World, expected: dict) -> None:
    rid = world.new_request()
    world.run_to_crash("files-short", rid, "before_import_started:2")
    _job, batches = world.job("files-short", rid)
    assert any(b.status == "starting" and not world.sb.esp.store.runs_for(f"cesp-import-{rid}-{b.seq}")
               for b in batches)  # marked, never performed
    world.run_to_end("files-short", rid)
    assert world.outcome(rid) == expected["files"]
