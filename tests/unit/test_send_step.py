"""The send and imports steps against peer doubles and a real (SQLite) state store.

The CRM, ESP and file-drop doubles (``tests.doubles``: FakeCrm, FakeEsp, FakeDrop) are kept,
not replaced by the sandbox, because the contract suites (test_crm_contract, test_esp_contract,
test_file_drop_contract) run over them as over the real adapters: they refuse what the real
ones refuse (ids here are GUIDs, as the CRM needs), and their knobs let these tests drive
every branch in well under a second each. See docs/architecture.md, "Test doubles"."""

from __future__ import annotations

from connector.config.models import SuppressionSettings
from connector.models import SendStatus
from connector.state.store import StateStore
from connector.steps.send.step import run_imports, run_sends
from tests.doubles.crm import guid
from tests.fixtures.sends import SendWorld, contact

R1, R2, R3, R4, R5, R6, R7, R8, R9, RA, RB, R10, R11, R12, R13, R14, R15 = (guid(name) for name in ("R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "RA", "RB", "R10", "R11", "R12", "R13", "R14", "R15"))


def crm_final(world: SendWorld, request_id: str):
    return [u for rid, u in world.crm.updates if rid == request_id and u.status is not None][-1]


def seed_mixed(world: SendWorld) -> tuple[str, str]:
    """Two lists of contacts with every kind of problem; returns their ids."""
    L1 = world.crm.add_list([contact(i) for i in range(1, 11)] + [
        contact(11, email=""),
        contact(12, email="broken@"),
        contact(13, do_not_bulk_email=True),
        contact(14, active=False),
    ])
    L2 = world.crm.add_list([contact(3), contact(15, email="PERSON4@example.com"), contact(16)])
    world.esp.add_subscriber("00000000-0000-0000-0000-000000000005", "person5@example.com", "Unsubscribed")
    world.esp.reject.add("person16@example.com")
    return L1, L2


def assert_counts_add_up(job) -> None:
    assert job.handed_over + job.skipped == job.resolved
    assert sum(job.skipped_by_reason.values()) == job.skipped


def test_small_send_goes_by_soap_and_counts_add_up(send_world: SendWorld) -> None:
    L1, L2 = seed_mixed(send_world)
    send_world.crm.add_request(R1, [L1, L2])
    run_sends(send_world.ctx())
    job = send_world.state.get_send_job(R1)
    assert job.status == "sent", job.error
    assert job.path == "soap"
    assert job.resolved == 17
    assert job.skipped_by_reason == {
        "no_email": 1, "malformed_email": 1, "do_not_bulk_email": 1, "inactive": 1,
        "duplicate": 2, "esp_unsubscribed": 1, "esp_rejected": 1,
    }
    assert job.handed_over == 9
    assert_counts_add_up(job)
    assert send_world.esp.start_calls == 1
    members = send_world.esp.members[job.esp_list_id]
    assert len(members) == 9
    assert next(iter(members.values())).attributes["Country"] == "Österreich"
    final = crm_final(send_world, R1)
    assert final.status is SendStatus.SENT and final.esp_job_id == job.esp_job_id
    assert final.handed_over == 9 and final.skipped == 8
    reasons = send_world.state.quarantine_counts(R1)
    assert sum(reasons.values()) == 8 and reasons["esp_rejected"] == 1
    assert [t.job_id for t in send_world.state.tracked_sends()] == [job.esp_job_id]
    assert not (send_world.config.service.data_dir / "sends" / R1).exists()


def test_large_send_goes_by_files_and_imports(send_world: SendWorld) -> None:
    send_world.configure(threshold=5, batch_size=3)
    L1, L2 = seed_mixed(send_world)
    send_world.crm.add_request(R2, [L1, L2])
    run_sends(send_world.ctx())
    job = send_world.state.get_send_job(R2)
    assert job.status == "importing" and job.path == "files"
    batches = send_world.state.batches(R2)
    assert [b.rows for b in batches] == [3, 3, 3, 1]
    assert {b.status for b in batches} == {"importing"}
    assert send_world.esp.start_calls == 0
    run_imports(send_world.ctx())
    job = send_world.state.get_send_job(R2)
    assert job.status == "sent", job.error
    assert job.handed_over == 9 and job.skipped_by_reason["import_row_error"] == 1
    assert_counts_add_up(job)
    assert send_world.esp.start_calls == 1
    assert crm_final(send_world, R2).status is SendStatus.SENT


def test_pending_import_waits(send_world: SendWorld) -> None:
    send_world.configure(threshold=0)
    L1 = send_world.crm.add_list([contact(i) for i in range(4)])
    send_world.crm.add_request(R3, [L1])
    send_world.esp.import_state = "processing"
    run_sends(send_world.ctx())
    run_imports(send_world.ctx())
    assert send_world.state.get_send_job(R3).status == "importing"
    send_world.esp.import_state = "completed"
    run_imports(send_world.ctx())
    assert send_world.state.get_send_job(R3).status == "sent"


def test_a_files_send_shows_importing_in_crm_while_its_imports_run_then_sent(send_world: SendWorld) -> None:
    send_world.configure(threshold=0)
    L1 = send_world.crm.add_list([contact(i) for i in range(4)])
    rid = guid("importing-shown")
    send_world.crm.add_request(rid, [L1])
    send_world.esp.import_state = "processing"
    run_sends(send_world.ctx())
    run_imports(send_world.ctx())
    assert send_world.state.get_send_job(rid).status == "importing"
    assert send_world.crm.requests[rid].status is SendStatus.IMPORTING
    send_world.esp.import_state = "completed"
    run_imports(send_world.ctx())
    assert send_world.state.get_send_job(rid).status == "sent"
    assert send_world.crm.requests[rid].status is SendStatus.SENT


def test_importing_not_written_goes_on_with_the_send(send_world: SendWorld, monkeypatch) -> None:
    from connector.errors import TransientPeerError

    def refuse(request, status):
        raise TransientPeerError("Dataverse: 503 Service Unavailable", peer="crm", operation="update")

    monkeypatch.setattr(send_world.crm, "set_status_if_match", refuse)
    send_world.configure(threshold=0)
    L1 = send_world.crm.add_list([contact(i) for i in range(4)])
    rid = guid("importing-not-written")
    send_world.crm.add_request(rid, [L1])
    run_sends(send_world.ctx())
    assert send_world.crm.requests[rid].status is SendStatus.PROCESSING  # cosmetic: the send went on
    run_imports(send_world.ctx())
    assert send_world.state.get_send_job(rid).status == "sent"
    assert send_world.crm.requests[rid].status is SendStatus.SENT


def test_failed_import_fails_the_send_with_the_file_name(send_world: SendWorld) -> None:
    send_world.configure(threshold=0)
    L1 = send_world.crm.add_list([contact(i) for i in range(4)])
    send_world.crm.add_request(R4, [L1])
    run_sends(send_world.ctx())
    send_world.esp.import_state = "error"
    run_imports(send_world.ctx())
    job = send_world.state.get_send_job(R4)
    assert job.status == "failed" and f"cesp_{R4}_1.csv" in job.error
    final = crm_final(send_world, R4)
    assert final.status is SendStatus.FAILED and "Pending" in final.reason
    assert send_world.esp.start_calls == 0


def test_owner_without_role_is_refused(send_world: SendWorld) -> None:
    L1 = send_world.crm.add_list([contact(1)])
    send_world.crm.add_request(R5, [L1], owner=send_world.crm.add_user(["Salesperson"]))
    run_sends(send_world.ctx())
    final = crm_final(send_world, R5)
    assert final.status is SendStatus.FAILED and "security roles" in final.reason
    assert send_world.esp.start_calls == 0 and not send_world.esp.lists


def test_transient_crm_errors_resume_without_duplicates(send_world: SendWorld, monkeypatch) -> None:
    monkeypatch.setattr("connector.steps.send.resolve.RESOLVE_CHUNK", 2)
    send_world.configure(threshold=0, batch_size=3)
    L1 = send_world.crm.add_list([contact(i) for i in range(1, 21)])
    send_world.crm.add_request(R6, [L1])
    send_world.crm.fail_pages = 3
    for _ in range(5):
        run_sends(send_world.ctx())
        run_imports(send_world.ctx())
    job = send_world.state.get_send_job(R6)
    assert job.status == "sent", job.error
    assert job.resolved == 20 and job.handed_over == 20 and job.skipped == 0
    listed = send_world.esp.members[job.esp_list_id]
    assert len(listed) == 20
    rows = sum(b.rows for b in send_world.state.batches(R6))
    assert rows == 20


def test_request_reset_after_sent_is_not_sent_again(send_world: SendWorld) -> None:
    L1 = send_world.crm.add_list([contact(1), contact(2)])
    send_world.crm.add_request(R7, [L1])
    run_sends(send_world.ctx())
    first = send_world.state.get_send_job(R7).esp_job_id
    send_world.crm.add_request(R7, [L1])  # an admin sets it back to Pending
    run_sends(send_world.ctx())
    job = send_world.state.get_send_job(R7)
    assert job.status == "sent" and job.esp_job_id == first
    assert send_world.esp.start_calls == 1


def test_retry_after_failure_uses_new_batch_numbers(send_world: SendWorld) -> None:
    send_world.configure(threshold=0)
    L1 = send_world.crm.add_list([contact(i) for i in range(3)])
    send_world.crm.add_request(R8, [L1])
    run_sends(send_world.ctx())
    send_world.esp.import_state = "error"
    run_imports(send_world.ctx())
    assert send_world.state.get_send_job(R8).status == "failed"
    send_world.esp.import_state = "completed"
    send_world.crm.add_request(R8, [L1])
    run_sends(send_world.ctx())
    run_imports(send_world.ctx())
    job = send_world.state.get_send_job(R8)
    assert job.status == "sent", job.error
    assert [b.seq for b in send_world.state.batches(R8)] == [1, 2]
    assert job.handed_over == 3 and send_world.esp.start_calls == 1


def test_nobody_left_fails_with_counts(send_world: SendWorld) -> None:
    L1 = send_world.crm.add_list([contact(1, email=""), contact(2, do_not_email=True)])
    send_world.crm.add_request(R9, [L1])
    run_sends(send_world.ctx())
    final = crm_final(send_world, R9)
    assert final.status is SendStatus.FAILED and "nobody" in final.reason
    assert send_world.esp.start_calls == 0


def test_suppression_file_skips_addresses(send_world: SendWorld, tmp_path) -> None:
    suppressed = tmp_path / "suppress.csv"
    suppressed.write_text("Email,Note\nPERSON2@example.com,asked\n", encoding="utf-8")
    config = send_world.config.model_copy(
        update={"sends": send_world.config.sends.model_copy(update={"suppression_file": suppressed})}
    )
    L1 = send_world.crm.add_list([contact(1), contact(2)])
    send_world.crm.add_request(R10, [L1])
    run_sends(send_world.ctx(config))
    job = send_world.state.get_send_job(R10)
    assert job.skipped_by_reason == {"suppression_list": 1} and job.handed_over == 1


def test_a_held_lease_keeps_others_out(send_world: SendWorld) -> None:
    L1 = send_world.crm.add_list([contact(1)])
    send_world.crm.add_request(R11, [L1])
    other = StateStore(send_world.config.state_url(), holder="other")
    try:
        assert other.acquire_lease(f"send:{R11}", 60)
        run_sends(send_world.ctx())
        assert send_world.state.get_send_job(R11) is None
        other.release_lease(f"send:{R11}")
    finally:
        other.close()
    run_sends(send_world.ctx())
    assert send_world.state.get_send_job(R11).status == "sent"


def test_cancelled_while_importing_is_not_released(send_world: SendWorld) -> None:
    send_world.configure(threshold=0)
    L1 = send_world.crm.add_list([contact(i) for i in range(3)])
    send_world.crm.add_request(R12, [L1])
    run_sends(send_world.ctx())
    send_world.crm.set_status(R12, SendStatus.CANCELLED)
    run_imports(send_world.ctx())
    job = send_world.state.get_send_job(R12)
    assert job.status == "failed" and "cancelled" in job.error
    assert send_world.esp.start_calls == 0


def test_quarantine_names_record_and_reason(send_world: SendWorld) -> None:
    L1 = send_world.crm.add_list([contact(1), contact(2, email="nope")])
    send_world.crm.add_request(R13, [L1])
    run_sends(send_world.ctx())
    rows = send_world.state.quarantined(R13)
    assert [(r.table, r.record_id, r.reason) for r in rows] == [
        ("contact", "00000000-0000-0000-0000-000000000002", "malformed_email")]
    assert "fix it in CRM" in rows[0].detail


def test_two_workers_release_each_request_once(send_world: SendWorld) -> None:
    send_world.config = send_world.config.model_copy(
        update={"sends": send_world.config.sends.model_copy(update={"workers": 2})})
    for n in range(4):
        members = send_world.crm.add_list([contact(10 * n + i) for i in range(5)])
        send_world.crm.add_request(guid(f"P{n}"), [members])
    run_sends(send_world.ctx())
    run_sends(send_world.ctx())
    assert {send_world.state.get_send_job(guid(f"P{n}")).status for n in range(4)} == {"sent"}
    assert send_world.esp.start_calls == 4


def test_a_record_the_mapping_cannot_handle_is_skipped(send_world: SendWorld, monkeypatch) -> None:
    from connector.mapping import Mapper

    original = Mapper.map

    def fussy(self, recipient):
        if recipient.ref.id.endswith("2"):
            raise ValueError("cannot turn this value into text")
        return original(self, recipient)

    monkeypatch.setattr(Mapper, "map", fussy)
    L1 = send_world.crm.add_list([contact(1), contact(2)])
    send_world.crm.add_request(R14, [L1])
    run_sends(send_world.ctx())
    job = send_world.state.get_send_job(R14)
    assert job.status == "sent" and job.skipped_by_reason == {"mapping_error": 1}


def test_a_claim_that_failed_transiently_is_made_on_the_next_poll(send_world: SendWorld, monkeypatch) -> None:
    from connector.errors import TransientPeerError

    L1 = send_world.crm.add_list([contact(1)])
    send_world.crm.add_request(R15, [L1])
    real = send_world.crm.claim_send_request
    calls = []

    def flaky(request):
        calls.append(request.id)
        if len(calls) == 1:
            raise TransientPeerError("CRM said 503", peer="crm")
        return real(request)

    monkeypatch.setattr(send_world.crm, "claim_send_request", flaky)
    run_sends(send_world.ctx())
    assert send_world.state.get_send_job(R15).status == "claimed"
    assert send_world.crm.requests[R15].status is SendStatus.PENDING
    run_sends(send_world.ctx())
    assert len(calls) == 2
    assert send_world.state.get_send_job(R15).status == "sent"


def _two_importing_sends(world: SendWorld) -> None:
    world.configure(threshold=0, batch_size=100)
    L1 = world.crm.add_list([contact(i) for i in range(4)])
    L2 = world.crm.add_list([contact(i) for i in range(10, 13)])
    world.crm.add_request(RA, [L1])
    world.crm.add_request(RB, [L2])
    run_sends(world.ctx())
    assert [world.state.get_send_job(r).status for r in (RA, RB)] == ["importing", "importing"]


def _gate_first_poll(world: SendWorld, wait_s: float):
    """The first import status asked waits until another send has been started at the ESP."""
    import threading

    real_status, real_start = world.esp.import_status, world.esp.start_send
    lock, asked, started, waited = threading.Lock(), [], threading.Event(), []

    def import_status(key):
        with lock:
            first = not asked
            asked.append(key)
        if first:
            waited.append(started.wait(wait_s))
        return real_status(key)

    def start_send(*args):
        send = real_start(*args)
        started.set()
        return send

    world.esp.import_status, world.esp.start_send = import_status, start_send
    return waited


def _with_import_workers(world: SendWorld, n: int):
    return world.config.model_copy(update={"imports": world.config.imports.model_copy(update={"workers": n})})


def test_two_import_workers_a_slow_send_does_not_hold_up_another(send_world: SendWorld) -> None:
    _two_importing_sends(send_world)
    waited = _gate_first_poll(send_world, wait_s=20.0)
    outcome = run_imports(send_world.ctx(_with_import_workers(send_world, 2)))
    assert waited == [True]  # the other send was released while the first one's ESP call was held
    assert outcome.ok and outcome.processed == 2 and outcome.details == {"sent": 2}
    assert [send_world.state.get_send_job(r).status for r in (RA, RB)] == ["sent", "sent"]
    assert send_world.esp.start_calls == 2


def test_one_import_worker_polls_the_sends_one_after_the_other(send_world: SendWorld) -> None:
    _two_importing_sends(send_world)
    waited = _gate_first_poll(send_world, wait_s=0.2)
    outcome = run_imports(send_world.ctx(_with_import_workers(send_world, 1)))
    assert waited == [False]  # nothing ran beside the held poll
    assert outcome.processed == 2
    assert [send_world.state.get_send_job(r).status for r in (RA, RB)] == ["sent", "sent"]


def test_one_run_takes_at_most_max_requests_per_poll_new_requests(send_world: SendWorld, monkeypatch) -> None:
    """Requests that pause for their turn make more rounds; the later rounds take in no more than the limit."""
    monkeypatch.setattr("connector.steps.send.resolve.RESOLVE_CHUNK", 2)
    config = send_world.config
    config = config.model_copy(update={"sends": config.sends.model_copy(
        update={"max_requests_per_poll": 2, "time_slice_seconds": 0.000001})})
    L1 = send_world.crm.add_list([contact(i) for i in range(1, 9)])
    for rid in (R1, R2, R3, R4, R5):
        send_world.crm.add_request(rid, [L1])
    outcome = run_sends(send_world.ctx(config))
    assert outcome.details.get("rounds", 1) > 1, outcome.details  # the requests did pause for their turns
    assert sorted(j.request_id for j in send_world.state.send_jobs()) == sorted([R1, R2])
    still = {rid for rid, r in send_world.crm.requests.items() if r.status is SendStatus.PENDING}
    assert still == {R3, R4, R5}


def test_suppression_list_skips_addresses_and_domains_with_reasons(send_world: SendWorld, tmp_path) -> None:
    listed = tmp_path / "rtr.txt"
    listed.write_text("PERSON2@example.com\n@blocked.example\nnot valid\n", encoding="utf-8")
    config = send_world.config.model_copy(update={"suppression": SuppressionSettings(file=listed)})
    L1 = send_world.crm.add_list([contact(1), contact(2), contact(3, email="x@mail.blocked.example")])
    send_world.crm.add_request(R12, [L1])
    run_sends(send_world.ctx(config))  # never refreshed: the send reads the list first
    job = send_world.state.get_send_job(R12)
    assert job.skipped_by_reason == {"suppression_list": 2} and job.handed_over == 1
    details = sorted(row.detail for row in send_world.state.quarantined(R12))
    assert details == ["the address is on the suppression list", "the domain blocked.example is on the suppression list"]
    assert send_world.state.suppression_counts() == {"address": 1, "domain": 1}
