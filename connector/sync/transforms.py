"""Value transforms of a sync rule, each with its way back.

A rule's transforms turn the CRM value into the ESP value (``to_esp``, in the order
written) and the ESP value back into the CRM value (``to_crm``, the inverses in the
reverse order). Values travel as text; the CRM's typed value is made text first
(``connector.mapping.to_text``) and typed again when it is written (``connector.sync.values``).

=================  ==============================  ==============================  ==========
step               to the ESP                      back to CRM                     both ways
=================  ==============================  ==============================  ==========
``trim``           strip blanks                    strip blanks                    yes
``lower`` ...      lower / upper / title /         as it comes (the CRM keeps      yes
                   capitalize the text             what the ESP user typed)
``map:NAME``       ``[transform.NAME]`` lines      the same lines read right to    if no two
                   ``CRM value = ESP value``       left                            share a value
``map(A<->B;..)``  the pairs written inline        read right to left              same
``date:FORMAT``    ISO date -> ``FORMAT``          ``FORMAT`` -> ISO date          if FORMAT has
                   (strftime, e.g. ``%d.%m.%Y``)                                   year, month, day
``optionset``      option code -> its label        label -> code                   if the labels
                   (the CRM's own metadata)                                        are unique
``default:TEXT``   blank -> TEXT                   --                              no
``truncate:N``     the first N characters          --                              no
=================  ==============================  ==============================  ==========

A value a step cannot map (no line for it, an unknown option label, a date that does
not parse) raises :class:`TransformError`; the engine skips that field of that record
with the reason and goes on. Blank values pass every step but ``default`` unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Mapping, Sequence


class TransformError(ValueError):
    """A value this step cannot map; the message says which and why."""


CASE_STEPS = {"lower": str.lower, "upper": str.upper, "title": str.title, "capitalize": str.capitalize}
STEP_NAMES = ("trim", *CASE_STEPS, "map:NAME", "map(A<->B; C<->D)", "date:FORMAT", "optionset",
              "default:TEXT", "truncate:N")
"""What a rule's transforms may be, for error hints."""

_DATE_PARTS = (("%Y", "%y"), ("%m", "%b", "%B"), ("%d",))
_TIME_CODES = ("%H", "%I", "%M", "%S")


@dataclass(frozen=True)
class Step:
    """One transform; ``lossy`` is why it has no way back ("" = it has one)."""

    name: str
    lossy: str = ""

    def to_esp(self, value: str) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_crm(self, value: str) -> str:
        if self.lossy:
            raise TransformError(f"{self.name} has no way back: {self.lossy}")
        return value


@dataclass(frozen=True)
class Trim(Step):
    def to_esp(self, value: str) -> str:
        return value.strip()

    def to_crm(self, value: str) -> str:
        return value.strip()


@dataclass(frozen=True)
class Case(Step):
    def to_esp(self, value: str) -> str:
        return CASE_STEPS[self.name](value)


@dataclass(frozen=True)
class ValueMap(Step):
    """CRM value <-> ESP value; looked up exactly, then ignoring case."""

    pairs: tuple[tuple[str, str], ...] = ()
    forward: Mapping[str, str] = field(default_factory=dict, compare=False)
    backward: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, name: str, pairs: Sequence[tuple[str, str]]) -> "ValueMap":
        forward = _folded(pairs)
        backward = _folded([(esp, crm) for crm, esp in pairs])
        shared = sorted({esp for _, esp in pairs if sum(1 for _, e in pairs if e.casefold() == esp.casefold()) > 1})
        lossy = f"several CRM values map to {shared[0]!r}" if shared else ""
        return cls(name, lossy, tuple(pairs), forward, backward)

    def to_esp(self, value: str) -> str:
        return _look_up(self.forward, value, self.name, "CRM")

    def to_crm(self, value: str) -> str:
        if self.lossy:
            return super().to_crm(value)
        return _look_up(self.backward, value, self.name, "ESP")


@dataclass(frozen=True)
class DateFormat(Step):
    """ISO date (or date-time, UTC) in CRM <-> ``fmt`` text at the ESP."""

    fmt: str = "%Y-%m-%d"

    @classmethod
    def of(cls, fmt: str) -> "DateFormat":
        missing = [codes[0] for codes in _DATE_PARTS if not any(c in fmt for c in codes)]
        lossy = f"the format {fmt!r} has no {', '.join(missing)}" if missing else ""
        return cls(f"date:{fmt}", lossy, fmt)

    @property
    def with_time(self) -> bool:
        return any(code in self.fmt for code in _TIME_CODES)

    def to_esp(self, value: str) -> str:
        if not value.strip():
            return value
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise TransformError(f"{value!r} is not an ISO date") from exc
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc)
        return parsed.strftime(self.fmt)

    def to_crm(self, value: str) -> str:
        if self.lossy:
            return super().to_crm(value)
        if not value.strip():
            return value
        try:
            parsed = datetime.strptime(value.strip(), self.fmt)
        except ValueError as exc:
            raise TransformError(f"{value!r} does not match the date format {self.fmt!r}") from exc
        if self.with_time:
            return parsed.replace(tzinfo=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return date(parsed.year, parsed.month, parsed.day).isoformat()


@dataclass(frozen=True)
class OptionSet(Step):
    """An option code in CRM <-> its label at the ESP; the options come from the CRM's metadata."""

    options: Mapping[str, str] | None = field(default=None, compare=False)  # code -> label; None = not read yet

    def bound(self, options: Mapping[int | str, str]) -> "OptionSet":
        labels = [label.casefold() for label in options.values()]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        lossy = f"the label {twice[0]!r} belongs to several options" if twice else ""
        return OptionSet(self.name, lossy, {str(code): label for code, label in options.items()})

    def _options(self) -> Mapping[str, str]:
        if self.options is None:
            raise TransformError("the column's options were not read from CRM (is it an option set?)")
        return self.options

    def to_esp(self, value: str) -> str:
        if not value.strip():
            return value
        options = self._options()
        if value.strip() not in options:
            raise TransformError(f"option code {value!r} is not one of the column's options "
                                 f"({', '.join(sorted(options))})")
        return options[value.strip()]

    def to_crm(self, value: str) -> str:
        if self.lossy:
            return super().to_crm(value)
        if not value.strip():
            return value
        by_label = _folded([(label, code) for code, label in self._options().items()])
        return _look_up(by_label, value, "optionset", "ESP", what="option label")


@dataclass(frozen=True)
class Default(Step):
    text: str = ""

    def to_esp(self, value: str) -> str:
        return value if value.strip() else self.text


@dataclass(frozen=True)
class Truncate(Step):
    length: int = 0

    def to_esp(self, value: str) -> str:
        return value[: self.length]


@dataclass(frozen=True)
class Chain:
    """A rule's steps: ``to_esp`` in order, ``to_crm`` backwards."""

    steps: tuple[Step, ...] = ()

    def to_esp(self, value: str) -> str:
        for step in self.steps:
            value = step.to_esp(value)
        return value

    def to_crm(self, value: str) -> str:
        for step in reversed(self.steps):
            value = step.to_crm(value)
        return value

    @property
    def lossy(self) -> str:
        """Why the chain cannot be read backwards ("" when it can)."""
        for step in self.steps:
            if step.lossy:
                return f"{step.name}: {step.lossy}"
        return ""

    @property
    def needs_options(self) -> bool:
        return any(isinstance(step, OptionSet) for step in self.steps)

    def with_options(self, options: Mapping[int | str, str]) -> "Chain":
        """The chain with its ``optionset`` step bound to the column's options."""
        return Chain(tuple(s.bound(options) if isinstance(s, OptionSet) else s for s in self.steps))


_INLINE_MAP = re.compile(r"^map\s*\((?P<pairs>.*)\)$", re.DOTALL)


def parse_step(text: str, tables: Mapping[str, Mapping[str, str]]) -> Step:
    """One step as written on a rule line; ValueError with a message and hint when it is wrong.

    ``tables`` are the ``[transform.NAME]`` sections (lower-cased names).
    """
    word = text.strip()
    kind, colon, arg = word.partition(":")
    kind = kind.strip().lower()
    inline = _INLINE_MAP.match(word)
    if inline:
        return ValueMap.of(word, _inline_pairs(inline.group("pairs")))
    if not colon and kind in ("trim", "strip"):
        return Trim("trim")
    if not colon and kind in CASE_STEPS:
        return Case(kind)
    if not colon and kind == "optionset":
        return OptionSet("optionset")
    if colon and kind == "map":
        name = arg.strip().lower()
        if name not in tables:
            raise ValueError(f"map {name!r} has no [transform.{name}] section|add the section, or fix the name")
        return ValueMap.of(f"map:{name}", list(tables[name].items()))
    if colon and kind == "date":
        fmt = arg.strip()
        if "%" not in fmt:
            raise ValueError(f"date format {fmt!r} has no % codes|write it as strftime codes, e.g. date:%d.%m.%Y")
        return DateFormat.of(fmt)
    if colon and kind == "default":
        return Default(f"default:{arg.strip()}", "a default fills blanks, so a blank cannot come back", arg.strip())
    if colon and kind == "truncate":
        if not arg.strip().isdigit() or int(arg) < 1:
            raise ValueError(f"truncate needs a length, got {arg.strip()!r}|write e.g. truncate:50")
        return Truncate(f"truncate:{int(arg)}", "the cut-off end is lost", int(arg))
    raise ValueError(f"unknown transform {word!r}|transforms are " + ", ".join(STEP_NAMES))


def _inline_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        left, arrow, right = item.partition("<->")
        if not arrow or not left.strip():
            raise ValueError(f"{item!r} in an inline map is not 'CRM value <-> ESP value'"
                             "|write map(Austria <-> Österreich; Germany <-> Deutschland)")
        pairs.append((left.strip(), right.strip()))
    if not pairs:
        raise ValueError("an empty inline map|write map(Austria <-> Österreich; Germany <-> Deutschland)")
    return pairs


def _folded(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    table = {key.casefold(): value for key, value in pairs}
    table.update(dict(pairs))
    return table


def _look_up(table: Mapping[str, str], value: str, name: str, side: str, what: str = "value") -> str:
    if not value.strip():
        return value
    found = table.get(value, table.get(value.strip(), table.get(value.strip().casefold())))
    if found is None:
        raise TransformError(f"{side} {what} {value!r} has no line in {name}")
    return found
