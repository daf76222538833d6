"""Takeover between instances: kill -9 the holder of a send at each phase, another instance finishes it.

Invariant 8 (DESIGN.md): what one instance leaves on its own disk is a cache. Each
instance here is a real ``connector run --once`` process with its own ``data_dir``
(as on two hosts) and its own ``instance_id``; they share one PostgreSQL state
database and the sandbox peers. The holder dies at a crash point; once its lease
is over, the survivor must finish the send from the state database and the peers
alone: exactly one ESP send, every recipient handed over once, counts that add
up, no traceback, nothing left Processing.

The lease expiry is fast-forwarded in the state database for all cases but one,
which waits for it for real. ``bench/send_takeover.py`` runs every crash point,
several rounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.sandbox.marketing_cloud import Latency

ROOT = Path(__file__).resolve().parents[2]
SENT, PENDING = 100000002, 100000000

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class Cluster:
    """The sandbox peers, one PostgreSQL state database, and instances started on demand."""

    def __init__(self, base: Path, state_url: str) -> None:
        from connector.sandbox import start_sandbox

        self.base, self.state_url = base, state_url
        # the ESP's realistic delays at 1/20: import results visible after 1.5 s, a started send after 3 s
        self.sb = start_sandbox(base / "sb", seed=3, contacts=200, esp_latency=Latency(scale=0.05))
        self.logs: dict[str, Path] = {}

    def ini(self, name: str, lease_seconds: int = 60) -> Path:
        """An instance of its own: ``instance_id`` = name, ``data_dir`` and logs in its own folder."""
        return self.sb.write_service_ini(
            self.base / name / "service.ini", service__instance_id=name, state__url=self.state_url,
            state__lease_seconds=lease_seconds, imports__poll_seconds=0.2, logging__console="off",
            tracking__mode="none", sends__soap_chunk_size=20, batching__batch_size=15,
            esp__visibility_minutes=0.1)  # 6 s: above the sandbox's delays, so a start never made is made

    def new_request(self, files: bool) -> str:
        org = self.sb.seeded
        targets = [{"kind": "list", "id": org.lists["newsletter"]}, {"kind": "list", "id": org.lists["vip"]}]
        return self.sb.crm.store.insert("cesp_sendrequests", {
            "cesp_name": "Takeover", "cesp_status": PENDING, "cesp_targets": json.dumps(targets),
            "cesp_forcebatching": files, "ownerid": org.users["mia"], "ownerid__type": "systemuser"})

    def run_once(self, name: str, crash: str | None = None, lease_seconds: int = 60) -> int:
        ini = self.ini(name, lease_seconds)
        env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_CRASH_AT"}
        if crash:
            env["CONNECTOR_CRASH_AT"] = crash
        done = subprocess.run([sys.executable, "-m", "connector", "run", "-c", str(ini), "--once"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode in (0, -signal.SIGKILL), done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done.returncode

    def status(self, rid: str) -> int:
        return self.sb.crm.store.get("cesp_sendrequests", rid)["cesp_status"]

    def expire_leases_of(self, prefix: str) -> int:
        """Fast-forward the leases of dead holders ``<prefix>...@`` to their expiry."""
        engine = sa.create_engine(self.state_url)
        try:
            with engine.begin() as conn:
                return conn.execute(sa.text("update leases set expires_at = now() - interval '1 second' "
                                            "where holder like :p"), {"p": f"{prefix}%"}).rowcount
        finally:
            engine.dispose()

    def finish(self, name: str, rids: list[str], rounds: int = 20) -> None:
        for _ in range(rounds):
            if all(self.status(r) == SENT for r in rids):
                return
            self.run_once(name)
        stuck = {r: self.sb.crm.store.get("cesp_sendrequests", r).get("cesp_reason") for r in rids
                 if self.status(r) != SENT}
        assert not stuck, f"not Sent after {rounds} runs of {name}: {stuck}"

    def job_status(self, rid: str) -> str:
        engine = sa.create_engine(self.state_url)
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("select status from send_jobs where request_id = :r"), {"r": rid}).scalar()
        finally:
            engine.dispose()

    def log_text(self, name: str) -> str:
        return "".join(p.read_text(encoding="utf-8", errors="replace")
                       for p in sorted((self.base / name / "var" / "log").glob("connector.log*")))

    def outcome(self, rid: str) -> tuple:
        esp = self.sb.esp.store
        row = self.sb.crm.store.get("cesp_sendrequests", rid)
        sends = esp.sends_for(f"cesp-send-{rid}")
        assert len(sends) == 1, f"{len(sends)} ESP sends for one request"
        assert row["cesp_espjobid"] == str(sends[0].id)
        assert row["cesp_handedover"] + row["cesp_skipped"] == row["cesp_resolved"], row
        by_reason = json.loads(row["cesp_skippedbyreason"])
        assert sum(by_reason.values()) == row["cesp_skipped"]
        members = esp.list_by_key(f"cesp-list-{rid}").members
        assert len(set(members)) == row["cesp_handedover"], "a recipient was handed over twice (or lost)"
        for seq in range(1, 60):
            assert len(esp.runs_for(f"cesp-import-{rid}-{seq}")) <= 1, "a batch file was imported twice"
        esp_side = sum(v for k, v in by_reason.items() if k.startswith("esp_"))
        crm_side = tuple(sorted((k, v) for k, v in by_reason.items() if not k.startswith("esp_")))
        return row["cesp_resolved"], row["cesp_handedover"] + esp_side, crm_side


# (path, crash point, phase) — the phase the holder dies in
CASES = [
    ("files", "after_chunk_committed:2", "resolving"),
    ("files", "after_batch_uploaded:4", "uploading"),
    ("files", "after_import_started:3", "importing"),
    ("files", "after_send_started", "releasing"),
    ("soap", "after_soap_chunk:3", "handing over by SOAP"),
]
REAL_WAIT = ("files", "after_batch_finished:3", "resolving, mid-chunk")
"""The last case: its lease runs out for real (10 s) while the survivor keeps polling."""


def run_takeover(cluster: Cluster, cases: list[tuple[str, str, str]], real_wait: tuple[str, str, str] | None,
                 survivor: str = "survivor") -> dict[str, tuple]:
    reference = {}
    for path in ("files", "soap"):
        rid = cluster.new_request(files=path == "files")
        cluster.finish(survivor, [rid])
        reference[path] = cluster.outcome(rid)
    assert reference["files"] == reference["soap"]
    killed: dict[str, tuple[str, str, str]] = {}
    holders = []
    for i, case in enumerate(cases + ([real_wait] if real_wait else [])):
        path, point, _phase = case
        rid = cluster.new_request(files=path == "files")
        lease = 10 if case is real_wait else 300  # long enough for every holder to die before any takeover
        for _ in range(10):  # a holder runs (as its own restarts would) until it dies at the point
            if cluster.run_once(f"holder{i}", crash=point, lease_seconds=lease) == -signal.SIGKILL:
                break
        else:
            pytest.fail(f"crash point {point} was never reached")
        killed[rid] = case
        if case is not real_wait:
            holders.append(f"holder{i}@")
    for holder in holders:  # their leases were taken for 300 s: fast-forward to their end
        cluster.expire_leases_of(holder)
    cluster.finish(survivor, list(killed))
    for _ in range(3):  # Sent in CRM, but the holder died before its state said so: the survivor records it
        if all(cluster.job_status(rid) == "sent" for rid in killed):
            break
        cluster.run_once(survivor)
    outcomes = {}
    for rid, case in killed.items():
        outcomes[rid] = cluster.outcome(rid)
        assert outcomes[rid] == reference["files"], (case, outcomes[rid], reference["files"])
        assert cluster.job_status(rid) == "sent", case
    text = cluster.log_text(survivor)
    assert "Traceback" not in text and "FileNotFoundError" not in text
    return outcomes


@pytest.fixture
def cluster(tmp_path, pg_url):
    c = Cluster(tmp_path, pg_url)
    yield c
    c.sb.stop()


def test_another_instance_finishes_a_send_whose_holder_was_killed_at_each_phase(cluster: Cluster) -> None:
    run_takeover(cluster, CASES, REAL_WAIT)
    assert "send_taken_over" in cluster.log_text("survivor")
