"""The Marketing Cloud sandbox's data: subscribers, lists, emails, sends, imports, events.

Thread-safe (one lock). The SOAP app calls ``create`` / ``update`` / ``delete`` /
``perform`` with parsed objects and gets back per-object results in the shape of the
real ``CreateResult`` etc.; ``rows(object_type)`` yields Retrieve rows. Tests and
benchmarks inspect the same store directly (``subscriber``, ``list_by_key``,
``sends``, ``import_runs``, ``event_count``) and produce tracking data with
``generate_events``.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from connector.sandbox.marketing_cloud import events as ev
from connector.sandbox.marketing_cloud.records import (
    EmailRec,
    ImportDefinitionRec,
    ImportRunRec,
    ListRec,
    SendClassificationRec,
    SendDefinitionRec,
    SendRec,
    SimClock,
    SubscriberRec,
    utc,
)
from connector.sandbox.marketing_cloud.soap import Obj, to_cst_text

EMAIL_RE = re.compile(r"^[^@\s\"<>(),;:\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
SUBSCRIBER_STATUSES = ("Active", "Bounced", "Held", "Unsubscribed", "Deleted")
ALL_SUBSCRIBERS_ID = 1000
Result = dict[str, Any]


def valid_email(address: str) -> bool:
    return bool(address) and len(address) <= 254 and EMAIL_RE.match(address) is not None


def ok(message: str, obj: tuple | None = None, new_id: int = 0, **extra: Any) -> Result:
    result: Result = {"StatusCode": "OK", "StatusMessage": message, "NewID": new_id}
    if obj is not None:
        result["Object"] = obj
    result.update(extra)
    return result


def error(message: str, code: int, obj: tuple | None = None) -> Result:
    result: Result = {"StatusCode": "Error", "StatusMessage": message, "ErrorCode": code, "NewID": 0}
    if obj is not None:
        result["Object"] = obj
    return result


class EspStore:
    """All objects of one sandbox Marketing Cloud account (business unit)."""

    def __init__(self, *, import_root: Path, clock: SimClock, rates: ev.EventRates | None = None, seed: int = 1,
                 account_id: int = 7281698, import_delay: float = 0.2) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.rates = rates or ev.EventRates()
        self.seed = seed
        self.account_id = account_id
        self.import_root = Path(import_root)
        self.import_delay = import_delay
        self._ids = itertools.count(10_001)
        self._send_ids = itertools.count(40_001)
        self._task_ids = itertools.count(900_001)
        self.subscribers: dict[str, SubscriberRec] = {}
        self.lists: dict[int, ListRec] = {}
        self.emails: dict[int, EmailRec] = {}
        self.send_classifications: dict[str, SendClassificationRec] = {}
        self.send_definitions: dict[str, SendDefinitionRec] = {}
        self.sends: dict[int, SendRec] = {}
        self.import_definitions: dict[str, ImportDefinitionRec] = {}
        self.import_runs: dict[int, ImportRunRec] = {}
        self.blocks: list[ev.EventBlock] = []
        self._pending_status: list[tuple[int, str, str]] = []
        self._threads: list[threading.Thread] = []
        self._seed_objects()

    # ------------------------------------------------------------ seeding / helpers

    def _seed_objects(self) -> None:
        now = self.clock.now()
        self.lists[ALL_SUBSCRIBERS_ID] = ListRec(
            ALL_SUBSCRIBERS_ID, f"All Subscribers - {ALL_SUBSCRIBERS_ID}", "All Subscribers", str(uuid.uuid4()),
            type="Private", created=now, modified=now, all_subscribers=True,
        )
        for key, name, subject in (
            ("cesp-demo-email", "Connector demo email", "News from the connector demo"),
            ("welcome", "Welcome", "Welcome aboard"),
        ):
            rec = EmailRec(next(self._ids), key, name, subject, str(uuid.uuid4()), now)
            self.emails[rec.id] = rec
        for key, kind in (("Default Commercial", "Marketing"), ("Default Transactional", "Operational")):
            self.send_classifications[key] = SendClassificationRec(next(self._ids), key, key, str(uuid.uuid4()), kind)

    def now(self):
        return self.clock.now()

    def apply_due_changes(self) -> None:
        """Subscriber status changes (hard bounces, unsubscribes) whose events are now visible."""
        now_ts = self.clock.now_ts()
        with self.lock:
            while self._pending_status and self._pending_status[0][0] <= now_ts:
                ts, key, status = heapq.heappop(self._pending_status)
                sub = self.subscribers.get(key)
                if sub is None or sub.status in ("Unsubscribed", "Held", "Deleted"):
                    continue
                sub.status = status
                sub.modified = utc(ts)
                if status == "Unsubscribed":
                    sub.unsubscribed = utc(ts)

    def spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self.lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait for background imports and send simulations; True when all finished."""
        with self.lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in threads)

    # ------------------------------------------------------------ inspection

    def subscriber(self, key: str) -> SubscriberRec | None:
        with self.lock:
            return self.subscribers.get(key)

    def list_by_key(self, customer_key: str) -> ListRec | None:
        with self.lock:
            return next((lst for lst in self.lists.values() if lst.customer_key == customer_key), None)

    def email_by_key(self, customer_key: str) -> EmailRec | None:
        with self.lock:
            return next((e for e in self.emails.values() if e.customer_key == customer_key), None)

    def sends_for(self, definition_key: str) -> list[SendRec]:
        with self.lock:
            return [s for s in self.sends.values() if s.definition_key == definition_key]

    def event_count(self, obj_type: str, *, visible_only: bool = True, send_id: int | None = None) -> int:
        now_ts = self.clock.now_ts()
        with self.lock:
            blocks = list(self.blocks)
        return sum(
            (b.visible(now_ts) if visible_only else len(b))
            for b in blocks
            if b.obj_type == obj_type and (send_id is None or b.send_id == send_id)
        )

    def runs_for(self, definition_key: str) -> list[ImportRunRec]:
        with self.lock:
            return [r for r in self.import_runs.values() if r.definition_key == definition_key]

    # ------------------------------------------------------------ subscribers

    def add_subscriber(self, key: str, email: str, status: str = "Active", attributes: dict | None = None,
                       list_ids: tuple[int, ...] = ()) -> SubscriberRec:
        """Direct seeding for tests (no validation)."""
        with self.lock:
            now = self.clock.now()
            rec = self.subscribers.get(key)
            if rec is None:
                rec = self.subscribers[key] = SubscriberRec(next(self._ids), key, email, status, dict(attributes or {}), now, now)
            for list_id in list_ids:
                self.lists[list_id].members[key] = "Active"
            return rec

    def upsert_subscriber(self, obj: Obj, *, add: bool, update: bool, list_conflict_ok: bool) -> Result:
        key = obj.text("SubscriberKey") or obj.text("EmailAddress")
        email = obj.text("EmailAddress")
        echo = ("Subscriber", {"SubscriberKey": key, "EmailAddress": email} if email else {"SubscriberKey": key})
        if not key:
            return error("SubscriberKey or EmailAddress is required.", 12000, echo)
        with self.lock:
            rec = self.subscribers.get(key)
            if rec is None and not add:
                return error(f"Subscriber with SubscriberKey '{key}' was not found.", 12001, echo)
            if rec is not None and not update:
                return error("The subscriber is already on the list", 12014, echo)
            if email and not valid_email(email):
                return error(f"Invalid email address: '{email}'.", 12000, echo)
            if rec is None and not email:
                return error("EmailAddress is required to create a subscriber.", 12000, echo)
            status = obj.text("Status")
            if status and status not in SUBSCRIBER_STATUSES:
                return error(f"Status '{status}' is not a valid SubscriberStatus.", 12000, echo)
            memberships = []
            for item in obj.all("Lists"):
                if not isinstance(item, Obj):
                    continue
                list_id = _int(item.get("ID")) or _int(_nested(item, "List", "ID"))
                if list_id not in self.lists:
                    return error(f"List with ID '{item.get('ID')}' does not exist.", 12009, echo)
                action = (item.text("Action") or "create").lower()
                member_status = item.text("Status") or "Active"
                memberships.append((list_id, action, member_status))
            now = self.clock.now()
            created = rec is None
            for list_id, action, _member_status in memberships:
                if action == "create" and not list_conflict_ok and not created and key in self.lists[list_id].members:
                    return error("The subscriber is already on the list", 12014, echo)
            if created:
                rec = self.subscribers[key] = SubscriberRec(next(self._ids), key, email, status or "Active",
                                                            {}, now, now)
            else:
                if email:
                    rec.email = email
                if status:
                    rec.status = status
                    rec.unsubscribed = now if status == "Unsubscribed" else None
                rec.modified = now
            for attr in obj.all("Attributes"):
                if isinstance(attr, Obj) and attr.text("Name"):
                    rec.attributes[attr.text("Name")] = attr.text("Value")
            if obj.text("EmailTypePreference") in ("HTML", "Text"):
                rec.email_type = obj.text("EmailTypePreference")
            for list_id, action, member_status in memberships:
                members = self.lists[list_id].members
                if action == "delete":
                    members.pop(key, None)
                else:
                    members[key] = member_status
            message = "Created Subscriber." if created else "Updated Subscriber."
            return ok(message, ("Subscriber", _subscriber_values(rec)), rec.id)

    def delete_subscriber(self, obj: Obj) -> Result:
        key = obj.text("SubscriberKey") or obj.text("EmailAddress")
        with self.lock:
            rec = self.subscribers.pop(key, None)
            if rec is None:
                return error(f"Subscriber with SubscriberKey '{key}' was not found.", 12001,
                             ("Subscriber", {"SubscriberKey": key}))
            for lst in self.lists.values():
                lst.members.pop(key, None)
            return ok("Subscriber deleted", ("Subscriber", {"SubscriberKey": key, "ID": rec.id}))

    # ------------------------------------------------------------ lists

    def create_list(self, obj: Obj) -> Result:
        name = obj.text("ListName")
        key = obj.text("CustomerKey") or str(uuid.uuid4())
        echo = ("List", {"CustomerKey": key, "ListName": name})
        if not name:
            return error("ListName is required to create a List.", 2, echo)
        with self.lock:
            if self.list_by_key(key) is not None:
                return error(f"A List with CustomerKey '{key}' already exists.", 1, echo)
            now = self.clock.now()
            rec = ListRec(next(self._ids), key, name, str(uuid.uuid4()), obj.text("Description"),
                          obj.text("Type") or "Private", obj.text("ListClassification") or "ExactTargetList",
                          _int(obj.get("Category")) or 0, now, now)
            self.lists[rec.id] = rec
            return ok("Created List.", ("List", _list_values(rec)), rec.id, NewObjectID=rec.object_id)

    def find_list(self, obj: Obj) -> ListRec | None:
        list_id = _int(obj.get("ID"))
        if list_id:
            return self.lists.get(list_id)
        if obj.text("CustomerKey"):
            return self.list_by_key(obj.text("CustomerKey"))
        object_id = obj.text("ObjectID")
        return next((lst for lst in self.lists.values() if object_id and lst.object_id == object_id), None)

    def update_list(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_list(obj)
            if rec is None:
                return error("List not found (give ID or CustomerKey).", 2, ("List", {"ID": obj.get("ID")}))
            if obj.text("ListName"):
                rec.name = obj.text("ListName")
            if obj.text("Description"):
                rec.description = obj.text("Description")
            rec.modified = self.clock.now()
            return ok("Updated List.", ("List", _list_values(rec)), rec.id)

    def delete_list(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_list(obj)
            if rec is None or rec.all_subscribers:
                return error("List not found or not deletable.", 2, ("List", {"ID": obj.get("ID")}))
            del self.lists[rec.id]
            return ok("List deleted", ("List", {"ID": rec.id, "CustomerKey": rec.customer_key}))

    # ------------------------------------------------------------ emails

    def create_email(self, obj: Obj) -> Result:
        key = obj.text("CustomerKey") or str(uuid.uuid4())
        with self.lock:
            if self.email_by_key(key) is not None:
                return error(f"An Email with CustomerKey '{key}' already exists.", 1, ("Email", {"CustomerKey": key}))
            rec = EmailRec(next(self._ids), key, obj.text("Name") or key, obj.text("Subject"), str(uuid.uuid4()),
                           self.clock.now())
            self.emails[rec.id] = rec
            return ok("Created Email.", ("Email", _email_values(rec)), rec.id)

    def find_email(self, obj: Any) -> EmailRec | None:
        if not isinstance(obj, Obj):
            return None
        email_id = _int(obj.get("ID"))
        if email_id:
            return self.emails.get(email_id)
        return self.email_by_key(obj.text("CustomerKey")) if obj.text("CustomerKey") else None

    # ------------------------------------------------------------ send definitions and sends

    def create_send_definition(self, obj: Obj) -> Result:
        key = obj.text("CustomerKey") or str(uuid.uuid4())
        echo = ("EmailSendDefinition", {"CustomerKey": key, "Name": obj.text("Name")})
        with self.lock:
            if key in self.send_definitions:
                return error(f"An EmailSendDefinition with CustomerKey '{key}' already exists.", 1, echo)
            email = self.find_email(obj.get("Email"))
            if email is None:
                return error("The Email of the EmailSendDefinition was not found (give Email.ID or CustomerKey).",
                             2, echo)
            classification = obj.get("SendClassification")
            class_key = classification.text("CustomerKey") if isinstance(classification, Obj) else ""
            class_key = class_key or "Default Commercial"
            if class_key not in self.send_classifications:
                return error(f"SendClassification '{class_key}' was not found.", 2, echo)
            list_ids = []
            for item in obj.all("SendDefinitionList"):
                lst = self.find_list(item.get("List")) if isinstance(item, Obj) and isinstance(item.get("List"), Obj) else None
                if lst is None:
                    return error("A SendDefinitionList names a List that does not exist.", 2, echo)
                list_ids.append(lst.id)
            if not list_ids:
                return error("An EmailSendDefinition needs at least one SendDefinitionList with a List.", 2, echo)
            now = self.clock.now()
            rec = SendDefinitionRec(next(self._ids), key, str(uuid.uuid4()), obj.text("Name") or key,
                                    obj.text("Description"), email.id, list_ids, class_key,
                                    obj.text("EmailSubject") or email.subject, obj.text("FromName"),
                                    obj.text("FromAddress"), now, now)
            self.send_definitions[key] = rec
            return ok("Created EmailSendDefinition.", ("EmailSendDefinition", _esd_values(rec, self)), rec.id,
                      NewObjectID=rec.object_id)

    def find_send_definition(self, obj: Obj) -> SendDefinitionRec | None:
        if obj.text("CustomerKey"):
            return self.send_definitions.get(obj.text("CustomerKey"))
        wanted_id, object_id = _int(obj.get("ID")), obj.text("ObjectID")
        return next((d for d in self.send_definitions.values()
                     if (wanted_id and d.id == wanted_id) or (object_id and d.object_id == object_id)), None)

    def update_send_definition(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_send_definition(obj)
            if rec is None:
                return error("EmailSendDefinition not found.", 2, ("EmailSendDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            for attr, name in (("name", "Name"), ("description", "Description"), ("subject", "EmailSubject")):
                if obj.text(name):
                    setattr(rec, attr, obj.text(name))
            rec.modified = self.clock.now()
            return ok("Updated EmailSendDefinition.", ("EmailSendDefinition", _esd_values(rec, self)), rec.id)

    def delete_send_definition(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_send_definition(obj)
            if rec is None:
                return error("EmailSendDefinition not found.", 2, ("EmailSendDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            del self.send_definitions[rec.customer_key]
            return ok("EmailSendDefinition deleted", ("EmailSendDefinition", {"CustomerKey": rec.customer_key}))

    def start_send(self, obj: Obj) -> Result:
        """Perform start on an EmailSendDefinition: a new send job every time, as the real service does."""
        with self.lock:
            definition = self.find_send_definition(obj)
            if definition is None:
                return error("EmailSendDefinition not found.", 2, ("EmailSendDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            self.apply_due_changes()
            start_ts = int(self.clock.now_ts())
            email = self.emails[definition.email_id]
            send = SendRec(next(self._send_ids), definition.customer_key, email.id, email.name, definition.subject,
                           list(definition.list_ids), utc(start_ts), from_name=definition.from_name,
                           from_address=definition.from_address)
            recipients, excluded, seen = [], [], set()
            for list_id in definition.list_ids:
                lst = self.lists[list_id]
                keys = self.subscribers.keys() if lst.all_subscribers else list(lst.members)
                for key in keys:
                    if key in seen:
                        continue
                    seen.add(key)
                    sub = self.subscribers.get(key)
                    member_status = "Active" if lst.all_subscribers else lst.members.get(key, "Active")
                    if sub is None:
                        continue
                    if sub.status in ("Unsubscribed", "Held", "Deleted") or member_status != "Active":
                        excluded.append(key)
                        if sub.status == "Held":
                            send.existing_undeliverables += 1
                        else:
                            send.existing_unsubscribes += 1
                    else:
                        recipients.append(key)
            send.targeted, send.excluded = len(recipients) + len(excluded), len(excluded)
            self.sends[send.id] = send
        self.spawn(lambda: self._simulate(send, recipients, excluded, start_ts), f"esp-send-{send.id}")
        task = {"StatusCode": "OK", "StatusMessage": "OK", "ID": str(send.id)}
        return ok("Email Send Definition started", ("EmailSendDefinition", {"CustomerKey": definition.customer_key}),
                  Task=("TaskResult", task))

    def _simulate(self, send: SendRec, recipients: list[str], excluded: list[str], start_ts: int) -> None:
        list_id = send.list_ids[0] if send.list_ids else 0
        result = ev.simulate_send(send.id, list_id, recipients, excluded, start_ts, self.rates, self.seed)
        with self.lock:
            send.blocks = result.blocks
            self.blocks.extend(result.blocks)
            for change in result.status_changes:
                heapq.heappush(self._pending_status, change)
            send.status = "Complete"
            send.sent_date = send.send_date

    def generate_events(self, n: int, *, event_types: tuple[str, ...] = ev.EVENT_OBJECTS, hours: float = 24.0,
                        start=None, seed: int | None = None, list_id: int = ALL_SUBSCRIBERS_ID,
                        arrival_lag_minutes: float | None = None) -> int:
        """Add a finished send with ``n`` events of each given type, spread over ``hours``.

        By default the events end now, so all are visible at once (unless an arrival lag,
        by default ``rates.arrival_lag_minutes``, holds the latest back). Returns the send (job) id.
        """
        lag = self.rates.arrival_lag_minutes if arrival_lag_minutes is None else arrival_lag_minutes
        seconds = int(hours * 3600)
        start_ts = int(start.timestamp()) if start is not None else int(self.clock.now_ts()) - seconds
        with self.lock:
            send_id = next(self._send_ids)
        blocks = ev.synthetic_blocks(send_id, list_id, n, event_types, start_ts, seconds,
                                     self.seed if seed is None else seed, int(lag * 60))
        email = next(iter(self.emails.values()))
        send = SendRec(send_id, f"generated-{send_id}", email.id, email.name, email.subject, [list_id],
                       utc(start_ts), status="Complete", targeted=n, sent_date=utc(start_ts), blocks=blocks)
        with self.lock:
            self.sends[send_id] = send
            self.blocks.extend(blocks)
        return send_id

    def send_counts(self, send: SendRec) -> dict[str, int]:
        now_ts = self.clock.now_ts()
        counts = dict.fromkeys(("sent", "open", "click", "unsub", "notsent", "hard", "soft", "other"), 0)
        for block in send.blocks:
            if block.obj_type == "BounceEvent":
                for i in block.arrived_indexes(now_ts):
                    kind = ev.BOUNCES[block.code[i]][1]
                    counts["hard" if kind == "HardBounce" else "soft" if kind == "SoftBounce" else "other"] += 1
            else:
                name = {"SentEvent": "sent", "OpenEvent": "open", "ClickEvent": "click", "UnsubEvent": "unsub",
                        "NotSentEvent": "notsent"}[block.obj_type]
                counts[name] += block.visible(now_ts)
        return counts

    # ------------------------------------------------------------ imports

    def create_import_definition(self, obj: Obj) -> Result:
        key = obj.text("CustomerKey")
        echo = ("ImportDefinition", {"CustomerKey": key, "Name": obj.text("Name")})
        if not key:
            return error("CustomerKey Not Specified", 43000, echo)
        with self.lock:
            if key in self.import_definitions:
                return error(f"An ImportDefinition with CustomerKey '{key}' already exists.", 43030, echo)
            destination = obj.get("DestinationObject")
            if not isinstance(destination, Obj) or destination.type not in ("List", ""):
                return error("DestinationObject must be a List (by ID) in this account.", 43020, echo)
            lst = self.lists.get(_int(destination.get("ID")))
            if lst is None:
                return error("The destination List was not found (ImportDefinition needs DestinationObject List ID).",
                             43010, echo)
            if not obj.text("FileSpec"):
                return error("FileSpec is required.", 43060, echo)
            location = obj.get("RetrieveFileTransferLocation")
            location_key = location.text("CustomerKey") if isinstance(location, Obj) else ""
            if location_key and location_key != "ExactTarget Enhanced FTP":
                return error(f"FileTransferLocation '{location_key}' was not found.", 43010, echo)
            now = self.clock.now()
            rec = ImportDefinitionRec(
                next(self._ids), key, str(uuid.uuid4()), obj.text("Name") or key, obj.text("Description"), lst.id,
                obj.text("FileSpec"), obj.text("FileType") or "CSV", obj.text("UpdateType") or "AddAndUpdate",
                obj.text("FieldMappingType") or "InferFromColumnHeadings",
                obj.text("AllowErrors", "true").lower() in ("true", "1"), obj.text("Delimiter"),
                _int(obj.get("HeaderLines")) or 1, now, now,
            )
            self.import_definitions[key] = rec
            return ok("ImportDefinition created.", ("ImportDefinition", _import_def_values(rec)), rec.id,
                      NewObjectID=rec.object_id)

    def find_import_definition(self, obj: Obj) -> ImportDefinitionRec | None:
        if obj.text("CustomerKey"):
            return self.import_definitions.get(obj.text("CustomerKey"))
        wanted_id, object_id = _int(obj.get("ID")), obj.text("ObjectID")
        return next((d for d in self.import_definitions.values()
                     if (wanted_id and d.id == wanted_id) or (object_id and d.object_id == object_id)), None)

    def update_import_definition(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_import_definition(obj)
            if rec is None:
                return error("ImportDefinition Not Found", 43010, ("ImportDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            if obj.text("FileSpec"):
                rec.file_spec = obj.text("FileSpec")
            if obj.text("UpdateType"):
                rec.update_type = obj.text("UpdateType")
            rec.modified = self.clock.now()
            return ok("ImportDefinition updated.", ("ImportDefinition", _import_def_values(rec)), rec.id)

    def delete_import_definition(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_import_definition(obj)
            if rec is None:
                return error("ImportDefinition Not Found", 43010, ("ImportDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            del self.import_definitions[rec.customer_key]
            return ok("ImportDefinition deleted.", ("ImportDefinition", {"CustomerKey": rec.customer_key}))

    def start_import(self, obj: Obj) -> Result:
        from connector.sandbox.marketing_cloud.imports import run_import

        with self.lock:
            definition = self.find_import_definition(obj)
            if definition is None:
                return error("ImportDefinition Not Found", 43010, ("ImportDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            run = ImportRunRec(next(self._task_ids), definition.customer_key, definition.list_id, definition.file_spec)
            self.import_runs[run.task_id] = run
        self.spawn(lambda: run_import(self, definition, run), f"esp-import-{run.task_id}")
        task = {"StatusCode": "OK", "StatusMessage": "OK", "ID": str(run.task_id)}
        return ok("ImportDefinition started.", ("ImportDefinition", {"CustomerKey": definition.customer_key}),
                  Task=("TaskResult", task))

    # ------------------------------------------------------------ retrieve rows

    def rows(self, obj_type: str, keys: list[str] | None = None) -> Iterator[dict]:
        """Every object of ``obj_type`` as a dict of property values (rendering + filtering).

        ``keys``: the only SubscriberKeys that can match (an index lookup for Subscriber
        and ListSubscriber); the caller still applies the full filter.
        """
        self.apply_due_changes()
        with self.lock:
            if obj_type == "Subscriber" and keys is not None:
                records: list = [self.subscribers[k] for k in dict.fromkeys(keys) if k in self.subscribers]
                make: Callable[[Any], dict] = _subscriber_values
            elif obj_type == "ListSubscriber" and keys is not None:
                records, make = self._list_subscriber_pairs(keys), _list_subscriber_values
            elif obj_type == "Subscriber":
                records, make = list(self.subscribers.values()), _subscriber_values
            elif obj_type == "List":
                records, make = list(self.lists.values()), _list_values
            elif obj_type == "ListSubscriber":
                records, make = self._list_subscriber_pairs(), _list_subscriber_values
            elif obj_type == "Email":
                records, make = list(self.emails.values()), _email_values
            elif obj_type == "SendClassification":
                records, make = list(self.send_classifications.values()), _send_class_values
            elif obj_type == "EmailSendDefinition":
                records, make = list(self.send_definitions.values()), lambda r: _esd_values(r, self)
            elif obj_type == "Send":
                records, make = list(self.sends.values()), self._send_values
            elif obj_type == "ImportDefinition":
                records, make = list(self.import_definitions.values()), _import_def_values
            elif obj_type == "ImportResultsSummary":
                records, make = list(self.import_runs.values()), _import_run_values
            else:
                raise KeyError(obj_type)
        for record in records:
            yield make(record)

    def _list_subscriber_pairs(self, keys: list[str] | None = None) -> list[tuple[int, str, str]]:
        pairs = []
        if keys is not None:
            wanted = [k for k in dict.fromkeys(keys) if k in self.subscribers]
            for lst in self.lists.values():
                for key in wanted:
                    if lst.all_subscribers:
                        pairs.append((lst.id, key, self.subscribers[key].status))
                    elif key in lst.members:
                        pairs.append((lst.id, key, lst.members[key]))
            return pairs
        for lst in self.lists.values():
            if lst.all_subscribers:
                pairs.extend((lst.id, key, sub.status) for key, sub in self.subscribers.items())
            else:
                pairs.extend((lst.id, key, status) for key, status in lst.members.items())
        return pairs

    def _send_values(self, send: SendRec) -> dict:
        c = self.send_counts(send)
        bounces = c["hard"] + c["soft"] + c["other"]
        values = {
            "CreatedDate": send.send_date, "ModifiedDate": send.sent_date, "ID": send.id,
            "Email": ("Email", {"ID": send.email_id}), "SendDate": send.send_date,
            "FromAddress": send.from_address, "FromName": send.from_name, "Duplicates": 0, "InvalidAddresses": 0,
            "ExistingUndeliverables": send.existing_undeliverables, "ExistingUnsubscribes": send.existing_unsubscribes,
            "HardBounces": c["hard"], "SoftBounces": c["soft"], "OtherBounces": c["other"], "ForwardedEmails": 0,
            "UniqueClicks": c["click"], "UniqueOpens": c["open"], "NumberSent": c["sent"],
            "NumberDelivered": c["sent"] - bounces, "Unsubscribes": c["unsub"], "MissingAddresses": 0,
            "Subject": send.subject, "SentDate": send.sent_date, "EmailName": send.email_name,
            "Status": send.status, "NumberTargeted": send.targeted, "NumberErrored": 0,
            "NumberExcluded": send.excluded,
            "EmailSendDefinition": ("EmailSendDefinition", {"CustomerKey": send.definition_key}),
            "Email.ID": send.email_id, "EmailSendDefinition.CustomerKey": send.definition_key,
        }
        if send.list_ids:
            values["List"] = [("List", {"ID": list_id}) for list_id in send.list_ids]
            values["List.ID"] = send.list_ids[0]
        return values


# ---------------------------------------------------------------- value builders

def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _nested(obj: Obj, name: str, child: str) -> Any:
    inner = obj.get(name)
    return inner.get(child) if isinstance(inner, Obj) else None


def _subscriber_values(rec: SubscriberRec) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ID": rec.id, "EmailAddress": rec.email,
        "Attributes": [("Attribute", {"Name": k, "Value": v}) for k, v in rec.attributes.items()],
        "SubscriberKey": rec.key, "UnsubscribedDate": rec.unsubscribed, "Status": rec.status,
        "EmailTypePreference": rec.email_type,
    }


def _list_values(rec: ListRec) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ID": rec.id, "ObjectID": rec.object_id,
        "CustomerKey": rec.customer_key, "ListName": rec.name, "Category": rec.category, "Type": rec.type,
        "Description": rec.description, "ListClassification": rec.classification,
    }


def _list_subscriber_values(pair: tuple[int, str, str]) -> dict:
    list_id, key, status = pair
    return {"Status": status, "ListID": list_id, "SubscriberKey": key}


def _email_values(rec: EmailRec) -> dict:
    return {
        "CreatedDate": rec.created, "ID": rec.id, "ObjectID": rec.object_id, "CustomerKey": rec.customer_key,
        "Name": rec.name, "Subject": rec.subject, "IsActive": True, "Status": "active", "EmailType": "HTML",
        "CharacterSet": "utf-8",
    }


def _send_class_values(rec: SendClassificationRec) -> dict:
    return {"ID": rec.id, "ObjectID": rec.object_id, "CustomerKey": rec.customer_key,
            "SendClassificationType": rec.type, "Name": rec.name}


def _esd_values(rec: SendDefinitionRec, store: EspStore) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ID": rec.id, "ObjectID": rec.object_id,
        "CustomerKey": rec.customer_key, "Name": rec.name, "Description": rec.description,
        "SendClassification": ("SendClassification", {"CustomerKey": rec.send_classification_key}),
        "FromName": rec.from_name or None, "FromAddress": rec.from_address or None,
        "SendDefinitionList": [("SendDefinitionList", {"List": ("List", {"ID": i}), "SendDefinitionListType": "SourceList"})
                               for i in rec.list_ids],
        "Email": ("Email", {"ID": rec.email_id}), "EmailSubject": rec.subject,
        "Email.ID": rec.email_id, "SendClassification.CustomerKey": rec.send_classification_key,
    }


def _import_def_values(rec: ImportDefinitionRec) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ID": rec.id, "ObjectID": rec.object_id,
        "CustomerKey": rec.customer_key, "Name": rec.name, "Description": rec.description,
        "AllowErrors": rec.allow_errors, "DestinationObject": ("List", {"ID": rec.list_id}),
        "FieldMappingType": rec.mapping_type, "FileSpec": rec.file_spec, "FileType": rec.file_type,
        "RetrieveFileTransferLocation": ("FileTransferLocation", {"CustomerKey": "ExactTarget Enhanced FTP"}),
        "SubscriberImportType": "Email", "UpdateType": rec.update_type,
    }


def _import_run_values(run: ImportRunRec) -> dict:
    return {
        "ImportDefinitionCustomerKey": run.definition_key,
        "StartDate": to_cst_text(run.start) if run.start else None,
        "EndDate": to_cst_text(run.end) if run.end else None,
        "DestinationID": str(run.list_id), "NumberSuccessful": run.ok, "NumberDuplicated": run.duplicated,
        "NumberErrors": run.errors, "TotalRows": run.total, "ImportType": "Subscriber", "ImportStatus": run.status,
        "TaskResultID": run.task_id, "ID": run.task_id,
    }
