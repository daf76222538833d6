"""Two connector instances sharing one PostgreSQL state database (DESIGN.md invariants 1, 2, 8).

Each instance has its own ``data_dir`` (as on two hosts) and its own state store
(its own process identity); the peers are the sandbox servers. A loser of a claim
race changes nothing in the shared state.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from connector.config import load_config
from connector.runtime import AdapterPool
from connector.state.records import BATCH_SUPERSEDED
from connector.state.store import StateStore
from connector.steps import StepContext
from connector.steps.send.attempt import process_request
from connector.steps.send.step import run_sends

pytestmark = pytest.mark.postgres

PENDING, PROCESSING, SENT = 100000000, 100000001, 100000002


class Instance:
    """One connector instance: its own config (data_dir), state store and adapters."""

    def __init__(self, sb, base: Path, name: str, pg_url: str, **overrides) -> None:
        ini = sb.write_service_ini(base / name / "service.ini", state__url=pg_url, service__instance_id="shared",
                                   logging__console="off", tracking__mode="none", **overrides)
        self.config = load_config(ini)
        self.store = StateStore.from_config(self.config)
        self.store.migrate()
        self.adapters = AdapterPool(self.config)

    def ctx(self) -> StepContext:
        return self.adapters.step_context(self.store)

    def close(self) -> None:
        self.adapters.close_all()
        self.store.close()


@pytest.fixture
def two(sandbox, tmp_path, pg_url):
    a = Instance(sandbox, tmp_path, "a", pg_url)
    b = Instance(sandbox, tmp_path, "b", pg_url)
    yield a, b
    a.close()
    b.close()


def new_request(sb, name: str = "Two instances") -> str:
    org = sb.seeded
    targets = [{"kind": "list", "id": org.lists["newsletter"]}, {"kind": "list", "id": org.lists["vip"]}]
    return sb.crm.store.insert("cesp_sendrequests", {
        "cesp_name": name, "cesp_status": PENDING, "cesp_targets": json.dumps(targets),
        "ownerid": org.users["mia"], "ownerid__type": "systemuser"})


def drive_to_end(ctx, store: StateStore, rid: str) -> None:
    """Poll the send and imports steps for one request until it is sent or failed (import results and
    the send show at the ESP only after its scaled delays)."""
    from connector.steps.send.attempt import poll_send

    for _ in range(300):
        job = process_request(ctx, rid) or store.get_send_job(rid)
        if job.status == "importing":
            poll_send(ctx, rid)
        if store.get_send_job(rid).status in ("sent", "failed"):
            return
        time.sleep(0.1)


def check_sent_once(sb, store: StateStore, rid: str) -> dict:
    row = sb.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == SENT, row["cesp_reason"]
    sends = sb.esp.store.sends_for(f"cesp-send-{rid}")
    assert len(sends) == 1, f"{len(sends)} ESP sends for request {rid}"
    assert row["cesp_handedover"] + row["cesp_skipped"] == row["cesp_resolved"]
    assert len(sb.esp.store.list_by_key(f"cesp-list-{rid}").members) == row["cesp_handedover"]
    job = store.get_send_job(rid)
    assert (job.status, job.esp_job_id, job.error) == ("sent", str(sends[0].id), "")
    assert all(b.error != BATCH_SUPERSEDED for b in store.batches(rid)), "a batch was marked superseded"
    return row


def test_loser_with_a_stale_pending_list_changes_nothing(sandbox, two) -> None:
    a, b = two
    rids = [new_request(sandbox, f"Stale list {i}") for i in range(4)]
    stale = b.ctx().crm().pending_send_requests(limit=50)  # B reads the list ...
    assert {r.id for r in stale} == set(rids)
    outcome = run_sends(a.ctx())  # ... A sends them all meanwhile ...
    assert outcome.details == {"sent": 4}
    before = {rid: a.store.get_send_job(rid) for rid in rids}
    ctx_b = b.ctx()
    for listed in stale:  # ... and B works through its stale list
        job = process_request(ctx_b, listed.id, pending=listed)
        assert job is not None and job.status == "sent"
    for rid in rids:
        check_sent_once(sandbox, b.store, rid)
        assert b.store.get_send_job(rid).updated_at == before[rid].updated_at, "the loser wrote the job"


def test_a_refused_claim_is_undone_and_claimed_next_poll(sandbox, two) -> None:
    a, b = two
    rid = new_request(sandbox, "Edited after listing")
    listed = b.ctx().crm().pending_send_requests(limit=50)
    sandbox.crm.store.patch("cesp_sendrequests", rid, {"cesp_name": "Edited after listing (renamed)"})
    assert process_request(b.ctx(), rid, pending=listed[0]) is None  # CRM refuses the stale etag (412)
    assert b.store.get_send_job(rid) is None, "the refused claim left a job behind"
    assert sandbox.crm.store.get("cesp_sendrequests", rid)["cesp_status"] == PENDING
    assert run_sends(a.ctx()).details == {"sent": 1}
    check_sent_once(sandbox, a.store, rid)


def test_a_refused_retry_claim_restores_the_finished_job(sandbox, two) -> None:
    a, b = two
    rid = new_request(sandbox, "Retried")
    assert run_sends(a.ctx()).details == {"sent": 1}
    first = a.store.get_send_job(rid)
    sandbox.crm.store.patch("cesp_sendrequests", rid, {"cesp_status": PENDING})  # an admin asks for a retry
    ctx_b = b.ctx()
    listed = ctx_b.crm().get_send_request(rid)
    real_get = type(ctx_b.crm()).get_send_request

    def read_then_edited(self, request_id):  # a user edits the request right after B's fresh read
        found = real_get(self, request_id)
        sandbox.crm.store.patch("cesp_sendrequests", rid, {"cesp_name": "Retried (edited)"})
        return found

    crm = ctx_b.crm()
    crm.get_send_request = read_then_edited.__get__(crm)
    try:
        assert process_request(ctx_b, rid, pending=listed).status == "sent"
    finally:
        del crm.get_send_request
    again = b.store.get_send_job(rid)
    assert (again.status, again.esp_job_id, again.error) == ("sent", first.esp_job_id, "")
    assert sandbox.crm.store.get("cesp_sendrequests", rid)["cesp_status"] == PENDING


@pytest.mark.slow
def test_two_processes_with_one_copied_service_ini_send_each_request_once(sandbox, tmp_path, pg_url) -> None:
    """The same service.ini (same instance_id) on two "hosts": both run at once, round after round."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    inis = [sandbox.write_service_ini(tmp_path / name / "service.ini", state__url=pg_url, service__instance_id="copy",
                                      state__lease_seconds=10, logging__console="off", tracking__mode="none",
                                      batching__threshold=0, batching__batch_size=15, imports__poll_seconds=0.2)
            for name in ("host1", "host2")]
    rids = [new_request(sandbox, f"Copied ini {i}") for i in range(6)]
    env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_CRASH_AT"}
    for _ in range(8):
        if all(sandbox.crm.store.get("cesp_sendrequests", r)["cesp_status"] == SENT for r in rids):
            break
        runs = [subprocess.Popen([sys.executable, "-m", "connector", "run", "-c", str(ini), "--once"], cwd=root,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for ini in inis]
        for run in runs:
            _out, err = run.communicate(timeout=180)
            assert run.returncode == 0, err[-3000:]
            assert "Traceback" not in err
    with StateStore(pg_url) as store:
        for rid in rids:
            check_sent_once(sandbox, store, rid)
            for seq in range(1, 10):
                assert len(sandbox.esp.store.runs_for(f"cesp-import-{rid}-{seq}")) <= 1


def test_a_takeover_after_crm_changed_hands_nobody_over_twice(sandbox, tmp_path, pg_url) -> None:
    """A stops mid-resolve with some batches at the ESP; CRM changes; B (another disk) finishes the send."""
    from connector.batchfiles import split_keys
    from connector.suppression import address_digest

    a = Instance(sandbox, tmp_path, "a", pg_url, batching__batch_size=15)
    b = Instance(sandbox, tmp_path, "b", pg_url, batching__batch_size=15)
    try:
        rid = new_request(sandbox, "Changed under a takeover")
        sandbox.crm.store.patch("cesp_sendrequests", rid, {"cesp_forcebatching": True})
        [listed] = a.ctx().crm().pending_send_requests(limit=5)
        ctx_a = a.ctx()
        process_request(ctx_a, rid, pending=listed,
                        progress=lambda job, phase: ctx_a.stopping.set() if phase == "resolving" else None)
        job = a.store.get_send_job(rid)
        kept = [x for x in a.store.batches(rid, keys=True) if x.status in ("uploaded", "importing")]
        assert job.status == "resolving" and kept, [(x.seq, x.status) for x in a.store.batches(rid)]
        in_kept = {s for x in kept for _e, s in split_keys(x.member_keys)}
        org = sandbox.seeded
        members = sandbox.crm.store.execute(
            "SELECT listmemberid, entityid FROM e_listmember WHERE listid = ?", (org.lists["newsletter"].lower(),))
        at_esp = [(m, c) for m, c in members if address_digest(c) in in_kept]
        assert len(at_esp) >= 2
        sandbox.crm.store.remove("listmembers", at_esp[0][0])  # left the list after it was handed over
        sandbox.crm.store.patch("contacts", at_esp[1][1], {"emailaddress1": "moved.house@example.com"})

        ctx_b = b.ctx()
        drive_to_end(ctx_b, b.store, rid)  # import results and the send show at the ESP after (scaled) delays
        check_sent_once(sandbox, b.store, rid)  # counts add up, members at the ESP = handed over
        for seq in range(1, 40):
            assert len(sandbox.esp.store.runs_for(f"cesp-import-{rid}-{seq}")) <= 1
        esp_list = sandbox.esp.store.list_by_key(f"cesp-list-{rid}")
        assert at_esp[0][1] in esp_list.members and at_esp[1][1] in esp_list.members
    finally:
        a.close()
        b.close()


def test_batch_files_gone_from_the_own_disk_are_written_again_not_a_traceback(sandbox, tmp_path, pg_url) -> None:
    """The same instance resumes, but its batch files were deleted meanwhile (a cleaned data_dir)."""
    import shutil

    from connector.steps.send.workspace import work_folder

    a = Instance(sandbox, tmp_path, "a", pg_url, batching__batch_size=15)
    try:
        rid = new_request(sandbox, "Files deleted")  # by SOAP: the spooled batch files are read back
        [listed] = a.ctx().crm().pending_send_requests(limit=5)
        ctx = a.ctx()
        process_request(ctx, rid, pending=listed,
                        progress=lambda job, phase: ctx.stopping.set() if phase == "handing_over" else None)
        assert a.store.get_send_job(rid).path == "soap"
        assert any(b.status == "written" for b in a.store.batches(rid))
        shutil.rmtree(work_folder(a.config, rid) / "batches")
        ctx = a.ctx()
        drive_to_end(ctx, a.store, rid)
        check_sent_once(sandbox, a.store, rid)
        assert any(b.set_aside for b in a.store.batches(rid))  # the batches whose files were gone
    finally:
        a.close()


@pytest.mark.parametrize("chunk", [1, 2])
def test_a_holder_whose_send_was_taken_over_meanwhile_writes_nothing_more(sandbox, tmp_path, pg_url,
                                                                          chunk: int) -> None:
    """A pauses past its lease (a frozen VM, a long throttling wait) after its first or its last
    chunk; B takes the send; A wakes up and must not write to the shared state any more."""
    import sqlalchemy as sa

    from connector.errors import StateError

    a = Instance(sandbox, tmp_path, "a", pg_url, batching__batch_size=15)
    b = Instance(sandbox, tmp_path, "b", pg_url, batching__batch_size=15)
    try:
        rid = new_request(sandbox, "Zombie")
        sandbox.crm.store.patch("cesp_sendrequests", rid, {"cesp_forcebatching": True})
        [listed] = a.ctx().crm().pending_send_requests(limit=5)
        at_takeover: dict = {}
        reports: list[str] = []

        def b_takes_over(job, phase) -> None:  # after A's chunk number ``chunk`` is committed
            reports.append(phase)
            if reports.count("resolving") != chunk or at_takeover:
                return
            with a.store.transaction() as conn:  # A's lease runs out ...
                conn.execute(sa.text("update leases set expires_at = now() - interval '1 second' where resource = :r"),
                             {"r": f"send:{rid}"})
            assert b.store.acquire_lease(f"send:{rid}", 300)  # ... and B takes the send
            at_takeover["batches"] = {x.seq for x in a.store.batches(rid)}
            at_takeover["job"] = a.store.get_send_job(rid).updated_at

        with pytest.raises(StateError, match="lost the lease"):
            process_request(a.ctx(), rid, pending=listed, progress=b_takes_over)
        assert {x.seq for x in a.store.batches(rid)} == at_takeover["batches"], "A recorded batches after losing"
        assert a.store.get_send_job(rid).updated_at == at_takeover["job"], "A wrote the job after losing it"

        ctx_b = b.ctx()
        drive_to_end(ctx_b, b.store, rid)
        check_sent_once(sandbox, b.store, rid)
        for seq in range(1, 40):
            assert len(sandbox.esp.store.runs_for(f"cesp-import-{rid}-{seq}")) <= 1
    finally:
        a.close()
        b.close()
