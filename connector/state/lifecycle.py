"""The life of a send job and of its batches: statuses as types, the allowed moves as data.

``JobStatus`` is the status of a send job (``send_jobs.status``), ``BatchStatus`` that of one
batch (``batches.status``); both are stored as their string values. ``JOB_MOVES`` and
``BATCH_MOVES`` are the only moves allowed between them, each with the reason it happens;
``SendJob.move`` and ``Batch.move`` (``connector.state.records``) check every move against
them. A move not in the table is a bug in the connector, not a problem of the data, and
raises ``IllegalMoveError``. A move to the status a job already has is a move like any other:
allowed only when listed (a takeover resolves again from ``resolving``).

The state diagram in docs/architecture.md ("The send lifecycle") is ``job_diagram()``;
tests/unit/test_send_lifecycle.py checks the two agree.
"""

from __future__ import annotations

import enum
from typing import Mapping, TypeVar


class JobStatus(enum.StrEnum):
    """Where a send job is, from the claim to the ESP send (``send_jobs.status``)."""

    CLAIMED = "claimed"
    RESOLVING = "resolving"
    HANDING_OVER = "handing_over"
    IMPORTING = "importing"
    STARTING = "starting"
    SENT = "sent"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Sent or failed: nothing more happens to this attempt (an admin may start a new one)."""
        return self in FINAL_JOB_STATUSES


FINAL_JOB_STATUSES = frozenset({JobStatus.SENT, JobStatus.FAILED})

FIRST_JOB_STATUS = JobStatus.CLAIMED
"""Every attempt at a request starts here (a new job, or a retry of a final one)."""

J = JobStatus
JOB_MOVES: Mapping[tuple[JobStatus, JobStatus], str] = {
    (J.CLAIMED, J.RESOLVING): "owner, e-mail and targets checked",
    (J.CLAIMED, J.STARTING): "already released at the ESP",
    (J.CLAIMED, J.FAILED): "refused, cancelled or deleted",
    (J.RESOLVING, J.RESOLVING): "taken over: resolve again",
    (J.RESOLVING, J.HANDING_OVER): "recipients spooled",
    (J.RESOLVING, J.FAILED): "nobody left, or refused",
    (J.HANDING_OVER, J.RESOLVING): "taken over: resolve again",
    (J.HANDING_OVER, J.STARTING): "subscribers upserted (SOAP)",
    (J.HANDING_OVER, J.IMPORTING): "batch files uploaded, imports started",
    (J.HANDING_OVER, J.FAILED): "refused",
    (J.IMPORTING, J.STARTING): "every import in",
    (J.IMPORTING, J.FAILED): "an import failed or hung",
    (J.STARTING, J.SENT): "ESP send started, CRM told",
    (J.STARTING, J.FAILED): "nobody handed over, cancelled or refused",
    (J.SENT, J.CLAIMED): "set back to Pending: a new attempt",
    (J.FAILED, J.CLAIMED): "set back to Pending: a new attempt",
}
"""Every allowed move of a send job, with why it happens."""


class BatchStatus(enum.StrEnum):
    """Where one batch of a send is (``batches.status``).

    On the file path a batch file is written, uploaded to the drop, its import's start
    requested (``starting``: the durable mark before the Perform, ``start_guard``) and
    seen (``importing``), then imported. On the SOAP path ``importing`` means partly
    upserted. A batch that is no longer part of the send's current attempt is
    ``superseded`` (an admin retried the request) or ``abandoned`` (a takeover found its
    file only on the other instance's disk; its rows went into later batches).
    """

    WRITTEN = "written"
    UPLOADED = "uploaded"
    STARTING = "starting"
    IMPORTING = "importing"
    IMPORTED = "imported"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    ABANDONED = "abandoned"


SET_ASIDE_BATCH_STATUSES = frozenset({BatchStatus.SUPERSEDED, BatchStatus.ABANDONED})
"""Batches that are no longer part of their send's current attempt."""

B = BatchStatus
_LIVE = (B.WRITTEN, B.UPLOADED, B.STARTING, B.IMPORTING, B.IMPORTED, B.FAILED)
BATCH_MOVES: Mapping[tuple[BatchStatus, BatchStatus], str] = {
    (B.WRITTEN, B.UPLOADED): "file at the drop",
    (B.UPLOADED, B.STARTING): "import start requested",
    (B.STARTING, B.STARTING): "start not seen past the horizon: requested again",
    (B.STARTING, B.IMPORTING): "import seen at the ESP",
    (B.IMPORTING, B.IMPORTED): "import (or the last SOAP chunk) done",
    (B.IMPORTING, B.FAILED): "import failed or hung",
    (B.WRITTEN, B.IMPORTING): "first SOAP chunk upserted",
    (B.IMPORTING, B.IMPORTING): "another SOAP chunk upserted",
    (B.WRITTEN, B.IMPORTED): "every row upserted (SOAP)",
    (B.IMPORTED, B.IMPORTED): "kept by a takeover, cut to its upserted rows (SOAP)",
    **{(old, B.SUPERSEDED): "the request was retried" for old in _LIVE},
    **{(old, B.ABANDONED): "taken over: its file was only on the other disk" for old in _LIVE},
}
"""Every allowed move of a batch, with why it happens."""

del J, B

S = TypeVar("S", JobStatus, BatchStatus)


class IllegalMoveError(RuntimeError):
    """A status move the lifecycle does not allow: a bug in the connector, never the data's fault."""


def checked_move(what: str, moves: Mapping[tuple[S, S], str], current: S | str, new: S | str) -> S:
    """``new`` as a status, when ``current -> new`` is in ``moves``; else ``IllegalMoveError``."""
    kind = type(next(iter(moves))[0])
    try:
        old, to = kind(current), kind(new)
    except ValueError as exc:
        raise IllegalMoveError(f"{what}: no such status in {current!r} -> {new!r}") from exc
    if (old, to) not in moves:
        allowed = ", ".join(sorted(t for (f, t) in moves if f == old)) or "nothing"
        raise IllegalMoveError(f"{what}: {old} -> {to} is not a move of the send lifecycle "
                               f"(from {old}: {allowed}); connector.state.lifecycle")
    return to


def as_status(kind: type[S], value: S | str) -> S | str:
    """``value`` as a member of ``kind``; an unknown string stays as it is (the store refuses it by name)."""
    try:
        return kind(value)
    except ValueError:
        return value


def job_diagram() -> str:
    """The send job's lifecycle as a Mermaid state diagram, made from ``JOB_MOVES``."""
    lines = ["stateDiagram-v2", f"    [*] --> {FIRST_JOB_STATUS}"]
    lines += [f"    {old} --> {new}: {why}" for (old, new), why in JOB_MOVES.items()]
    lines += [f"    {status} --> [*]" for status in JobStatus if status.final]
    return "\n".join(lines)
