"""``[mapping.TABLE]`` lines (ESP attribute = crm_column | step ...) and ``[transform.NAME]`` tables."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterator, Mapping

from pydantic import ValidationError

from connector.config.fields import MAPPING_TABLES
from connector.config.models import CONTROL_CHARACTERS, FieldMapping
from connector.config.problems import did_you_mean

if TYPE_CHECKING:
    from connector.config.loader import Item, Loader, RawSection

VALUE_TRANSFORMS = ("strip", "lower", "upper", "title", "capitalize")
"""Transforms a mapping line may name, applied in the order written (``connector.mapping``), then
the lookup, then the default when the value is blank."""
STEPS = (*VALUE_TRANSFORMS, "label", "lookup:", "default:", "date:", "tz:")
"""Every step a mapping line may hold after its column (docs/configuration.md, [mapping.TABLE])."""


_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRANSFORM_NAME = re.compile(r"^[a-z0-9_-]+$")


def control_problem(loader: Loader, section: str, item: Item) -> bool:
    """Report a line holding a control character (True) or not (False)."""
    found = CONTROL_CHARACTERS.search(item.key + item.value)
    if found:
        loader.problem(section, item.key, item.line, f"holds the control character U+{ord(found.group()):04X}",
                       "retype the line: it holds an invisible character (copied from a document?)")
    return found is not None


def table_sections(loader: Loader, prefix: str, verb: str) -> Iterator[tuple[str, str, RawSection]]:
    """(section name, CRM table, raw section) of every ``[<prefix>.TABLE]`` section naming a CRM
    table; a section naming another table is reported ("no CRM table 'x' to <verb>")."""
    for name, raw in loader.raw.items():
        if not name.startswith(f"{prefix}."):
            continue
        table = name.partition(".")[2]
        if table not in MAPPING_TABLES:
            loader.problem(name, "", raw.line, f"no CRM table {table!r} to {verb}",
                           did_you_mean(table, list(MAPPING_TABLES),
                                        f"{prefix} sections are " + ", ".join(f"[{prefix}.{t}]" for t in MAPPING_TABLES)))
            continue
        yield name, table, raw


def build_mappings(loader: Loader, transforms: Mapping[str, object]) -> dict[str, tuple[FieldMapping, ...]]:
    """``{"contact": (FieldMapping, ...), ...}`` from the ``[mapping.TABLE]`` sections; bad lines reported, left out."""
    mappings: dict[str, tuple[FieldMapping, ...]] = {}
    for name, table, raw in table_sections(loader, "mapping", "map"):
        parsed = (parse_mapping_line(loader, name, item, transforms) for item in raw.items.values())
        mappings[table] = tuple(m for m in parsed if m is not None)
    return mappings


def parse_mapping_line(loader: Loader, section: str, item: Item, transforms: Mapping[str, object]) -> FieldMapping | None:
    """One ``ESP attribute = crm_column | step | ...`` line, or None (its problems reported)."""
    if control_problem(loader, section, item):
        return None
    parts = [p.strip() for p in item.value.split("|")]
    column, options = parts[0], parts[1:]
    lookup = default = date_format = time_zone = None
    label = False
    steps: list[str] = []
    ok = True
    for option in options:
        kind, colon, arg = option.partition(":")
        kind = kind.strip().lower()
        if not colon and kind == "label":
            label, ok = (True, ok) if not label else (True, _twice(loader, section, item, "label"))
        elif colon and kind == "date":
            date_format, ok = ((arg.strip(), ok) if date_format is None
                               else (date_format, _twice(loader, section, item, "date")))
            if "%" not in date_format:
                loader.problem(section, item.key, item.line, f"date format {date_format!r} has no % directive",
                               "write a strftime format, e.g. date:%d.%m.%Y or date:%Y-%m-%d %H:%M")
                ok = False
        elif colon and kind == "tz":
            time_zone, ok = (arg.strip(), ok) if time_zone is None else (time_zone, _twice(loader, section, item, "tz"))
            if not _known_zone(time_zone):
                loader.problem(section, item.key, item.line, f"unknown time zone {time_zone!r}",
                               "use an IANA zone name, e.g. tz:Europe/Vienna, tz:America/New_York or tz:UTC")
                ok = False
        elif colon and kind == "lookup":
            lookup, ok = (arg.strip(), ok) if lookup is None else (lookup, _twice(loader, section, item, "lookup"))
            if lookup and lookup.lower() not in transforms:
                loader.problem(section, item.key, item.line, f"lookup {lookup!r} has no [transform.{lookup}] section",
                               did_you_mean(lookup.lower(), list(transforms), "add the section, or fix the name"))
                ok = False
        elif colon and kind == "default":
            default, ok = (arg.strip(), ok) if default is None else (default, _twice(loader, section, item, "default"))
        elif not colon and kind in VALUE_TRANSFORMS:
            steps.append(kind)
        else:
            loader.problem(section, item.key, item.line, f"unknown mapping step {option!r}",
                           did_you_mean(kind, list(STEPS), "steps are label, date:FORMAT, tz:ZONE, lookup:NAME, "
                                        "default:TEXT, " + ", ".join(VALUE_TRANSFORMS)))
            ok = False
    if label and (date_format or time_zone):
        loader.problem(section, item.key, item.line, "label and date:/tz: on one line",
                       "label takes CRM's display text as it is (dates already formatted for the user); "
                       "use date:/tz: without label to format a date yourself")
        ok = False
    if not column:
        loader.problem(section, item.key, item.line, "no CRM column",
                       "write ESP attribute = crm_column [| step ...]")
        ok = False
    elif not _COLUMN.match(column):
        loader.problem(section, item.key, item.line, f"{column!r} is not a CRM column name",
                       "use the column's logical name, e.g. address1_country; "
                       "the steps after it are separated by |")
        ok = False
    if not ok:
        return None
    try:
        return FieldMapping(esp_attribute=item.key, crm_column=column, lookup=(lookup or "").lower(),
                            default=default or "", transforms=tuple(steps), label=label,
                            date_format=date_format or "", time_zone=time_zone or "", line=item.line)
    except ValidationError as exc:  # never a traceback for a config value
        loader.problem(section, item.key, item.line, exc.errors()[0]["msg"].removeprefix("Value error, "))
        return None


def _known_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _twice(loader: Loader, section: str, item: Item, what: str) -> bool:
    loader.problem(section, item.key, item.line, f"{what} given twice", f"keep one {what}: step")
    return False


def build_transforms(loader: Loader) -> dict[str, dict[str, str]]:
    """``{"countries": {CRM value: ESP value}, ...}`` from the ``[transform.NAME]`` sections."""
    transforms: dict[str, dict[str, str]] = {}
    for name, raw in loader.raw.items():
        if not name.startswith("transform."):
            continue
        table = name.partition(".")[2]
        if not _TRANSFORM_NAME.match(table):
            loader.problem(name, "", raw.line, f"bad transform name {table!r}",
                           "use letters, digits, - and _ only, e.g. [transform.countries]")
            continue
        values = {}
        for item in raw.items.values():
            if control_problem(loader, name, item):
                continue
            values[item.key] = item.value
        transforms[table] = values
    return transforms
