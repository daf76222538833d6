"""The per-field decision: which side changed since the shadow, and what to do about it.

The shadow holds, per record and field, the last pair of values both sides agreed on
(the CRM's, as text, and the ESP's). A side *changed* when its value now differs from
its half of the shadow; a side not read this run (a differential run only reads what
changed) is taken as unchanged. Then:

=====================  ==========================================================
nothing changed        nothing
one side changed       carry it over, if the rule's direction allows; a change
                       against a one-way rule's direction is undone: the source
                       side's value is written back over it
both changed           equal after the transform: agree (the shadow moves, nothing
                       is written, the change log says so); otherwise a conflict, decided by the rule:
                       ``newest`` (CRM modifiedon vs the ESP's modified date, both
                       UTC; a tie goes to CRM, the system of record), ``crm``, ``esp``
no shadow yet          both values known: as "both changed", but on a both rule a
                       blank never overwrites a value (the value fills the blank);
                       one known: carry it over in the rule's direction
=====================  ==========================================================

One-way rules never conflict: the source side wins whatever the other did.
A value the target side already has is never written again (only the shadow moves):
that is what makes re-running a page after a crash a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from connector.sync.rules import ConflictRule, SyncRule
from connector.sync.transforms import TransformError

Action = Literal["none", "agree", "to_esp", "to_crm", "skip"]


@dataclass(frozen=True)
class Shadow:
    crm: str
    esp: str


@dataclass(frozen=True)
class Decision:
    """What to do with one field of one record; ``value`` is the new value on the target side."""

    action: Action
    value: str = ""
    old: str = ""  # the target side's value before
    shadow: Shadow | None = None  # the shadow after (None: unchanged)
    conflict: str = ""  # "" or how a conflict was decided, with both values
    reason: str = ""  # why a field was skipped


NOTHING = Decision("none")

ALREADY_THERE = "both sides already hold the new value (the same edit on both, or an interrupted run's write)"


def decide(rule: SyncRule, table_rule: ConflictRule, crm: str | None, esp: str | None, shadow: Shadow | None,
           crm_modified: datetime | None = None, esp_modified: datetime | None = None) -> Decision:
    """The decision for one field; ``crm``/``esp`` None = not read this run (unchanged)."""
    if shadow is not None:
        crm_now = shadow.crm if crm is None else crm
        esp_now = shadow.esp if esp is None else esp
        crm_changed, esp_changed = crm_now != shadow.crm, esp_now != shadow.esp
    elif crm is not None and esp is not None:
        if rule.direction == "both" and (crm.strip() == "") != (esp.strip() == ""):  # first contact: fill, never erase
            return _carry_to_esp(rule, crm, esp) if crm.strip() else _carry_to_crm(rule, esp, crm)
        crm_now, esp_now, crm_changed, esp_changed = crm, esp, True, True
    elif crm is not None:
        return _carry_to_esp(rule, crm, None) if rule.to_esp else NOTHING
    elif esp is not None:
        return _carry_to_crm(rule, esp, None) if rule.to_crm else NOTHING
    else:
        return NOTHING
    if not crm_changed and not esp_changed:
        return NOTHING
    if crm_changed and esp_changed:
        found = _both_changed(rule, table_rule, crm_now, esp_now, crm_modified, esp_modified)
        if found.action == "agree" and shadow is not None:  # logged: the change happened, once
            return replace(found, old=shadow.esp, reason=ALREADY_THERE)
        return found
    if crm_changed:  # on a to_crm rule the ESP's value is put back (the source side holds)
        return _carry_to_esp(rule, crm_now, esp_now) if rule.to_esp else _carry_to_crm(rule, esp_now, crm_now)
    return _carry_to_crm(rule, esp_now, crm_now) if rule.to_crm else _carry_to_esp(rule, crm_now, esp_now)


def _both_changed(rule: SyncRule, table_rule: ConflictRule, crm: str, esp: str,
                  crm_modified: datetime | None, esp_modified: datetime | None) -> Decision:
    try:
        if rule.to_esp and rule.chain.to_esp(crm) == esp:
            return Decision("agree", esp, esp, Shadow(crm, esp))
    except TransformError:
        pass  # the carry below reports it
    if rule.direction == "to_esp":
        return _carry_to_esp(rule, crm, esp)
    if rule.direction == "to_crm":
        return _carry_to_crm(rule, esp, crm)
    how = rule.conflict or table_rule
    winner = how
    if how == "newest":
        winner = "esp" if (esp_modified and crm_modified and esp_modified > crm_modified) or \
            (esp_modified and not crm_modified) else "crm"
    stamps = f"CRM modifiedon {_stamp(crm_modified)}, ESP modified {_stamp(esp_modified)}"
    note = (f"conflict: CRM {crm!r}, ESP {esp!r}; rule {how}"
            + (f" ({stamps})" if how == "newest" else "") + f" -> {winner.upper()} wins")
    carried = _carry_to_esp(rule, crm, esp) if winner == "crm" else _carry_to_crm(rule, esp, crm)
    return Decision(carried.action, carried.value, carried.old, carried.shadow, note, carried.reason)


def _carry_to_esp(rule: SyncRule, crm: str, esp_now: str | None) -> Decision:
    try:
        value = rule.chain.to_esp(crm)
    except TransformError as exc:
        return Decision("skip", reason=f"CRM value {crm!r} cannot go to the ESP: {exc}")
    if value == esp_now:
        return Decision("agree", value, value, Shadow(crm, value))
    return Decision("to_esp", value, esp_now or "", Shadow(crm, value))


def _carry_to_crm(rule: SyncRule, esp: str, crm_now: str | None) -> Decision:
    try:
        value = rule.chain.to_crm(esp)
    except TransformError as exc:
        return Decision("skip", reason=f"ESP value {esp!r} cannot go to CRM: {exc}")
    if value == crm_now:
        return Decision("agree", value, value, Shadow(value, esp))
    return Decision("to_crm", value, crm_now or "", Shadow(value, esp))


def _stamp(value: datetime | None) -> str:
    return value.isoformat() if value else "unknown"
