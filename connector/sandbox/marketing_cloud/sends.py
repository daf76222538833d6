"""Send definitions and sends of the Marketing Cloud sandbox (a mixin of ``EspStore``).

``Perform start`` on an EmailSendDefinition makes a new send job every time, as the
real service does; the simulation of its events runs in a background thread.
"""

from __future__ import annotations

import heapq
import uuid
from datetime import datetime

from connector.sandbox.marketing_cloud import events as ev
from connector.sandbox.marketing_cloud.records import SendDefinitionRec, SendRec, utc
from connector.sandbox.marketing_cloud.soap import Obj
from connector.sandbox.marketing_cloud.values import Result, error, esd_values, find_definition, ok

ALL_SUBSCRIBERS_ID = 1000


class SendOps:
    """EmailSendDefinition CRUD, Perform start, generated events and send counts."""

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
            return ok("Created EmailSendDefinition.", ("EmailSendDefinition", esd_values(rec)), rec.id,
                      NewObjectID=rec.object_id)

    def find_send_definition(self, obj: Obj) -> SendDefinitionRec | None:
        return find_definition(self.send_definitions, obj)

    def update_send_definition(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_send_definition(obj)
            if rec is None:
                return error("EmailSendDefinition not found.", 2, ("EmailSendDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            for attr, name in (("name", "Name"), ("description", "Description"), ("subject", "EmailSubject")):
                if obj.text(name):
                    setattr(rec, attr, obj.text(name))
            rec.modified = self.clock.now()
            return ok("Updated EmailSendDefinition.", ("EmailSendDefinition", esd_values(rec)), rec.id)

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
            recipients, excluded = self._audience(definition, send)
            send.targeted, send.excluded = len(recipients) + len(excluded), len(excluded)
            self.sends[send.id] = send
        self.spawn(lambda: self._simulate(send, recipients, excluded, start_ts), f"esp-send-{send.id}")
        task = {"StatusCode": "OK", "StatusMessage": "OK", "ID": str(send.id)}
        return ok("Email Send Definition started", ("EmailSendDefinition", {"CustomerKey": definition.customer_key}),
                  Task=("TaskResult", task))

    def visible_sends(self) -> list[SendRec]:
        """The sends Retrieve can see: ``latency.send_delay`` after their start (real sends are
        not retrievable the moment Perform start answers). Call with the lock held."""
        horizon = self.clock.now_ts() - self.latency.send_delay
        return [s for s in self.sends.values() if s.send_date.timestamp() <= horizon]

    def _audience(self, definition: SendDefinitionRec, send: SendRec) -> tuple[list[str], list[str]]:
        """(recipients, excluded) of a send: each subscriber once; unsubscribed/held ones excluded."""
        recipients: list[str] = []
        excluded: list[str] = []
        seen: set[str] = set()
        for list_id in definition.list_ids:
            lst = self.lists.get(list_id)
            if lst is None:  # deleted since the definition was made
                continue
            members = {k: "Active" for k in self.subscribers} if lst.all_subscribers else lst.members
            for key, member_status in list(members.items()):
                sub = self.subscribers.get(key)
                if key in seen or sub is None:
                    continue
                seen.add(key)
                if sub.status in ("Unsubscribed", "Held", "Deleted") or member_status != "Active":
                    excluded.append(key)
                    if sub.status == "Held":
                        send.existing_undeliverables += 1
                    else:
                        send.existing_unsubscribes += 1
                else:
                    recipients.append(key)
        return recipients, excluded

    def _simulate(self, send: SendRec, recipients: list[str], excluded: list[str], start_ts: int) -> None:
        list_id = send.list_ids[0] if send.list_ids else 0
        result = ev.simulate_send(send.id, list_id, recipients, excluded, start_ts, self.rates, self.seed,
                                  self.latency)
        with self.lock:
            send.blocks = result.blocks
            self.blocks.extend(result.blocks)
            for change in result.status_changes:
                heapq.heappush(self._pending_status, change)
            send.status = "Complete"
            send.sent_date = send.send_date

    def generate_events(self, n: int, *, event_types: tuple[str, ...] = ev.EVENT_OBJECTS, hours: float = 24.0,
                        start: datetime | None = None, seed: int | None = None, list_id: int = ALL_SUBSCRIBERS_ID,
                        arrival_lag_minutes: float | None = None, published_arrival: bool = False) -> int:
        """Add a finished send with ``n`` events of each given type, spread over ``hours``.

        By default the events end now, so all are visible at once (unless an arrival lag,
        by default ``rates.arrival_lag_minutes``, holds the latest back: synthetic benchmark
        data has no lag unless asked for one; ``published_arrival`` draws it from
        ``latency.event_arrival`` like a real send's). Returns the send (job) id.
        """
        lag = self.rates.arrival_lag_minutes if arrival_lag_minutes is None else arrival_lag_minutes
        lag = lag or 0.0
        seconds = int(hours * 3600)
        start_ts = int(start.timestamp()) if start is not None else int(self.clock.now_ts()) - seconds
        with self.lock:
            send_id = next(self._send_ids)
        blocks = ev.synthetic_blocks(send_id, list_id, n, event_types, start_ts, seconds,
                                     self.seed if seed is None else seed, int(lag * 60),
                                     self.latency if published_arrival else None)
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


    def send_values(self, send: SendRec) -> dict:
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


