"""SendAttempt: advance() runs the phase the job's status calls for, and what a phase meets decides the job."""

from __future__ import annotations

import pytest

from connector.errors import AuthError, PermanentPeerError, TransientPeerError
from connector.models import SendStatus
from connector.state.lifecycle import IllegalMoveError, JobStatus
from connector.state.records import SendJob
from connector.steps.send import attempt as attempt_module
from connector.steps.send.attempt import (
    EVERY_PHASE,
    IMPORTS_STEP,
    PHASES,
    SENDS_STEP,
    SendAttempt,
    carry,
)
from connector.steps.send.turns import Interrupted
from tests.doubles.crm import guid
from tests.fixtures.sends import SendWorld, contact

R1, R2 = guid("R1"), guid("R2")


def recording(monkeypatch) -> list[JobStatus | None]:  # noqa: ANN001
    """Replace every phase by one that records its status and moves the job on along the table."""
    ran: list[JobStatus | None] = []
    nexts = {None: JobStatus.CLAIMED, JobStatus.CLAIMED: JobStatus.RESOLVING,
             JobStatus.RESOLVING: JobStatus.HANDING_OVER, JobStatus.HANDING_OVER: JobStatus.IMPORTING,
             JobStatus.IMPORTING: JobStatus.STARTING, JobStatus.STARTING: JobStatus.SENT}

    def phase_for(status: JobStatus | None):  # noqa: ANN202
        def phase(attempt: SendAttempt) -> bool:
            ran.append(status)
            if status is None:
                attempt.pending = None
                attempt.job = SendJob(R1)
            else:
                attempt.job.move(nexts[status])
            attempt.ctx.state.save_send_job(attempt.job)
            return True
        return phase

    monkeypatch.setattr(attempt_module, "PHASES", {status: phase_for(status) for status in PHASES})
    return ran


def pending(send_world: SendWorld, request_id: str):  # noqa: ANN201
    """A Pending request of one contact, as the sends step lists it."""
    send_world.crm.add_request(request_id, [send_world.crm.add_list([contact(1)])])
    return send_world.crm.get_send_request(request_id)


def test_every_in_flight_status_has_a_phase_and_a_final_one_none() -> None:
    assert set(PHASES) == {None} | {s for s in JobStatus if not s.final}
    assert SENDS_STEP | IMPORTS_STEP == EVERY_PHASE == set(PHASES)
    assert JobStatus.IMPORTING not in SENDS_STEP and None not in IMPORTS_STEP


@pytest.mark.parametrize("status", [s for s in JobStatus if not s.final])
def test_advance_runs_the_phase_of_the_jobs_status(send_world: SendWorld, monkeypatch, status: JobStatus) -> None:
    ran = recording(monkeypatch)
    job = send_world.state.save_send_job(SendJob(R1, status=status))
    assert SendAttempt(send_world.ctx(), job, lambda conn=None: None).advance()
    assert ran == [status]


def test_no_attempt_in_flight_claims_only_a_pending_request(send_world: SendWorld, monkeypatch) -> None:
    ran = recording(monkeypatch)
    ctx = send_world.ctx()
    for final in (JobStatus.SENT, JobStatus.FAILED, None):
        job = SendJob(R1, status=final) if final else None
        assert not SendAttempt(ctx, job, lambda conn=None: None).advance()
    assert ran == []
    listed = pending(send_world, R1)
    assert SendAttempt(ctx, SendJob(R1, status=JobStatus.SENT), lambda conn=None: None, pending=listed).advance()
    assert ran == [None]


@pytest.mark.parametrize(("statuses", "expected", "left_at"), [
    (SENDS_STEP, [None, JobStatus.CLAIMED, JobStatus.RESOLVING, JobStatus.HANDING_OVER], JobStatus.IMPORTING),
    (EVERY_PHASE, [None, JobStatus.CLAIMED, JobStatus.RESOLVING, JobStatus.HANDING_OVER, JobStatus.IMPORTING,
                   JobStatus.STARTING], JobStatus.SENT),
])
def test_carry_goes_phase_after_phase_while_the_status_is_the_callers(send_world: SendWorld, monkeypatch, statuses,
                                                                     expected, left_at) -> None:
    ran = recording(monkeypatch)
    listed = pending(send_world, R1)
    job = carry(send_world.ctx(), R1, statuses, pending=listed)
    assert ran == expected and job.status is left_at
    assert send_world.state.get_send_job(R1).status is left_at
    assert send_world.state.lease_holder(f"send:{R1}") is None  # the lease is given back


def test_the_imports_step_carries_an_importing_send_to_its_release(send_world: SendWorld, monkeypatch) -> None:
    ran = recording(monkeypatch)
    send_world.state.save_send_job(SendJob(R1, status=JobStatus.IMPORTING))
    assert carry(send_world.ctx(), R1, IMPORTS_STEP).status is JobStatus.SENT
    assert ran == [JobStatus.IMPORTING, JobStatus.STARTING]


def test_a_held_lease_leaves_the_request_alone(send_world: SendWorld, monkeypatch) -> None:
    ran = recording(monkeypatch)
    send_world.state.save_send_job(SendJob(R1, status=JobStatus.CLAIMED))
    monkeypatch.setattr(send_world.state, "acquire_lease", lambda resource, seconds: False)  # another holder's
    assert carry(send_world.ctx(), R1, EVERY_PHASE) is None and ran == []


def started(send_world: SendWorld, status: JobStatus = JobStatus.RESOLVING) -> SendAttempt:
    pending(send_world, R1)
    job = send_world.state.save_send_job(SendJob(R1, status=status))
    return SendAttempt(send_world.ctx(), job, lambda conn=None: None)


def test_transient_trouble_leaves_the_job_for_the_next_run(send_world: SendWorld) -> None:
    attempt = started(send_world)

    def phase(_: SendAttempt) -> bool:
        raise TransientPeerError("CRM answered 503", "crm", "Retrieve")

    assert not attempt.run_phase(phase)
    job = send_world.state.get_send_job(R1)
    assert job.status is JobStatus.RESOLVING and "CRM answered 503" in job.phase_detail
    assert send_world.crm.updates == []


def test_permanent_trouble_fails_the_job_and_tells_crm(send_world: SendWorld) -> None:
    attempt = started(send_world)

    def phase(_: SendAttempt) -> bool:
        raise PermanentPeerError("the ESP refused the list", "esp", "Create")

    assert not attempt.run_phase(phase)
    job = send_world.state.get_send_job(R1)
    assert job.status is JobStatus.FAILED and job.error == "the ESP refused the list"
    (rid, update), = send_world.crm.updates
    assert rid == R1 and update.status is SendStatus.FAILED and "the ESP refused the list" in update.reason


def test_an_operator_problem_holds_the_job_and_goes_up(send_world: SendWorld) -> None:
    attempt = started(send_world)
    problem = AuthError("Marketing Cloud refused the credentials", "esp", "Create")

    def phase(_: SendAttempt) -> bool:
        raise problem

    with pytest.raises(AuthError):
        attempt.run_phase(phase)
    job = send_world.state.get_send_job(R1)
    assert job.status is JobStatus.RESOLVING and job.phase_detail.startswith("held until an operator fixes")
    assert [u.status for _, u in send_world.crm.updates] == [None]  # a note, not Failed


def test_a_pause_keeps_the_checkpoint(send_world: SendWorld) -> None:
    attempt = started(send_world)

    def phase(_: SendAttempt) -> bool:
        raise Interrupted()

    assert not attempt.run_phase(phase)
    assert send_world.state.get_send_job(R1).status is JobStatus.RESOLVING and send_world.crm.updates == []


def test_fail_tells_crm_and_abandon_does_not(send_world: SendWorld) -> None:
    attempt = started(send_world)
    attempt.abandon("the send request was deleted in CRM")
    assert attempt.job.status is JobStatus.FAILED and send_world.crm.updates == []
    pending(send_world, R2)
    other = SendAttempt(send_world.ctx(), send_world.state.save_send_job(SendJob(R2, status=JobStatus.STARTING)),
                        lambda conn=None: None)
    other.fail("nobody was handed over")
    assert other.job.status is JobStatus.FAILED and [rid for rid, _ in send_world.crm.updates] == [R2]


def test_a_phase_that_breaks_the_lifecycle_is_a_bug_that_goes_up(send_world: SendWorld) -> None:
    attempt = started(send_world, JobStatus.IMPORTING)

    def phase(a: SendAttempt) -> bool:
        a.job.move(JobStatus.RESOLVING)
        return True

    with pytest.raises(IllegalMoveError):
        attempt.run_phase(phase)
