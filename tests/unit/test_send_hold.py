"""An operator problem in the middle of a send holds the job where it is; fixed, it goes on.

Over the contract-checked peer doubles of tests/fixtures/sends.py (FakeCrm, FakeEsp, FakeDrop:
docs/architecture.md, "Test doubles"); the problems are raised by patching one peer call.
"""

from __future__ import annotations

import pytest

from connector.errors import AuthError, ConfigError, OperatorError, PeerSetupError
from connector.models import SendRequestUpdate, SendStatus
from connector.steps.send.step import run_imports, run_sends
from tests.doubles.crm import guid
from tests.fixtures.sends import SendWorld, contact

R1 = guid("R1")


@pytest.mark.parametrize("problem", [
    AuthError("Marketing Cloud refused the credentials - check the [esp] credentials", "esp", "Create"),
    PeerSetupError("the ESP has no attribute 'Shoe Size' - check [mapping.contact]", "esp", "Create"),
    ConfigError("[esp] wsdl is empty", section="esp", key="wsdl"),
])
def test_a_problem_during_hand_over_holds_the_job_and_it_resumes(send_world: SendWorld, monkeypatch,
                                                                 problem: OperatorError) -> None:
    L1 = send_world.crm.add_list([contact(i) for i in range(1, 8)])
    send_world.crm.add_request(R1, [L1])
    real = send_world.esp.upsert_subscribers

    def refuse(subscribers, list_id):
        raise problem

    monkeypatch.setattr(send_world.esp, "upsert_subscribers", refuse)
    outcome = run_sends(send_world.ctx())
    job = send_world.state.get_send_job(R1)
    assert job.status == "handing_over" and job.error == ""
    assert job.phase_detail.startswith("held until an operator fixes") and str(problem) in job.phase_detail
    assert not outcome.ok and R1 in outcome.message and str(problem) in outcome.message
    assert send_world.crm.requests[R1].status is SendStatus.PROCESSING  # not Failed
    notes = [u.reason for rid, u in send_world.crm.updates if rid == R1 and u.reason]
    assert notes and "Held by the connector, not failed" in notes[-1]

    monkeypatch.setattr(send_world.esp, "upsert_subscribers", real)
    outcome = run_sends(send_world.ctx())
    assert outcome.ok, outcome.message
    job = send_world.state.get_send_job(R1)
    assert job.status == "sent" and job.handed_over == 7
    assert send_world.esp.start_calls == 1


def test_a_problem_while_importing_holds_the_send(send_world: SendWorld, monkeypatch) -> None:
    send_world.configure(threshold=2, batch_size=3)
    L1 = send_world.crm.add_list([contact(i) for i in range(1, 8)])
    send_world.crm.add_request(R1, [L1])
    run_sends(send_world.ctx())
    assert send_world.state.get_send_job(R1).status == "importing"
    real = send_world.esp.import_status

    def refuse(key):
        raise AuthError("Marketing Cloud refused the credentials", "esp", "Retrieve")

    monkeypatch.setattr(send_world.esp, "import_status", refuse)
    outcome = run_imports(send_world.ctx())
    assert not outcome.ok and "held" in outcome.message
    assert send_world.state.get_send_job(R1).status == "importing"
    monkeypatch.setattr(send_world.esp, "import_status", real)
    assert run_imports(send_world.ctx()).ok
    assert send_world.state.get_send_job(R1).status == "sent"


def test_the_pending_request_is_held_when_the_esp_refuses_before_the_claim(send_world: SendWorld,
                                                                         monkeypatch) -> None:
    L1 = send_world.crm.add_list([contact(1)])
    send_world.crm.add_request(R1, [L1])

    def refuse(key):
        raise AuthError("Marketing Cloud token request refused - check [esp] client_id", "esp", "token")

    monkeypatch.setattr(send_world.esp, "find_email", refuse)
    outcome = run_sends(send_world.ctx())
    assert not outcome.ok and outcome.details["held"] == 1
    assert send_world.crm.requests[R1].status is SendStatus.PENDING
    assert send_world.state.get_send_job(R1) is None  # nothing claimed, nothing to undo


def test_a_retried_request_held_at_its_precheck_goes_back_to_pending(send_world: SendWorld, monkeypatch) -> None:
    L1 = send_world.crm.add_list([contact(1), contact(2)])
    send_world.crm.add_request(R1, [L1], cesp_emailkey="nope")
    run_sends(send_world.ctx())
    assert send_world.state.get_send_job(R1).status == "failed"  # the marketer's: an unknown email
    send_world.esp.emails["nope"] = "7"
    send_world.crm.update_send_request(R1, SendRequestUpdate(status=SendStatus.PENDING))  # a retry

    def refuse(key):
        raise AuthError("Marketing Cloud refused the credentials", "esp", "Retrieve")

    monkeypatch.setattr(send_world.esp, "find_email", refuse)
    outcome = run_sends(send_world.ctx())
    assert not outcome.ok and outcome.details["held"] == 1
    assert send_world.crm.requests[R1].status is SendStatus.PENDING  # claimed, then given back
    assert send_world.state.get_send_job(R1).status == "claimed"
    monkeypatch.undo()
    assert run_sends(send_world.ctx()).ok
    assert send_world.state.get_send_job(R1).status == "sent"
    assert send_world.crm.requests[R1].status is SendStatus.SENT
