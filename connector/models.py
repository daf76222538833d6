"""The connector's own types: what crosses the edge of every adapter.

Plain frozen dataclasses. No zeep objects, OData dicts or paramiko handles ever
leave an adapter; they are turned into these first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping


class CrmTable(str, enum.Enum):
    """CRM tables whose records can receive email."""

    CONTACT = "contact"
    LEAD = "lead"
    ACCOUNT = "account"


class TargetKind(str, enum.Enum):
    """What a send request points at."""

    LIST = "list"
    CAMPAIGN = "campaign"
    CONTACT = "contact"
    LEAD = "lead"
    ACCOUNT = "account"


class SendStatus(str, enum.Enum):
    """Status of a send request, as stored on the CRM record."""

    PENDING = "pending"
    PROCESSING = "processing"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DRAFT = "draft"
    """Being written by the marketer: the connector leaves it alone."""
    PREVIEW_REQUESTED = "preview_requested"
    """Resolve the audience as a send would, write the counts and a sample, send nothing."""
    PREVIEWED = "previewed"
    """Preview written; the marketer sets Pending to send."""
    IMPORTING = "importing"
    SCHEDULED = "scheduled"


class EventType(str, enum.Enum):
    """Tracking event types, named after the ESP objects they come from."""

    SENT = "sent"
    OPEN = "open"
    CLICK = "click"
    BOUNCE = "bounce"
    UNSUB = "unsub"
    NOT_SENT = "notsent"


class BounceType(str, enum.Enum):
    """Normalized bounce type written to CRM (from BounceCategory/BounceType)."""

    HARD = "hard"
    SOFT = "soft"
    BLOCK = "block"
    TECHNICAL = "technical"
    UNKNOWN = "unknown"


class TrackingMode(str, enum.Enum):
    NONE = "none"
    AGGREGATE = "aggregate"
    RESPONDERS = "responders"
    ALL = "all"


class SkipReason(str, enum.Enum):
    """Why a resolved recipient was not handed to the ESP. Never silent."""

    NO_EMAIL = "no_email"
    MALFORMED_EMAIL = "malformed_email"
    DUPLICATE = "duplicate"
    DO_NOT_BULK_EMAIL = "do_not_bulk_email"
    DO_NOT_EMAIL = "do_not_email"
    INACTIVE = "inactive"
    ESP_HELD = "esp_held"
    ESP_BOUNCED = "esp_bounced"
    ESP_UNSUBSCRIBED = "esp_unsubscribed"
    SUPPRESSION_LIST = "suppression_list"
    ESP_REJECTED = "esp_rejected"
    IMPORT_ROW_ERROR = "import_row_error"
    MAPPING_ERROR = "mapping_error"


class SubscriberStatus(str, enum.Enum):
    """Marketing Cloud Subscriber.Status values."""

    ACTIVE = "Active"
    BOUNCED = "Bounced"
    HELD = "Held"
    UNSUBSCRIBED = "Unsubscribed"
    DELETED = "Deleted"


@dataclass(frozen=True)
class RecordRef:
    """A pointer to one CRM record."""

    table: CrmTable
    id: str


@dataclass(frozen=True)
class SendTarget:
    kind: TargetKind
    id: str


@dataclass(frozen=True)
class SendRequest:
    """A CRM user's request to send an email (the connector's custom CRM table)."""

    id: str
    name: str
    status: SendStatus
    owner_id: str
    targets: tuple[SendTarget, ...]
    email_key: str = ""
    send_classification_key: str = ""
    campaign_id: str | None = None
    subject: str = ""
    force_batching: bool = False
    esp_job_id: str | None = None
    etag: str | None = None
    created_on: datetime | None = None
    invalid_targets: tuple[str, ...] = ()
    """What is wrong with each target that could not be read (``cesp_targets``), one text each."""
    email_name: str = ""
    """The picked e-mail's name (the request's e-mail lookup), for messages; empty without a lookup."""
    email_problem: str = ""
    """Why the picked e-mail cannot be used (a record without a customer key, a deleted record)."""
    preview_would_send: int | None = None
    """Recipients the last preview would have handed over (None: never previewed)."""


@dataclass(frozen=True)
class SendRequestUpdate:
    """What the connector writes back to a send request. None = leave as is."""

    status: SendStatus | None = None
    reason: str | None = None
    esp_job_id: str | None = None
    resolved: int | None = None
    handed_over: int | None = None
    skipped: int | None = None
    skipped_by_reason: Mapping[str, int] | None = None
    counts: Mapping[str, int] | None = None  # tracking aggregates: sent, opens, unique_opens ...
    released_on: datetime | None = None
    preview_resolved: int | None = None
    preview_would_send: int | None = None
    preview_skipped_by_reason: Mapping[str, int] | None = None
    previewed_on: datetime | None = None


@dataclass(frozen=True)
class Recipient:
    """One resolved CRM record, with the raw CRM attributes the mapping needs."""

    ref: RecordRef
    email: str | None
    attributes: Mapping[str, object] = field(default_factory=dict)
    do_not_bulk_email: bool = False
    do_not_email: bool = False
    active: bool = True
    source: SendTarget | None = None


@dataclass(frozen=True)
class Subscriber:
    """An ESP subscriber, ready to upsert or to write as a CSV row."""

    subscriber_key: str
    email: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    ref: RecordRef | None = None


@dataclass(frozen=True)
class Skip:
    """A recipient that was not handed over, and why."""

    ref: RecordRef | None
    email: str | None
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True)
class WriteResult:
    """Per-item outcome of a bulk write at a peer (ESP upsert, CRM $batch)."""

    key: str
    ok: bool
    message: str = ""
    code: str = ""


@dataclass(frozen=True)
class ImportRowError:
    row: int
    subscriber_key: str
    message: str


@dataclass(frozen=True)
class ImportStatus:
    """State of one ESP file import."""

    customer_key: str
    state: str  # queued | processing | completed | error
    rows_total: int = 0
    rows_ok: int = 0
    rows_error: int = 0
    errors: tuple[ImportRowError, ...] = ()
    message: str = ""
    found: bool = True  # False: the ESP shows no run of this import (not started, or not visible yet)

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "error")


@dataclass(frozen=True)
class EspEmail:
    """An e-mail (content) of the ESP's catalogue, as the e-mail picker in CRM shows it."""

    customer_key: str
    name: str
    esp_id: str = ""
    subject: str = ""
    folder: str = ""
    status: str = ""


@dataclass(frozen=True)
class EspSend:
    """A send started at the ESP."""

    customer_key: str
    job_id: str
    status: str = ""
    created: datetime | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackingEvent:
    """One tracking event from the ESP. ``event_time`` is timezone-aware UTC."""

    event_type: EventType
    job_id: str
    subscriber_key: str
    event_time: datetime
    email: str = ""
    list_id: str = ""
    batch_id: str = ""
    url: str = ""
    url_id: str = ""
    bounce_category: str = ""
    bounce_type: str = ""
    smtp_code: str = ""
    smtp_reason: str = ""
    reason: str = ""  # NotSentEvent reason / unsubscribe reason

    @property
    def natural_key(self) -> tuple[str, str, str, str, str]:
        """Send, subscriber, event type, event time, URL: the same event never lands twice."""
        return (
            self.job_id,
            self.subscriber_key,
            self.event_type.value,
            self.event_time.isoformat(),
            self.url,
        )


@dataclass(frozen=True)
class CampaignResponse:
    """A CRM campaign response to create, keyed for idempotency."""

    tracking_key: str
    campaign_id: str
    customer: RecordRef
    subject: str
    received_on: datetime
    response_code: int = 1
    channel_code: int = 1
    closed: bool = False
    email: str = ""
    description: str = ""


@dataclass(frozen=True)
class BounceUpdate:
    """Bounce details to write on a contact or lead (never unsubscribes it)."""

    ref: RecordRef
    bounced_on: datetime
    bounce_type: BounceType
    job_id: str


# -- subscriber sync (ESP side) ---------------------------------------------------------


@dataclass(frozen=True)
class EspSubscriberState:
    """A subscriber as the ESP shows it now: what the sync step reads from the ESP side.

    ``modified`` (aware UTC) is the ESP's modified date of the subscriber; ``status`` is None
    when the ESP answers a status this project does not know.
    """

    subscriber_key: str
    email: str
    status: SubscriberStatus | None
    attributes: Mapping[str, str]
    modified: datetime


@dataclass(frozen=True)
class SubscriberUpdate:
    """A change to write to an existing ESP subscriber (the sync step's ESP-bound half).

    Only what is given is written: ``attributes`` by name, ``email`` and ``status`` when not None.
    """

    subscriber_key: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    email: str | None = None
    status: SubscriberStatus | None = None


DE_FIELD_TYPES = ("Text", "Number", "Date", "Boolean", "EmailAddress", "Phone", "Decimal", "Locale")
"""Data extension field types (the PartnerAPI's DataExtensionFieldType, minus the encrypted ones)."""


@dataclass(frozen=True)
class DataExtensionField:
    """One field (column) of an ESP data extension."""

    name: str
    field_type: str = "Text"
    max_length: int | None = None
    is_primary_key: bool = False
    is_required: bool = False
    scale: int | None = None
    default: str | None = None


@dataclass(frozen=True)
class DataExtensionInfo:
    """An ESP data extension: its fields, primary key and sendable relationship."""

    customer_key: str
    name: str
    fields: tuple[DataExtensionField, ...]
    is_sendable: bool = False
    sendable_field: str | None = None
    sendable_subscriber_field: str | None = None

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.is_primary_key)

    def row_key(self, row: Mapping[str, str]) -> str:
        """The key ``WriteResult`` carries for a row: its primary-key values joined by ``|``."""
        return "|".join(str(row.get(name, "")) for name in self.primary_key)


@dataclass(frozen=True)
class ColumnInfo:
    """What the CRM says about one column of a table (its metadata)."""

    name: str
    type: str  # Dataverse AttributeType: String, Memo, Integer, Picklist, Boolean, DateTime ...
    writable: bool = True  # IsValidForUpdate
    max_length: int | None = None  # String / Memo
    options: Mapping[int, str] = field(default_factory=dict)  # Picklist / State / Status: code -> label


@dataclass(frozen=True)
class KpiValue:
    """One KPI of one CRM customer, as the KPI job writes it to the ``<prefix>_kpi`` table."""

    customer_id: str  # the CRM record id of the contact / account
    kpi: str  # the KPI's name (with the customer, the row's alternate key)
    value: object  # a Decimal, or None
    period: str = ""
    source: str = ""
    computed_on: datetime | None = None

    @property
    def key(self) -> str:
        """``<customer id>/<kpi>``: the key of its ``WriteResult``."""
        return f"{self.customer_id}/{self.kpi}"
