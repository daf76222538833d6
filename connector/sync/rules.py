"""Sync rules: one ``[sync.<table>]`` line, ``CRM column = ESP attribute | direction | transforms``.

::

    [sync.contact]
    firstname        = FirstName | both | trim
    address1_country = Country   | both | map:countries | conflict:esp
    birthdate        = Birthday  | both | date:%d.%m.%Y
    preferredcontactmethodcode = Channel | both | optionset
    cesp_score       = Score     | to_crm

``direction`` is ``to_esp`` (CRM is the source), ``to_crm`` (the ESP is) or ``both``;
the parts after it are transforms (``connector.sync.transforms``) and an optional
``conflict:newest|crm|esp`` that overrides the table's conflict rule for this field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Mapping

from connector.sync.transforms import Chain, parse_step

Direction = Literal["to_esp", "to_crm", "both"]
DIRECTIONS: tuple[Direction, ...] = ("to_esp", "to_crm", "both")
ConflictRule = Literal["newest", "crm", "esp"]
CONFLICT_RULES: tuple[ConflictRule, ...] = ("newest", "crm", "esp")

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ATTRIBUTE = re.compile(r"^[^|<>]{1,128}$")


@dataclass(frozen=True)
class SyncRule:
    """How one CRM column and one ESP attribute stay in step."""

    table: str
    crm_column: str
    esp_attribute: str
    direction: Direction
    chain: Chain = field(default_factory=Chain)
    conflict: ConflictRule | None = None  # None: the table's rule
    line: int = 0
    text: str = ""  # the line as written, for logs and the change log

    @property
    def to_esp(self) -> bool:
        return self.direction in ("to_esp", "both")

    @property
    def to_crm(self) -> bool:
        return self.direction in ("to_crm", "both")

    @property
    def label(self) -> str:
        """How the change log and the report name the rule: ``sync.contact:12``."""
        return f"sync.{self.table}:{self.line}" if self.line else f"sync.{self.table}.{self.crm_column}"


class RuleProblem(ValueError):
    """A rule line that is wrong: ``message`` and ``hint``."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def parse_rule(table: str, column: str, value: str, line: int = 0,
               tables: Mapping[str, Mapping[str, str]] | None = None) -> SyncRule:
    """The rule of one ini line; :class:`RuleProblem` (the first thing wrong) otherwise."""
    column = column.strip()
    if not _COLUMN.match(column):
        raise RuleProblem(f"{column!r} is not a CRM column name",
                          "write the column's logical name on the left, e.g. address1_country = Country | both")
    parts = [p.strip() for p in value.split("|")]
    if len(parts) < 2 or not parts[0]:
        raise RuleProblem("needs an ESP attribute and a direction",
                          "write CRM column = ESP attribute | to_esp, to_crm or both [| transforms]")
    attribute, direction, rest = parts[0], parts[1].lower(), parts[2:]
    if not _ATTRIBUTE.match(attribute):
        raise RuleProblem(f"{attribute!r} is not an ESP attribute name", "at most 128 characters, no | < >")
    if direction not in DIRECTIONS:
        raise RuleProblem(f"unknown direction {parts[1]!r}", "one of " + ", ".join(DIRECTIONS))
    steps = []
    conflict: ConflictRule | None = None
    for part in rest:
        if not part:
            continue
        kind, colon, arg = part.partition(":")
        if colon and kind.strip().lower() == "conflict":
            if arg.strip().lower() not in CONFLICT_RULES:
                raise RuleProblem(f"unknown conflict rule {arg.strip()!r}", "one of " + ", ".join(CONFLICT_RULES))
            if direction != "both":
                raise RuleProblem("a conflict rule on a one-way rule", "conflicts only happen on direction both")
            conflict = arg.strip().lower()  # type: ignore[assignment]
            continue
        try:
            steps.append(parse_step(part, tables or {}))
        except ValueError as exc:
            message, _, hint = str(exc).partition("|")
            raise RuleProblem(message, hint) from exc
    chain = Chain(tuple(steps))
    if direction == "both" and chain.lossy:
        raise RuleProblem(f"direction both, but a transform has no way back ({chain.lossy})",
                          "make the rule one-way (to_esp), or use transforms that can be read backwards")
    return SyncRule(table, column, attribute, direction, chain, conflict, line, f"{column} = {value.strip()}")


def check_unique(rules: list[SyncRule]) -> list[tuple[SyncRule, str, str]]:
    """Two rules of one table writing the same ESP attribute: (second rule, message, hint)."""
    seen: dict[str, SyncRule] = {}
    problems = []
    for rule in rules:
        key = rule.esp_attribute.casefold()
        first = seen.get(key)
        if first is not None:
            problems.append((rule, f"ESP attribute {rule.esp_attribute!r} is already synced with "
                                   f"{first.crm_column} (line {first.line})",
                             "sync each ESP attribute with one CRM column"))
        else:
            seen[key] = rule
    return problems
