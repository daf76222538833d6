"""The Marketing Cloud sandbox's data: subscribers, lists, emails, sends, imports, events.

Thread-safe (one lock). The SOAP app calls ``create`` / ``update`` / ``delete`` /
``perform`` with parsed objects and gets back per-object results in the shape of the
real ``CreateResult`` etc.; ``rows(object_type)`` yields Retrieve rows. Tests and
benchmarks inspect the same store directly (``subscriber``, ``list_by_key``,
``sends``, ``import_runs``, ``event_count``) and produce tracking data with
``generate_events``.

Sends live in ``sends.SendOps`` and imports in ``imports.ImportOps`` (mixins of
``EspStore``); the property values of records are built in ``values``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from connector.sandbox.marketing_cloud import events as ev
from connector.sandbox.marketing_cloud.dataext import DataExtensionOps, DataExtensionRec, de_field_values, de_values
from connector.sandbox.marketing_cloud.imports import ImportOps
from connector.sandbox.marketing_cloud.latency import Latency
from connector.sandbox.marketing_cloud.records import (
    EMAIL_FOLDERS,
    EMAIL_ROOT_FOLDER,
    DEFAULT_ATTRIBUTES,
    AttributeRec,
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
from connector.sandbox.marketing_cloud.sends import ALL_SUBSCRIBERS_ID, SendOps
from connector.sandbox.marketing_cloud.soap import Obj
from connector.sandbox.marketing_cloud.values import (
    Result,
    as_int,
    email_values,
    error,
    esd_values,
    import_def_values,
    import_run_values,
    list_subscriber_values,
    list_values,
    nested,
    ok,
    send_class_values,
    subscriber_values,
    valid_email,
)

SUBSCRIBER_STATUSES = ("Active", "Bounced", "Held", "Unsubscribed", "Deleted")
HELD_AFTER_BOUNCES = 3
HELD_SPAN = timedelta(days=14)
LIST_ACTIONS = ("create", "update", "delete", "upsert")
"""``SubscriberList.Action`` values (Salesforce, "Manage Subscribers On Lists"; SSJS ``Upsert``)."""

__all__ = ["ALL_SUBSCRIBERS_ID", "EspStore", "Result", "error", "ok", "valid_email"]


class EspStore(SendOps, ImportOps, DataExtensionOps):
    """All objects of one sandbox Marketing Cloud account (business unit)."""

    def __init__(self, *, import_root: Path, clock: SimClock, rates: ev.EventRates | None = None, seed: int = 1,
                 account_id: int = 7281698, import_delay: float = 0.2,
                 attributes: Iterable[AttributeRec | str] | None = None, latency: Latency | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.rates = rates or ev.EventRates()
        self.latency = latency or Latency()
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
        self.data_extensions: dict[str, DataExtensionRec] = {}
        self.blocks: list[ev.EventBlock] = []
        self._pending_status: list[tuple[int, str, str]] = []
        self._threads: list[threading.Thread] = []
        self.attributes: dict[str, AttributeRec] = {}
        for attr in DEFAULT_ATTRIBUTES if attributes is None else attributes:
            self.add_attribute(attr)
        self._seed_objects()

    # ------------------------------------------------------------ seeding / helpers

    def _seed_objects(self) -> None:
        now = self.clock.now()
        self.lists[ALL_SUBSCRIBERS_ID] = ListRec(
            ALL_SUBSCRIBERS_ID, f"All Subscribers - {ALL_SUBSCRIBERS_ID}", "All Subscribers", str(uuid.uuid4()),
            type="Private", created=now, modified=now, all_subscribers=True,
        )
        for key, name, subject, folder in (
            ("cesp-demo-email", "Connector demo email", "News from the connector demo", 5001),
            ("welcome", "Welcome", "Welcome aboard", EMAIL_ROOT_FOLDER),
        ):
            rec = EmailRec(next(self._ids), key, name, subject, str(uuid.uuid4()), now, folder)
            self.emails[rec.id] = rec
        for key, kind in (("Default Commercial", "Marketing"), ("Default Transactional", "Operational")):
            self.send_classifications[key] = SendClassificationRec(next(self._ids), key, key, str(uuid.uuid4()), kind)

    def now(self) -> datetime:
        return self.clock.now()

    def apply_due_changes(self) -> None:
        """Subscriber status changes (bounces, unsubscribes) whose events are now visible.

        A bounce makes the subscriber Bounced; the third bounce, more than 14 days after
        the first, makes it Held (no more sends), as Marketing Cloud does.
        """
        now_ts = self.clock.now_ts()
        with self.lock:
            while self._pending_status and self._pending_status[0][0] <= now_ts:
                ts, key, status = heapq.heappop(self._pending_status)
                sub = self.subscribers.get(key)
                if sub is None or sub.status in ("Unsubscribed", "Held", "Deleted"):
                    continue
                when = utc(ts)
                if status == "Bounced":
                    sub.bounce_count += 1
                    sub.first_bounce = sub.first_bounce or when
                    if sub.bounce_count >= HELD_AFTER_BOUNCES and when - sub.first_bounce > HELD_SPAN:
                        status = "Held"
                sub.status, sub.modified = status, when
                if status == "Unsubscribed":
                    sub.unsubscribed = when

    def add_status_change(self, when: datetime, key: str, status: str) -> None:
        """Schedule a status change for when the clock passes ``when`` (tests, seeding)."""
        with self.lock:
            heapq.heappush(self._pending_status, (int(when.timestamp()), key, status))

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

    # ------------------------------------------------------------ profile attributes

    def add_attribute(self, attr: AttributeRec | str) -> AttributeRec:
        """Add a profile attribute to the account's catalogue (as Configure PropertyDefinition does)."""
        rec = AttributeRec(attr) if isinstance(attr, str) else attr
        with self.lock:
            self.attributes[rec.name.casefold()] = rec
        return rec

    def attribute(self, name: str) -> AttributeRec | None:
        """The catalogue's attribute of that name; names compare without case, as the service does."""
        with self.lock:
            return self.attributes.get(name.strip().casefold())

    def unknown_attributes(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.attribute(n) is None]

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

    def edit_subscriber(self, key: str, *, attributes: dict[str, str] | None = None, email: str | None = None,
                        status: str | None = None, when: datetime | None = None) -> SubscriberRec:
        """Change a subscriber as a marketer at the ESP would (the UI, a journey, a profile centre),
        while the connector runs: the modified date moves to ``when`` (default: now), so the next
        Retrieve of subscribers changed since a date finds it. Raises KeyError for an unknown
        subscriber or attribute, ValueError for a status the service does not have."""
        with self.lock:
            rec = self.subscribers[key]
            unknown = self.unknown_attributes(attributes or {})
            if unknown:
                raise KeyError(f"attribute(s) {unknown} do not exist in this account")
            if status is not None and status not in SUBSCRIBER_STATUSES:
                raise ValueError(f"{status!r} is not a SubscriberStatus")
            moment = when or self.clock.now()
            for name, value in (attributes or {}).items():
                rec.attributes[self.attribute(name).name] = value  # type: ignore[union-attr]
            if email is not None:
                rec.email = email
            if status is not None:
                rec.status = status
                rec.unsubscribed = moment if status == "Unsubscribed" else rec.unsubscribed
            rec.modified = moment
            return rec

    def upsert_subscriber(self, obj: Obj, *, add: bool, update: bool, list_conflict_ok: bool) -> Result:
        """Create and/or update one subscriber and its list memberships, as Create/Update do."""
        key = obj.text("SubscriberKey") or obj.text("EmailAddress")
        email = obj.text("EmailAddress")
        echo = ("Subscriber", {"SubscriberKey": key, "EmailAddress": email} if email else {"SubscriberKey": key})
        with self.lock:
            rec = self.subscribers.get(key)
            problem = self._subscriber_problem(obj, key, rec, add=add, update=update) or self._attribute_problem(obj)
            memberships = self._memberships(obj) if not problem else []
            if isinstance(memberships, str):
                problem = (memberships, 12009)
            elif not list_conflict_ok and rec is not None and any(
                    action == "create" and key in self.lists[list_id].members for list_id, action, _ in memberships):
                problem = ("The subscriber is already on the list", 12014)
            if problem:
                return error(problem[0], problem[1], echo)
            created = rec is None
            rec = self._write_subscriber(obj, key, rec)
            for list_id, action, member_status in memberships:
                members = self.lists[list_id].members
                if action == "delete":
                    members.pop(key, None)
                else:
                    members[key] = member_status
                    self.lists[list_id].member_modified[key] = rec.modified or self.clock.now()
            message = "Created Subscriber." if created else "Updated Subscriber."
            return ok(message, ("Subscriber", subscriber_values(rec)), rec.id)

    @staticmethod
    def _subscriber_problem(obj: Obj, key: str, rec: SubscriberRec | None, *, add: bool,
                            update: bool) -> tuple[str, int] | None:
        email, status = obj.text("EmailAddress"), obj.text("Status")
        if not key:
            return "SubscriberKey or EmailAddress is required.", 12000
        if rec is None and not add:
            return f"Subscriber with SubscriberKey '{key}' was not found.", 12001
        if rec is not None and not update:
            return "The subscriber is already on the list", 12014
        if email and not valid_email(email):
            return f"Invalid email address: '{email}'.", 12000
        if rec is None and not email:
            return "EmailAddress is required to create a subscriber.", 12000
        if status and status not in SUBSCRIBER_STATUSES:
            return f"Status '{status}' is not a valid SubscriberStatus.", 12000
        return None

    def _attribute_problem(self, obj: Obj) -> tuple[str, int] | None:
        """An attribute the account does not have, or a value its type refuses, fails the whole object (12004)."""
        pairs = [(a.text("Name"), a.text("Value")) for a in obj.all("Attributes") if isinstance(a, Obj) and a.text("Name")]
        unknown = self.unknown_attributes(name for name, _ in pairs)
        if unknown:
            listed = ", ".join(f"'{n}'" for n in unknown)
            return f"Error: Subscriber attribute(s) {listed} do not exist in this account.", 12004
        for name, value in pairs:
            attr = self.attribute(name)
            if attr is not None and not attr.accepts(value):
                return f"InvalidDPV: '{value}' is not a valid {attr.type} value for attribute '{attr.name}'.", 12004
        return None

    def _memberships(self, obj: Obj) -> list[tuple[int, str, str]] | str:
        """(list id, action, status) per SubscriberList, or the error text for an unknown list."""
        out = []
        for item in obj.all("Lists"):
            if not isinstance(item, Obj):
                continue
            list_id = as_int(item.get("ID")) or as_int(nested(item, "List", "ID"))
            if list_id not in self.lists:
                return f"List with ID '{item.get('ID')}' does not exist."
            action = (item.text("Action") or "create").lower()
            if action not in LIST_ACTIONS:
                return f"Action '{item.text('Action')}' is not a valid SubscriberList action (create, update, delete, upsert)."
            if action == "delete" and self.lists[list_id].all_subscribers:
                return "A subscriber cannot be removed from All Subscribers; delete the subscriber instead."
            out.append((list_id, action, item.text("Status") or "Active"))
        return out

    def _write_subscriber(self, obj: Obj, key: str, rec: SubscriberRec | None) -> SubscriberRec:
        now, email, status = self.clock.now(), obj.text("EmailAddress"), obj.text("Status")
        if rec is None:
            rec = self.subscribers[key] = SubscriberRec(next(self._ids), key, email, status or "Active", {}, now, now)
        else:
            rec.email = email or rec.email
            if status:
                rec.status = status
                rec.unsubscribed = now if status == "Unsubscribed" else None
            rec.modified = now
        for attr in obj.all("Attributes"):
            if isinstance(attr, Obj) and attr.text("Name"):
                known = self.attribute(attr.text("Name"))
                rec.attributes[known.name if known else attr.text("Name")] = attr.text("Value")
        if obj.text("EmailTypePreference") in ("HTML", "Text"):
            rec.email_type = obj.text("EmailTypePreference")
        return rec

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
                          as_int(obj.get("Category")) or 0, now, now)
            self.lists[rec.id] = rec
            return ok("Created List.", ("List", list_values(rec)), rec.id, NewObjectID=rec.object_id)

    def find_list(self, obj: Obj) -> ListRec | None:
        list_id = as_int(obj.get("ID"))
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
            return ok("Updated List.", ("List", list_values(rec)), rec.id)

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
            folder = as_int(obj.get("CategoryID")) or EMAIL_ROOT_FOLDER
            if folder not in EMAIL_FOLDERS:
                return error(f"CategoryID {folder} is not an e-mail folder of this account.", 2,
                             ("Email", {"CustomerKey": key}))
            rec = EmailRec(next(self._ids), key, obj.text("Name") or key, obj.text("Subject"), str(uuid.uuid4()),
                           self.clock.now(), folder)
            self.emails[rec.id] = rec
            return ok("Created Email.", ("Email", email_values(rec)), rec.id)

    def find_email(self, obj: Any) -> EmailRec | None:
        if not isinstance(obj, Obj):
            return None
        email_id = as_int(obj.get("ID"))
        if email_id:
            return self.emails.get(email_id)
        return self.email_by_key(obj.text("CustomerKey")) if obj.text("CustomerKey") else None

    # ------------------------------------------------------------ retrieve rows

    def rows(self, obj_type: str, keys: list[str] | None = None, list_ids: list[int] | None = None) -> Iterator[dict]:
        """Every object of ``obj_type`` as a dict of property values (rendering + filtering).

        ``keys``: the only SubscriberKeys that can match (an index lookup for Subscriber
        and ListSubscriber), ``list_ids`` the only lists (ListSubscriber); the caller still
        applies the full filter.
        """
        self.apply_due_changes()
        with self.lock:
            if obj_type == "Subscriber" and keys is not None:
                records: list = [self.subscribers[k] for k in dict.fromkeys(keys) if k in self.subscribers]
                make: Callable[[Any], dict] = subscriber_values
            elif obj_type == "ListSubscriber":
                records, make = self._list_subscriber_pairs(keys, list_ids), list_subscriber_values
            elif obj_type == "Subscriber":
                records, make = list(self.subscribers.values()), subscriber_values
            elif obj_type == "List":
                records, make = list(self.lists.values()), list_values
            elif obj_type == "Email":
                records, make = list(self.emails.values()), email_values
            elif obj_type == "SendClassification":
                records, make = list(self.send_classifications.values()), send_class_values
            elif obj_type == "EmailSendDefinition":
                records, make = list(self.send_definitions.values()), esd_values
            elif obj_type == "Send":
                records, make = self.visible_sends(), self.send_values
            elif obj_type == "ImportDefinition":
                records, make = list(self.import_definitions.values()), import_def_values
            elif obj_type == "ImportResultsSummary":
                records, make = self.visible_import_runs(), import_run_values
            elif obj_type == "DataExtension":
                records, make = list(self.data_extensions.values()), de_values
            elif obj_type == "DataExtensionField":
                records = [(d, f) for d in self.data_extensions.values() for f in d.fields]
                make = de_field_values
            else:
                raise KeyError(obj_type)
        for record in records:
            yield make(record)

    def _list_subscriber_pairs(self, keys: list[str] | None = None,
                               list_ids: list[int] | None = None) -> Iterator[tuple]:
        """(list id, key, status, created, modified) per membership, made lazily from a snapshot of
        references taken under the lock (a million subscribers cost a list of pointers, not rows).

        On "All Subscribers" the row is the subscriber's own: its status and modified date, which
        every write to the subscriber moves (so ``ListSubscriber.ModifiedDate`` on that list is
        how a client finds subscribers changed since a date); on other lists the membership's.
        ``list_ids``: the only lists that can match (a filter's ``ListID equals/IN``).
        """
        subs = self.subscribers
        lists = [lst for lst in self.lists.values() if list_ids is None or lst.id in list_ids]
        wanted = [subs[k] for k in dict.fromkeys(keys) if k in subs] if keys is not None else None
        plan = []
        for lst in lists:
            if lst.all_subscribers:
                plan.append((lst, wanted if wanted is not None else list(subs.values())))
            else:
                members = [subs[k] for k in (lst.members if wanted is None else [w.key for w in wanted])
                           if k in lst.members and k in subs]
                plan.append((lst, members))

        def pairs() -> Iterator[tuple]:
            for lst, members in plan:
                for sub in members:
                    if lst.all_subscribers:
                        yield lst.id, sub.key, sub.status, sub.created, sub.modified
                    else:
                        yield (lst.id, sub.key, lst.members.get(sub.key, "Active"), sub.created,
                               lst.member_modified.get(sub.key, sub.created))

        return pairs()

