"""What one page of records asks of the peers and of the state: the sync's unit of work.

``Planner.record()`` runs the rules of one table over one record (its CRM row when read
this run, its ESP subscriber when the ESP changed it, its shadow) and adds to a
:class:`Plan`: the ESP and CRM writes, and for each of them the shadow rows and change-log
rows that become true only once that write succeeded (``pending``). Skips and agreements
need no write. ``connector.sync.apply`` then carries a plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from connector.crm.records import parse_datetime
from connector.models import ColumnInfo, EspSubscriberState, SubscriberStatus
from connector.sync.decide import Decision, Shadow, decide
from connector.sync.rules import SyncRule
from connector.sync.values import EMAIL_ATTRIBUTES, crm_text, is_email_rule, typed_for_crm

STATUS_FIELD = "@status"
"""Shadow field holding the ESP status last reflected on the CRM record."""
RECORD_FIELD = "@record"
"""Change-log field of what happened to a whole record (deleted, deactivated)."""
GONE = {SubscriberStatus.HELD, SubscriberStatus.DELETED}
SKIP_MARK = "!"
"""Shadow field ``!<column>`` holds the reason the field was last skipped for, so the same bad
value is logged and quarantined once, not on every run until someone fixes it."""
MARK_LENGTH = 2000


@dataclass(frozen=True)
class Change:
    """One line of the change log (and of the test-mode report)."""

    table: str
    record_id: str
    field: str
    old: str
    new: str
    direction: str  # to_esp, to_crm, skipped, failed, left, agreed
    rule: str
    note: str = ""


@dataclass
class Pending:
    shadows: list[tuple[str, str, str]] = field(default_factory=list)  # (field, crm, esp)
    changes: list[Change] = field(default_factory=list)
    drop: bool = False  # the record leaves the shadow once the write is done


@dataclass
class Plan:
    table: str
    esp: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> attributes / email / status
    crm: dict[str, dict[str, object]] = field(default_factory=dict)  # id -> column -> typed value
    esp_pending: dict[str, Pending] = field(default_factory=dict)
    crm_pending: dict[str, Pending] = field(default_factory=dict)
    shadows: list[tuple[str, str, str, str]] = field(default_factory=list)  # no write needed
    drops: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)  # no write needed (skips, left, conflicts agreed)
    emails: dict[str, str] = field(default_factory=dict)  # record id -> e-mail, for the quarantine
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def to_esp(self, key: str, what: str, value: Any) -> Pending:
        """``what`` is ``email``, ``status`` or ``leave_lists`` (True: off ``[sync] synced_lists``);
        attributes go by ``esp_attribute``."""
        self.esp.setdefault(key, _esp_entry())[what] = value
        return self.esp_pending.setdefault(key, Pending())

    def esp_attribute(self, key: str, name: str, value: str) -> Pending:
        self.esp.setdefault(key, _esp_entry())["attributes"][name] = value
        return self.esp_pending.setdefault(key, Pending())

    def to_crm(self, record_id: str, column: str, value: object) -> Pending:
        self.crm.setdefault(record_id, {})[column] = value
        return self.crm_pending.setdefault(record_id, Pending())


class Planner:
    """The rules of one table, bound to the CRM's column metadata."""

    def __init__(self, table: str, rules: tuple[SyncRule, ...], conflict: str, columns: Mapping[str, ColumnInfo],
                 crm_deleted: str, held_column: str, synced_lists: tuple[str, ...] = ()) -> None:
        self.table = table
        self.rules = tuple(_bound(rule, columns) for rule in rules)
        self.conflict = conflict
        self.columns = columns
        self.crm_deleted = crm_deleted
        self.held_column = held_column
        self.synced_lists = synced_lists

    @property
    def crm_columns(self) -> list[str]:
        wanted = [r.crm_column for r in self.rules] + ["modifiedon", "statecode"]
        return list(dict.fromkeys(wanted))

    @property
    def esp_attributes(self) -> list[str]:
        return [r.esp_attribute for r in self.rules if not _is_email_attribute(r)]

    def record(self, plan: Plan, record_id: str, row: Mapping[str, object] | None, esp: EspSubscriberState | None,
               shadow: Mapping[str, tuple[str, str]], *, esp_complete: bool) -> None:
        """Plan one record. ``row`` None: CRM did not change it; ``esp`` None: the ESP did not
        (``esp_complete``: the ESP side was read whole, so no ``esp`` means no subscriber)."""
        if esp is not None and esp.email:
            plan.emails[record_id] = esp.email
        if row is not None and row.get("statecode") not in (None, 0, "0"):
            self.deleted(plan, record_id, shadow, "deactivated in CRM")
            return
        if esp is None and not shadow:
            plan.count("no_subscriber")  # never agreed on, and the ESP shows no subscriber for it
            return
        gone_at_esp = esp_complete and esp is None and bool(shadow)
        status = SubscriberStatus.DELETED if gone_at_esp else (esp.status if esp is not None else None)
        self._status(plan, record_id, status, shadow)
        if gone_at_esp:
            return
        crm_modified = parse_datetime(row.get("modifiedon")) if row is not None else None
        for rule in self.rules:
            crm = crm_text(row.get(rule.crm_column)) if row is not None else None
            value = None if esp is None else (esp.email if _is_email_attribute(rule)
                                              else _attribute(esp.attributes, rule.esp_attribute))
            pair = shadow.get(rule.crm_column)
            decision = decide(rule, self.conflict, crm, value, Shadow(*pair) if pair else None,  # type: ignore[arg-type]
                              crm_modified, esp.modified if esp is not None else None)
            self._apply(plan, record_id, rule, decision, shadow)

    def _apply(self, plan: Plan, record_id: str, rule: SyncRule, d: Decision,
               shadow: Mapping[str, tuple[str, str]]) -> None:
        if d.conflict:
            plan.count("conflicts")
        if d.action == "none":
            return
        label = rule.label + (f" ({d.conflict})" if d.conflict else "")
        marker = SKIP_MARK + rule.crm_column
        if d.action == "skip":
            self._skip(plan, record_id, rule, Change(self.table, record_id, rule.crm_column, "", "", "skipped", label,
                                                     d.reason), shadow)
            return
        if shadow.get(marker, ("", ""))[0]:  # the field goes again: a later bad value is news again
            plan.shadows.append((record_id, marker, "", ""))
        assert d.shadow is not None
        shadow_row = (rule.crm_column, d.shadow.crm, d.shadow.esp)
        if d.action == "agree":
            plan.count("agreed")
            plan.shadows.append((record_id, *shadow_row))
            if d.conflict or d.reason:
                plan.changes.append(Change(self.table, record_id, rule.esp_attribute, d.old, d.value, "agreed", label,
                                           d.reason))
            return
        if d.action == "to_esp":
            pending = (plan.to_esp(record_id, "email", d.value) if _is_email_attribute(rule)
                       else plan.esp_attribute(record_id, rule.esp_attribute, d.value))
            plan.count("to_esp")
            pending.shadows.append(shadow_row)
            pending.changes.append(Change(self.table, record_id, rule.esp_attribute, d.old, d.value, "to_esp", label))
            return
        try:
            typed = typed_for_crm(d.value, self.columns.get(rule.crm_column),
                                  email=is_email_rule(rule.crm_column, rule.esp_attribute))
        except ValueError as exc:
            self._skip(plan, record_id, rule, Change(self.table, record_id, rule.crm_column, d.old, d.value, "skipped",
                                                     label, f"ESP value cannot go to CRM: {exc}"), shadow)
            return
        plan.count("to_crm")
        pending = plan.to_crm(record_id, rule.crm_column, typed)
        pending.shadows.append(shadow_row)
        pending.changes.append(Change(self.table, record_id, rule.crm_column, d.old, d.value, "to_crm", label))

    def _skip(self, plan: Plan, record_id: str, rule: SyncRule, change: Change,
              shadow: Mapping[str, tuple[str, str]]) -> None:
        """A field skipped for bad input: logged and quarantined once per reason, not every run."""
        plan.count("skipped")
        marker = SKIP_MARK + rule.crm_column
        if shadow.get(marker, ("", ""))[0] == change.note[:MARK_LENGTH]:
            plan.count("skipped_before")
            return
        plan.shadows.append((record_id, marker, change.note[:MARK_LENGTH], ""))
        plan.changes.append(change)

    def _status(self, plan: Plan, record_id: str, status: SubscriberStatus | None,
                shadow: Mapping[str, tuple[str, str]]) -> None:
        """An ESP subscriber held or deleted is reflected on the CRM record, once."""
        if status is None:
            return
        before = shadow.get(STATUS_FIELD, ("", ""))[1]
        if status.value == before:
            return
        row = (STATUS_FIELD, "", status.value)
        if status not in GONE or not self.held_column:
            if status in GONE:
                plan.changes.append(Change(self.table, record_id, STATUS_FIELD, before, status.value, "left",
                                           "[sync] esp_held_column", "the ESP holds or deleted the subscriber; "
                                           "no CRM column is set (esp_held_column is blank)"))
            plan.shadows.append((record_id, *row))
            return
        plan.count("held")
        pending = plan.to_crm(record_id, self.held_column, True)
        pending.shadows.append(row)
        pending.changes.append(Change(self.table, record_id, self.held_column, "", "true", "to_crm",
                                      "[sync] esp_held_column", f"the ESP shows the subscriber {status.value}"))

    def deleted(self, plan: Plan, record_id: str, shadow: Mapping[str, tuple[str, str]], what: str) -> None:
        """A CRM record deleted or deactivated: the configured policy at the ESP; it leaves the shadow."""
        if not shadow:
            return  # never synced: nothing at the ESP to tell
        plan.count("deleted")
        if self.crm_deleted == "unsubscribe":
            pending = plan.to_esp(record_id, "status", SubscriberStatus.UNSUBSCRIBED)
            pending.drop = True
            pending.changes.append(Change(self.table, record_id, RECORD_FIELD, "", what, "to_esp",
                                          "[sync] crm_deleted = unsubscribe", "subscriber set Unsubscribed"))
            return
        if self.crm_deleted == "remove_from_lists":
            pending = plan.to_esp(record_id, "leave_lists", True)
            pending.drop = True
            pending.changes.append(Change(self.table, record_id, RECORD_FIELD, "", what, "to_esp",
                                          "[sync] crm_deleted = remove_from_lists",
                                          "subscriber taken off the synced lists " + ", ".join(self.synced_lists)))
            return
        plan.drops.append(record_id)
        plan.changes.append(Change(self.table, record_id, RECORD_FIELD, "", what, "left", "[sync] crm_deleted = leave",
                                   "the subscriber is left as it is at the ESP"))


def _esp_entry() -> dict[str, Any]:
    return {"attributes": {}, "email": None, "status": None, "leave_lists": False}


def _bound(rule: SyncRule, columns: Mapping[str, ColumnInfo]) -> SyncRule:
    info = columns.get(rule.crm_column)
    if not rule.chain.needs_options or info is None or not info.options:
        return rule
    return replace(rule, chain=rule.chain.with_options(info.options))


def _is_email_attribute(rule: SyncRule) -> bool:
    return rule.esp_attribute.strip().casefold() in EMAIL_ATTRIBUTES


def _attribute(attributes: Mapping[str, str], name: str) -> str:
    if name in attributes:
        return attributes[name] or ""
    folded = name.casefold()
    return next((v or "" for k, v in attributes.items() if k.casefold() == folded), "")

