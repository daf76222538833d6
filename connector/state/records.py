"""The rows of the state database as plain dataclasses (re-exported by ``store``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector.state.lifecycle import (
    BATCH_MOVES,
    FINAL_JOB_STATUSES,
    JOB_MOVES,
    SET_ASIDE_BATCH_STATUSES,
    BatchStatus,
    JobStatus,
    as_status,
    checked_move,
)

SEND_JOB_STATUSES = tuple(JobStatus)
"""Life of a send job (``connector.state.lifecycle``); ``sent`` and ``failed`` are final."""

FINAL_SEND_STATUSES = tuple(FINAL_JOB_STATUSES)

BATCH_STATUSES = tuple(BatchStatus)
"""``starting``: the import's start was requested (a durable mark written before the Perform)."""

BATCH_SUPERSEDED = "superseded by a retry of the request"
"""``error`` of a batch of an earlier attempt (status ``superseded``: an admin set the request back to Pending)."""

BATCH_ABANDONED = "abandoned: its file was only on the disk of the instance that wrote it; its rows went into later batches"
"""``error`` of a batch another instance's takeover could not finish (status ``abandoned``: it never reached the ESP)."""

SET_ASIDE = tuple(SET_ASIDE_BATCH_STATUSES)
"""Statuses of batches that are no longer part of their send's current attempt."""


@dataclass
class SendJob:
    """The connector's record of one CRM send request, from claim to ESP send."""

    request_id: str
    status: JobStatus = JobStatus.CLAIMED
    phase_detail: str = ""
    esp_list_id: str = ""
    esp_send_key: str = ""
    esp_job_id: str = ""
    campaign_id: str = ""
    name: str = ""
    resolved: int = 0
    handed_over: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    error: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    path: str = ""  # 'soap' | 'files' once decided
    workspace: str = ""  # token of the local work folder resolving this attempt ("" = none yet)

    def __post_init__(self) -> None:
        self.status = as_status(JobStatus, self.status)

    @property
    def in_flight(self) -> bool:
        return self.status not in FINAL_JOB_STATUSES

    def move(self, status: JobStatus) -> None:
        """To ``status``, if the lifecycle allows it (``IllegalMoveError`` otherwise: a bug)."""
        self.status = checked_move(f"send job {self.request_id}", JOB_MOVES, self.status, status)


@dataclass
class Batch:
    """One batch file of a send that goes by SFTP import."""

    request_id: str
    seq: int
    file_name: str = ""
    rows: int = 0
    status: BatchStatus = BatchStatus.WRITTEN
    import_key: str = ""
    rows_ok: int = 0
    rows_error: int = 0
    error: str = ""
    updated_at: datetime | None = None
    member_keys: bytes | None = None  # 16-byte digests of the rows' addresses, in file order

    def __post_init__(self) -> None:
        self.status = as_status(BatchStatus, self.status)

    @property
    def set_aside(self) -> bool:
        return self.status in SET_ASIDE_BATCH_STATUSES

    def move(self, status: BatchStatus) -> None:
        """To ``status``, if the lifecycle allows it (``IllegalMoveError`` otherwise: a bug)."""
        self.status = checked_move(f"batch {self.request_id}/{self.seq}", BATCH_MOVES, self.status, status)


@dataclass(frozen=True)
class Watermark:
    account: str
    event_type: str
    value: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TrackedSend:
    """An ESP send whose tracking is pulled until it is stopped."""

    account: str
    job_id: str
    request_id: str = ""
    campaign_id: str = ""
    name: str = ""
    active: bool = True
    stopped_reason: str = ""
    added_at: datetime | None = None
    stopped_at: datetime | None = None


@dataclass(frozen=True)
class QuarantineRow:
    """A recipient that was not handed over, with the reason (a ``SkipReason`` value)."""

    request_id: str
    table: str
    record_id: str
    email: str
    reason: str
    detail: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True)
class ChangeRow:
    """One field the connector changed in CRM or (sync) at the ESP: the field-level change log."""

    table: str
    record_id: str
    field: str
    old_value: Any = None
    new_value: Any = None
    source: str = ""  # e.g. "tracking:<job id>" or "send:<request id>"
    run_id: str = ""
    changed_at: datetime | None = None
    direction: str = ""  # sync: to_esp, to_crm, agreed, skipped, deleted ...; "" for other steps
    rule: str = ""  # sync: the [sync.<table>] line that decided, and how a conflict went


@dataclass(frozen=True)
class StepRun:
    run_id: str
    step: str
    holder: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str  # running | ok | failed | not available | interrupted
    processed: int
    message: str
    details: dict[str, Any]
