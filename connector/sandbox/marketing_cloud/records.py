"""Plain records held by the Marketing Cloud sandbox store, and the simulated clock."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from connector.sandbox.marketing_cloud.events import EventBlock


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class SimClock:
    """Simulated time: wall time times ``speed``, plus whatever ``advance`` added."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._real0 = time.time()
        self._sim0 = start if start is not None else self._real0
        self.speed = speed
        self._offset = 0.0

    def now_ts(self) -> float:
        return self._sim0 + (time.time() - self._real0) * self.speed + self._offset

    def now(self) -> datetime:
        return utc(self.now_ts())

    def advance(self, hours: float) -> None:
        with self._lock:
            self._offset += hours * 3600.0


_US_DATE = ("%m/%d/%Y", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M")


def _parses_as_date(text: str) -> bool:
    """ISO 8601 (what the connector writes) or the US m/d/yyyy forms the service documents for imports."""
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
        return True
    except ValueError:
        pass
    for fmt in _US_DATE:
        try:
            datetime.strptime(text, fmt)
            return True
        except ValueError:
            continue
    return False


@dataclass
class AttributeRec:
    """A profile attribute of the account (Describe Subscriber lists them as ExtendedProperties)."""

    name: str
    type: str = "string"  # PropertyType of the WSDL: string, boolean, double, datetime
    required: bool = False

    def accepts(self, value: str) -> bool:
        """Whether ``value`` fits the attribute's type (blank always does; 12004 InvalidDPV otherwise)."""
        text = (value or "").strip()
        if not text or self.type == "string":
            return True
        if self.type == "boolean":
            return text.lower() in ("true", "false", "1", "0", "yes", "no", "y", "n")
        if self.type == "double":
            try:
                float(text)
            except ValueError:
                return False
            return True
        return _parses_as_date(text)


DEFAULT_ATTRIBUTES = (
    AttributeRec("Email Address", required=True), AttributeRec("Full Name"), AttributeRec("First Name"),
    AttributeRec("Last Name"), AttributeRec("Gender"), AttributeRec("Birthday", "datetime"),
    AttributeRec("Company"), AttributeRec("City"), AttributeRec("Country"), AttributeRec("Phone"),
)
"""The generated account's profile attributes: the built-in "Email Address", the name fields a new
account carries, and the few address and company fields most accounts add."""


@dataclass
class SubscriberRec:
    id: int
    key: str
    email: str
    status: str = "Active"
    attributes: dict[str, str] = field(default_factory=dict)
    created: datetime | None = None
    modified: datetime | None = None
    unsubscribed: datetime | None = None
    email_type: str = "HTML"
    bounce_count: int = 0
    first_bounce: datetime | None = None


@dataclass
class ListRec:
    id: int
    customer_key: str
    name: str
    object_id: str
    description: str = ""
    type: str = "Private"
    classification: str = "ExactTargetList"
    category: int = 0
    created: datetime | None = None
    modified: datetime | None = None
    members: dict[str, str] = field(default_factory=dict)  # subscriber key -> status
    all_subscribers: bool = False
    member_modified: dict[str, datetime] = field(default_factory=dict)  # key -> membership last changed


EMAIL_FOLDERS = {5000: "my emails", 5001: "Connector"}
"""The account's e-mail folders (CategoryID -> name); 5000 is the root every Email defaults to."""
EMAIL_ROOT_FOLDER = 5000


@dataclass
class EmailRec:
    id: int
    customer_key: str
    name: str
    subject: str
    object_id: str
    created: datetime | None = None
    category_id: int = EMAIL_ROOT_FOLDER  # the folder (Email.CategoryID; Email.Folder is its name)


@dataclass
class SendClassificationRec:
    id: int
    customer_key: str
    name: str
    object_id: str
    type: str = "Marketing"


@dataclass
class SendDefinitionRec:
    id: int
    customer_key: str
    object_id: str
    name: str
    description: str
    email_id: int
    list_ids: list[int]
    send_classification_key: str
    subject: str = ""
    from_name: str = ""
    from_address: str = ""
    created: datetime | None = None
    modified: datetime | None = None


@dataclass
class SendRec:
    id: int
    definition_key: str
    email_id: int
    email_name: str
    subject: str
    list_ids: list[int]
    send_date: datetime
    status: str = "Sending"
    from_name: str = ""
    from_address: str = ""
    targeted: int = 0
    excluded: int = 0
    existing_unsubscribes: int = 0
    existing_undeliverables: int = 0
    sent_date: datetime | None = None
    blocks: list[EventBlock] = field(default_factory=list)


@dataclass
class ImportDefinitionRec:
    id: int
    customer_key: str
    object_id: str
    name: str
    description: str
    list_id: int
    file_spec: str
    file_type: str = "CSV"
    update_type: str = "AddAndUpdate"
    mapping_type: str = "InferFromColumnHeadings"
    allow_errors: bool = True
    delimiter: str = ""
    header_lines: int = 1
    created: datetime | None = None
    modified: datetime | None = None


@dataclass
class ImportRowError:
    line: int
    subscriber_key: str
    message: str


@dataclass
class ImportRunRec:
    task_id: int
    definition_key: str
    list_id: int
    file_spec: str
    status: str = "New"
    start: datetime | None = None
    end: datetime | None = None
    total: int = 0
    ok: int = 0
    errors: int = 0
    duplicated: int = 0
    row_errors: list[ImportRowError] = field(default_factory=list)
    message: str = ""
    created: datetime | None = None  # Perform start; the summary is retrievable a while after
