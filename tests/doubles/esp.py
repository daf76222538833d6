"""``FakeEsp``: an in-process Marketing Cloud account behind the ``EspClient`` interface.

It follows the rules the real adapter meets at Marketing Cloud (and that the sandbox
enforces), so that no unit test passes on a call the real one would refuse:

- list ids are the ESP's numbers (``int(list_id)``, as the adapter builds them); a list the
  account does not have fails each subscriber of a write (12009), an import definition or a
  send definition (``PermanentPeerError``);
- a subscriber write needs a key and an address Marketing Cloud takes (the sandbox's rule,
  ``valid_email``), and only attributes the account has (12004); per-object failures are
  results, never exceptions;
- an import reads its file from the drop folder when it runs (a file that is not there, or
  whose header lacks SubscriberKey/EmailAddress, makes the run end in ``error``); a row with an
  address the ESP refuses is a row error. Like the adapter it reports counts only, no rows;
- started sends and import results are retrievable only after a delay (``advance_past_delays``
  ends it; ``delays=False`` is the knob a unit test may use to skip it). Until then a second
  ``start_send`` / ``start_import`` under the same key starts a second one, as at the ESP: the
  step's durable start mark is what prevents that, not the peer;
- a send needs an e-mail and a send classification the account has; an unknown e-mail key
  names ``[sends] default_email_key``;
- tracking reads take timezone-aware datetimes only and return ``since < EventDate <= until``
  in pages of at most 2,500;
- subscriber sync: every write to a subscriber (upsert, ``update_subscribers``,
  ``edit_subscriber``) moves its modified date (the fake's clock: now plus what ``advance``
  added); ``iter_subscribers_modified_since`` pages ``since < modified <= until`` and refuses an
  attribute the account lacks (``PeerSetupError``); ``update_subscribers`` never creates (12001),
  refuses a malformed address (12000) and an unknown attribute (12004) per subscriber.

Test-facing parts (not on ``EspClient``): ``add_subscriber``, ``edit_subscriber``, ``now``,
``add`` / ``generate_events``,
``advance_past_delays``, ``advance``; what reached the ESP: ``lists``, ``members``,
``sends_for``, ``runs_for``, ``start_calls``, ``upsert_calls``, ``calls``, ``summary_calls``.
Fault knobs: ``reject`` (addresses refused though well formed, as Marketing Cloud refuses
some domains), ``import_state`` (``processing`` holds runs, ``error`` fails them), ``summaries``
(a send's counters as the ESP reports them).
"""

from __future__ import annotations

import csv
import itertools
import random
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Iterator, Sequence

from connector.errors import PeerSetupError, PermanentPeerError
from connector.esp.base import EspClient
from connector.models import (
    EspEmail,
    EspSend,
    EspSubscriberState,
    EventType,
    ImportStatus,
    Subscriber,
    SubscriberStatus,
    SubscriberUpdate,
    TrackingEvent,
    WriteResult,
)
from connector.sandbox.marketing_cloud.records import DEFAULT_ATTRIBUTES as SANDBOX_ATTRIBUTES
from connector.sandbox.marketing_cloud.values import valid_email

PAGE_MAX = 2500
"""Rows of one Retrieve page at Marketing Cloud."""
DEFAULT_ATTRIBUTES = frozenset({"Email Address", "Full Name", "First Name", "Last Name", "Gender", "Birthday",
                                "Company", "City", "Country", "Phone"})
"""The profile attributes of a new account (as the sandbox's generated one)."""
CLASSIFICATIONS = frozenset({"Default Commercial", "Default Transactional"})
EVENT_NAMES = {"SentEvent": EventType.SENT, "OpenEvent": EventType.OPEN, "ClickEvent": EventType.CLICK,
               "BounceEvent": EventType.BOUNCE, "UnsubEvent": EventType.UNSUB, "NotSentEvent": EventType.NOT_SENT}
KEY_COLUMNS = ("subscriberkey", "subscriber key")
EMAIL_COLUMNS = ("emailaddress", "email address", "email")


@dataclass
class FakeImportRun:
    task_id: str
    customer_key: str
    file_name: str
    list_id: str
    visible: bool
    state: str = "queued"
    total: int = 0
    ok: int = 0
    errors: int = 0
    message: str = ""


@dataclass
class FakeSend:
    job_id: str
    customer_key: str
    list_id: str
    recipients: int
    excluded: int
    visible: bool
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


class FakeEsp(EspClient):
    """One Marketing Cloud account in memory (see the module docstring for its rules)."""

    def __init__(self, drop_folder: Path | None = None, *, delays: bool = True, page_size: int = PAGE_MAX,
                 shuffle: bool = False) -> None:
        if not 0 < page_size <= PAGE_MAX:
            raise ValueError(f"page_size {page_size}: Marketing Cloud pages hold 1 to {PAGE_MAX} rows")
        self.drop_folder = Path(drop_folder) if drop_folder is not None else None  # None: no file drop
        self.delays = delays
        self.page_size = page_size
        self.shuffle = shuffle
        self.attributes = DEFAULT_ATTRIBUTES
        self.emails: dict[str, str] = {"welcome": "10001", "cesp-demo-email": "10002"}
        self.lists: dict[str, str] = {}  # customer key -> list id
        self.list_names: dict[str, str] = {}  # customer key -> list name
        self.members: dict[str, dict[str, Subscriber]] = {}  # list id -> subscriber key -> subscriber
        self.subscribers: dict[str, Subscriber] = {}
        self.statuses: dict[str, SubscriberStatus] = {}
        self.modified: dict[str, datetime] = {}  # subscriber key -> the ESP's modified date
        self.clock_offset = timedelta()
        self.import_definitions: dict[str, tuple[str, str]] = {}  # key -> (file, list id)
        self.import_runs: dict[str, list[FakeImportRun]] = {}
        self.send_definitions: dict[str, str] = {}  # key -> list id
        self.sends: dict[str, FakeSend] = {}  # job id -> send
        self.events: list[TrackingEvent] = []
        self.summaries: dict[str, EspSend] = {}
        self.reject: set[str] = set()
        self.import_state = "completed"
        self.upsert_calls = 0
        self.calls: list[tuple[EventType, datetime]] = []
        self.summary_calls: list[str] = []
        self._ids = itertools.count(20_001)
        self._jobs = itertools.count(40_001)
        self._lock = threading.RLock()

    # -- test-facing ---------------------------------------------------------------------------

    def now(self) -> datetime:
        """The fake's clock (aware UTC): the wall clock plus what ``advance`` added."""
        return datetime.now(UTC) + self.clock_offset

    def add_subscriber(self, key: str, email: str, status: str = "Active",
                       attributes: dict[str, str] | None = None) -> None:
        """Seed a subscriber the account already has (as the sandbox's ``store.add_subscriber``)."""
        with self._lock:
            self.subscribers[key] = Subscriber(key, email, dict(attributes or {}))
            self.statuses[key] = SubscriberStatus(status)
            self.modified[key] = self.now()

    def edit_subscriber(self, key: str, *, attributes: dict[str, str] | None = None, email: str | None = None,
                        status: str | None = None, when: datetime | None = None) -> EspSubscriberState:
        """Change a subscriber as a marketer at the ESP would (as the sandbox's ``store.edit_subscriber``)."""
        with self._lock:
            sub = self.subscribers[key]
            names = self._spelled(attributes or {})
            if status is not None:
                self.statuses[key] = SubscriberStatus(status)
            merged = {**sub.attributes, **{names[k]: v for k, v in (attributes or {}).items()}}
            self.subscribers[key] = replace(sub, email=sub.email if email is None else email, attributes=merged)
            self.modified[key] = when or self.now()
            return self._state(key, tuple(merged))

    def add(self, *events: TrackingEvent) -> None:
        """Tracking events the ESP shows (each one as the account recorded it)."""
        for event in events:
            if event.event_time.utcoffset() is None:
                raise ValueError(f"event of {event.subscriber_key} has a naive EventDate")
        self.events.extend(events)

    def generate_events(self, n: int, *, event_types: Sequence[str] = ("SentEvent",), hours: float = 24.0,
                        start: datetime | None = None) -> int:
        """A finished send with ``n`` events of each type over ``hours`` (ending now, or from ``start``)."""
        span = timedelta(hours=hours)
        begin = start.astimezone(UTC) if start is not None else datetime.now(UTC).replace(microsecond=0) - span
        job = next(self._jobs)
        with self._lock:
            self.sends[str(job)] = FakeSend(str(job), f"generated-{job}", "", n, 0, True, begin)
        for name in event_types:
            kind = EVENT_NAMES[name]
            for i in range(n):
                extra = {"url": f"https://example.test/l{i % 7}"} if kind is EventType.CLICK else {}
                if kind is EventType.BOUNCE:
                    extra = {"bounce_category": ("Hard bounce", "Soft bounce", "Block bounce")[i % 3]}
                when = begin + span * (i / max(n, 1))
                self.events.append(TrackingEvent(kind, str(job), f"gen-{job}-{i:06d}", when.replace(microsecond=0),
                                                 email=f"g{i}@example.test", **extra))
        return job

    def advance_past_delays(self) -> None:
        """What was started so far becomes retrievable (the ESP's delay is over)."""
        with self._lock:
            for runs in self.import_runs.values():
                for run in runs:
                    run.visible = True
            for send in self.sends.values():
                send.visible = True

    def advance(self, hours: float) -> None:
        """Every delay here is shorter than an hour: all of them end; the clock moves on."""
        self.clock_offset += timedelta(hours=hours)
        self.advance_past_delays()

    def wait_idle(self, timeout: float = 0.0) -> bool:  # noqa: ARG002 - nothing runs in the background
        return True

    def sends_for(self, customer_key: str) -> list[FakeSend]:
        return [s for s in self.sends.values() if s.customer_key == customer_key]

    def runs_for(self, customer_key: str) -> list[FakeImportRun]:
        return list(self.import_runs.get(customer_key, []))

    @property
    def start_calls(self) -> int:
        """Sends started at the ESP by ``start_send`` (not the generated ones)."""
        return sum(1 for s in self.sends.values() if s.customer_key in self.send_definitions)

    # -- lists and subscribers -----------------------------------------------------------------

    def _list(self, list_id: str) -> dict[str, Subscriber] | None:
        int(list_id)  # the adapter builds List(ID=int(list_id)): anything else never leaves it
        return self.members.get(str(list_id))

    def ensure_list(self, customer_key: str, name: str) -> str:
        if not customer_key or not name:
            raise PermanentPeerError(f"Marketing Cloud could not create List {customer_key!r}: ListName is required "
                                     "to create a List.", peer="esp", operation="Create")
        with self._lock:
            if customer_key not in self.lists:
                list_id = str(next(self._ids))
                self.lists[customer_key] = list_id
                self.list_names[customer_key] = name
                self.members[list_id] = {}
            return self.lists[customer_key]

    def _write_problem(self, sub: Subscriber) -> tuple[str, str] | None:
        if not sub.subscriber_key and not sub.email:
            return "SubscriberKey or EmailAddress is required.", "12000"
        if not sub.email and sub.subscriber_key not in self.subscribers:
            return "EmailAddress is required to create a subscriber.", "12000"
        if sub.email and (not valid_email(sub.email) or sub.email in self.reject):
            return f"Invalid email address: '{sub.email}'.", "12000"
        unknown = sorted(set(sub.attributes) - self.attributes)
        if unknown:
            listed = ", ".join(f"'{n}'" for n in unknown)
            return f"Error: Subscriber attribute(s) {listed} do not exist in this account.", "12004"
        return None

    def upsert_subscribers(self, subscribers: Sequence[Subscriber], list_id: str) -> list[WriteResult]:
        members = self._list(list_id)
        self.upsert_calls += 1
        out = []
        with self._lock:
            for sub in subscribers:
                problem = self._write_problem(sub)
                if problem is None and members is None:
                    problem = f"List with ID '{list_id}' does not exist.", "12009"
                if problem:
                    out.append(WriteResult(sub.subscriber_key, False, *problem))
                    continue
                key = sub.subscriber_key or sub.email
                self.subscribers[key] = sub if sub.email else replace(sub, email=self.subscribers[key].email)
                self.statuses.setdefault(key, SubscriberStatus.ACTIVE)
                self.modified[key] = self.now()
                members[key] = self.subscribers[key]
                out.append(WriteResult(sub.subscriber_key, True))
        return out

    def subscriber_statuses(self, subscriber_keys: Sequence[str]) -> dict[str, SubscriberStatus]:
        with self._lock:
            return {k: self.statuses[k] for k in subscriber_keys if k in self.statuses}

    def profile_attributes(self) -> frozenset[str]:
        return self.attributes

    # -- subscriber sync -----------------------------------------------------------------------

    def _spelled(self, names: Sequence[str] | dict[str, str]) -> dict[str, str]:
        """Asked name -> the account's spelling (names compare without case); KeyError when unknown."""
        have = {a.casefold(): a for a in self.attributes}
        missing = [n for n in names if n.casefold() not in have]
        if missing:
            raise KeyError(", ".join(map(repr, missing)))
        return {n: have[n.casefold()] for n in names}

    def _state(self, key: str, attributes: Sequence[str]) -> EspSubscriberState:
        sub = self.subscribers[key]
        folded = {k.casefold(): v for k, v in sub.attributes.items()}
        return EspSubscriberState(key, sub.email, self.statuses.get(key, SubscriberStatus.ACTIVE),
                                  {a: folded.get(a.casefold(), "") for a in attributes}, self.modified[key])

    def iter_subscribers_modified_since(self, since: datetime, attributes: Sequence[str],
                                        until: datetime | None = None) -> Iterator[list[EspSubscriberState]]:
        for value in (since, until):
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"naive datetime {value!r}: the ESP adapter takes timezone-aware datetimes only")
        try:
            self._spelled(attributes)
        except KeyError as exc:
            raise PeerSetupError(f"Marketing Cloud account has no subscriber attribute(s) {exc.args[0]}",
                                 peer="esp", operation="Describe") from None
        with self._lock:
            keys = sorted((k for k, when in self.modified.items() if k in self.subscribers and when > since
                           and (until is None or when <= until)), key=lambda k: self.modified[k])
            states = [self._state(k, attributes) for k in keys]
        for start in range(0, len(states), self.page_size):
            yield states[start:start + self.page_size]

    def update_subscribers(self, updates: Sequence[SubscriberUpdate]) -> list[WriteResult]:
        out = []
        with self._lock:
            for update in updates:
                key = update.subscriber_key
                if key not in self.subscribers:
                    out.append(WriteResult(key, False, f"Subscriber with SubscriberKey '{key}' was not found.",
                                           "12001"))
                    continue
                candidate = Subscriber(key, update.email or self.subscribers[key].email, dict(update.attributes))
                problem = self._write_problem(candidate)
                if problem is None and any(update.attributes.get(n, "") and not _fits(n, v)
                                           for n, v in update.attributes.items()):
                    bad = next(n for n, v in update.attributes.items() if v and not _fits(n, v))
                    problem = f"InvalidDPV: '{update.attributes[bad]}' is not a valid value for '{bad}'.", "12004"
                if problem:
                    out.append(WriteResult(key, False, *problem))
                    continue
                self.edit_subscriber(key, attributes=dict(update.attributes), email=update.email,
                                     status=None if update.status is None else SubscriberStatus(update.status).value)
                out.append(WriteResult(key, True))
        return out

    def find_lists(self, list_keys: Sequence[str]) -> dict[str, str]:
        with self._lock:
            return {key: self.list_names.get(key, key) for key in list_keys if key in self.lists}

    def remove_from_lists(self, subscriber_keys: Sequence[str], list_keys: Sequence[str]) -> list[WriteResult]:
        with self._lock:
            missing = [k for k in list_keys if k not in self.lists]
            if missing:
                raise PeerSetupError(f"Marketing Cloud account has no list with the customer key(s) "
                                     f"{', '.join(map(repr, missing))}: fix [sync] synced_lists", peer="esp",
                                     operation="Retrieve")
            for key in subscriber_keys:
                for list_key in list_keys:
                    self.members[self.lists[list_key]].pop(key, None)
            return [WriteResult(key, True) for key in subscriber_keys]

    # -- imports -------------------------------------------------------------------------------

    def start_import(self, customer_key: str, file_name: str, list_id: str) -> str:
        with self._lock:
            seen = [r for r in self.import_runs.get(customer_key, []) if r.visible]
            if seen:
                return seen[-1].task_id
            if customer_key not in self.import_definitions:
                if self._list(list_id) is None:
                    raise PermanentPeerError(
                        f"Marketing Cloud could not create ImportDefinition {customer_key!r}: The destination List "
                        "was not found (ErrorCode 43010)", peer="esp", operation="Create")
                if not file_name:
                    raise PermanentPeerError(f"Marketing Cloud could not create ImportDefinition {customer_key!r}: "
                                             "FileSpec is required. (ErrorCode 43060)", peer="esp", operation="Create")
                self.import_definitions[customer_key] = (file_name, str(list_id))
            file_name, list_id = self.import_definitions[customer_key]
            run = FakeImportRun(str(next(self._ids)), customer_key, file_name, list_id, visible=not self.delays)
            self.import_runs.setdefault(customer_key, []).append(run)
            return run.task_id

    def import_status(self, customer_key: str) -> ImportStatus:
        with self._lock:
            runs = [r for r in self.import_runs.get(customer_key, []) if r.visible]
            if not runs:
                return ImportStatus(customer_key, "queued", message="not started yet at the ESP", found=False)
            run = runs[-1]
            if run.state in ("queued", "processing"):
                self._run(run)
            raw = {"queued": "New", "processing": "Processing", "completed": "Completed", "error": "Error"}[run.state]
            return ImportStatus(customer_key, run.state, run.total, run.ok, run.errors, message=f"ImportStatus {raw}")

    def _run(self, run: FakeImportRun) -> None:
        """Load the file as the ESP does when the run's turn comes (the knob may hold or fail it)."""
        if self.import_state != "completed":
            run.state = self.import_state
            run.message = "held by the import_state knob" if run.state == "processing" else "failed (knob)"
            return
        path = self.drop_folder / run.file_name if self.drop_folder is not None else None
        if path is None or "/" in run.file_name or not path.is_file():
            run.state, run.message = "error", f"File {run.file_name} was not found in the Import folder."
            return
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
        header = [h.strip() for h in rows[0]] if rows else []
        lowered = [h.lower() for h in header]
        key_col = next((i for i, c in enumerate(lowered) if c in KEY_COLUMNS), None)
        email_col = next((i for i, c in enumerate(lowered) if c in EMAIL_COLUMNS), None)
        if key_col is None or email_col is None:
            run.state, run.message = "error", "The file needs SubscriberKey and EmailAddress columns in its header row."
            return
        attr_cols = [i for i in range(len(header)) if i not in (key_col, email_col)]
        unknown = [header[i] for i in attr_cols if header[i] not in self.attributes]
        members = self.members.get(run.list_id, {})
        for row in rows[1:]:
            if not row or row == [""]:
                continue
            run.total += 1
            sub = Subscriber(row[key_col].strip(), row[email_col].strip(),
                             {header[i]: row[i] for i in attr_cols if i < len(row)})
            if unknown or len(row) != len(header) or self._write_problem(sub):
                run.errors += 1
                continue
            self.subscribers[sub.subscriber_key] = sub
            self.statuses.setdefault(sub.subscriber_key, SubscriberStatus.ACTIVE)
            members[sub.subscriber_key] = sub
            run.ok += 1
        run.state = "completed"

    # -- sends ---------------------------------------------------------------------------------

    def find_email(self, customer_key: str) -> str | None:
        return self.emails.get(customer_key)

    def iter_emails(self) -> Iterator[EspEmail]:
        for key, esp_id in sorted(self.emails.items()):
            yield EspEmail(key, key, esp_id, status="active")

    def find_send(self, customer_key: str) -> EspSend | None:
        with self._lock:
            shown = [s for s in self.sends_for(customer_key) if s.visible]
            if not shown:
                return None
            send = max(shown, key=lambda s: int(s.job_id))
            return EspSend(customer_key, send.job_id, "Complete", send.created, self._counts(send))

    def start_send(self, customer_key: str, list_id: str, email_key: str, send_classification_key: str,
                   name: str) -> EspSend:
        existing = self.find_send(customer_key)
        if existing is not None:
            return existing
        with self._lock:
            if customer_key not in self.send_definitions:
                self._check_send_definition(customer_key, list_id, email_key, send_classification_key)
                self.send_definitions[customer_key] = str(list_id)
            audience = self.members.get(self.send_definitions[customer_key], {})
            blocked = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.HELD)
            excluded = sum(1 for k in audience if self.statuses.get(k) in blocked)
            send = FakeSend(str(next(self._jobs)), customer_key, self.send_definitions[customer_key],
                            len(audience) - excluded, excluded, visible=not self.delays)
            self.sends[send.job_id] = send
        return EspSend(customer_key, send.job_id, "Started")

    def _check_send_definition(self, key: str, list_id: str, email_key: str, classification: str) -> None:
        def refuse(message: str) -> PermanentPeerError:
            return PermanentPeerError(f"Marketing Cloud could not create EmailSendDefinition {key!r}: {message}",
                                      peer="esp", operation="Create")

        if email_key not in self.emails:
            raise PermanentPeerError(
                f"Marketing Cloud has no Email with customer key {email_key!r}: set the send request's email key "
                "or [sends] default_email_key to an existing Email", peer="esp", operation="Retrieve")
        if (classification or "Default Commercial") not in CLASSIFICATIONS:
            raise refuse(f"SendClassification '{classification}' was not found. (ErrorCode 2)")
        if self._list(list_id) is None:
            raise refuse("A SendDefinitionList names a List that does not exist. (ErrorCode 2)")

    @staticmethod
    def _counts(send: FakeSend) -> dict[str, int]:
        return {"sent": send.recipients, "delivered": send.recipients, "targeted": send.recipients + send.excluded,
                "excluded": send.excluded}

    def send_summary(self, job_id: str) -> EspSend | None:
        self.summary_calls.append(job_id)
        if job_id in self.summaries:
            return self.summaries[job_id]
        send = self.sends.get(str(job_id))
        if send is None or not send.visible:
            return None
        return EspSend("", send.job_id, "Complete", send.created, self._counts(send))

    # -- tracking ------------------------------------------------------------------------------

    def iter_event_pages(self, event_type: EventType, since: datetime,
                         until: datetime | None = None) -> Iterator[list[TrackingEvent]]:
        kind = EventType(event_type)
        for value in (since, until):
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"naive datetime {value!r}: the ESP adapter takes timezone-aware datetimes only")
        self.calls.append((kind, since))
        hits = [e for e in self.events if e.event_type is kind and e.event_time > since
                and (until is None or e.event_time <= until)]
        if self.shuffle:  # Marketing Cloud does not promise EventDate order
            random.Random(7).shuffle(hits)
        for start in range(0, len(hits), self.page_size):
            yield hits[start:start + self.page_size]



_TYPED = {a.name.casefold(): a for a in SANDBOX_ATTRIBUTES}


def _fits(name: str, value: str) -> bool:
    """Whether a value fits its attribute's type, as the account's catalogue types it (the sandbox's)."""
    attr = _TYPED.get(name.casefold())
    return attr is None or attr.accepts(value)
