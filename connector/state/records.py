"""The rows of the state database as plain dataclasses (re-exported by ``store``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SEND_JOB_STATUSES = ("claimed", "resolving", "handing_over", "importing", "starting", "sent", "failed")
"""Life of a send job; ``sent`` and ``failed`` are final."""

FINAL_SEND_STATUSES = ("sent", "failed")

BATCH_STATUSES = ("written", "uploaded", "starting", "importing", "imported", "failed")
"""``starting``: the import's start was requested (a durable mark written before the Perform)."""

BATCH_SUPERSEDED = "superseded by a retry of the request"
"""``error`` of a batch of an earlier attempt (an admin set the request back to Pending)."""

BATCH_ABANDONED = "abandoned: its file was only on the disk of the instance that wrote it; its rows went into later batches"
"""``error`` of a batch another instance's takeover could not finish (it never reached the ESP)."""

SET_ASIDE = (BATCH_SUPERSEDED, BATCH_ABANDONED)
"""Batches that are no longer part of their send's current attempt."""


@dataclass
class SendJob:
    """The connector's record of one CRM send request, from claim to ESP send."""

    request_id: str
    status: str = "claimed"
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

    @property
    def in_flight(self) -> bool:
        return self.status not in FINAL_SEND_STATUSES


@dataclass
class Batch:
    """One batch file of a send that goes by SFTP import."""

    request_id: str
    seq: int
    file_name: str = ""
    rows: int = 0
    status: str = "written"
    import_key: str = ""
    rows_ok: int = 0
    rows_error: int = 0
    error: str = ""
    updated_at: datetime | None = None
    member_keys: bytes | None = None  # 16-byte digests of the rows' addresses, in file order

    @property
    def set_aside(self) -> bool:
        return self.error in SET_ASIDE


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
