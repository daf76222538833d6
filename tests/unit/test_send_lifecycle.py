"""The send lifecycle as data: every listed move is allowed, every other one raises, the doc shows the table."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from connector.state.lifecycle import (
    BATCH_MOVES,
    JOB_MOVES,
    BatchStatus,
    IllegalMoveError,
    JobStatus,
    job_diagram,
)
from connector.state.records import Batch, SendJob

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(("old", "new"), list(JOB_MOVES))
def test_every_listed_job_move_is_allowed(old: JobStatus, new: JobStatus) -> None:
    job = SendJob("r1", status=old)
    job.move(new)
    assert job.status is new


@pytest.mark.parametrize(("old", "new"), [pair for pair in itertools.product(JobStatus, repeat=2)
                                          if pair not in JOB_MOVES])
def test_every_other_job_move_raises(old: JobStatus, new: JobStatus) -> None:
    job = SendJob("r1", status=old)
    with pytest.raises(IllegalMoveError, match=f"{old} -> {new} is not a move"):
        job.move(new)
    assert job.status is old


@pytest.mark.parametrize(("old", "new"), list(BATCH_MOVES))
def test_every_listed_batch_move_is_allowed(old: BatchStatus, new: BatchStatus) -> None:
    batch = Batch("r1", 1, status=old)
    batch.move(new)
    assert batch.status is new


@pytest.mark.parametrize(("old", "new"), [pair for pair in itertools.product(BatchStatus, repeat=2)
                                          if pair not in BATCH_MOVES])
def test_every_other_batch_move_raises(old: BatchStatus, new: BatchStatus) -> None:
    batch = Batch("r1", 1, status=old)
    with pytest.raises(IllegalMoveError):
        batch.move(new)
    assert batch.status is old


def test_a_set_aside_batch_stays_set_aside() -> None:
    for status in (BatchStatus.SUPERSEDED, BatchStatus.ABANDONED):
        batch = Batch("r1", 1, status=status)
        assert batch.set_aside
        for new in BatchStatus:
            with pytest.raises(IllegalMoveError):
                batch.move(new)


def test_statuses_are_stored_as_todays_strings() -> None:
    assert [s.value for s in JobStatus] == ["claimed", "resolving", "handing_over", "importing", "starting",
                                            "sent", "failed"]
    assert f"{JobStatus.HANDING_OVER}" == "handing_over" and str(BatchStatus.WRITTEN) == "written"
    assert SendJob("r1", status="importing").status is JobStatus.IMPORTING  # read from the database
    assert SendJob("r1").status is JobStatus.CLAIMED


def test_a_final_job_moves_only_into_a_new_attempt() -> None:
    for final in (JobStatus.SENT, JobStatus.FAILED):
        assert final.final and not SendJob("r1", status=final).in_flight
        assert {new for (old, new) in JOB_MOVES if old == final} == {JobStatus.CLAIMED}


def test_every_in_flight_status_can_fail() -> None:
    assert all((s, JobStatus.FAILED) in JOB_MOVES for s in JobStatus if not s.final)


def test_the_diagram_in_the_architecture_doc_is_the_table() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    found = re.search(r"```mermaid\n(stateDiagram-v2\n.*?)\n```", text, re.S)
    assert found, "docs/architecture.md has no Mermaid state diagram of the send lifecycle"
    assert found.group(1) == job_diagram(), ("docs/architecture.md's send lifecycle differs from "
                                             "connector.state.lifecycle.JOB_MOVES; paste job_diagram() there")


def test_the_migration_turns_the_old_set_aside_error_texts_into_statuses(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from connector.state.records import BATCH_ABANDONED, BATCH_SUPERSEDED
    from connector.state.schema import batches
    from connector.state.store import StateStore

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", holder="test")
    try:
        store.migrate("0007")
        store.save_send_job(SendJob("r1", status=JobStatus.RESOLVING))
        old = [(1, "imported", BATCH_SUPERSEDED), (2, "failed", BATCH_SUPERSEDED), (3, "failed", BATCH_ABANDONED),
               (4, "imported", ""), (5, "failed", "the ESP could not import batch file x")]
        with store.engine.begin() as conn:
            conn.execute(sa.insert(batches), [{"request_id": "r1", "seq": seq, "status": status, "error": error,
                                               "updated_at": store.now()} for seq, status, error in old])
        store.migrate()
        got = {b.seq: b.status for b in store.batches("r1")}
        assert got == {1: BatchStatus.SUPERSEDED, 2: BatchStatus.SUPERSEDED, 3: BatchStatus.ABANDONED,
                       4: BatchStatus.IMPORTED, 5: BatchStatus.FAILED}
        assert [b.seq for b in store.batches("r1") if b.set_aside] == [1, 2, 3]
        assert store.batch_progress(["r1"]) == {"r1": {"total": 2, "imported": 1, "failed": 1}}
    finally:
        store.close()
