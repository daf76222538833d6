"""Pure mapping: one CRM recipient -> one ESP subscriber, or a skip with its reason.

The ``[mapping.<table>]`` sections of ``service.ini`` name, per CRM table, which CRM
column fills which ESP subscriber attribute, with an optional ``[transform.<name>]``
lookup table ("Austria" -> "Österreich"), a default for blank values and simple
value transforms (strip, lower, upper, title). ``label`` takes the value as CRM shows it
(the Dataverse formatted value: an option's label, a lookup's record name) instead of
its code or GUID; ``date:`` / ``tz:`` format a date/time in a zone. No I/O here.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Iterable, Mapping

from connector.models import CrmTable, Recipient, Skip, SkipReason, Subscriber

from connector.config import ConfigProblem

if TYPE_CHECKING:  # pragma: no cover
    from connector.config import Config, FieldMapping

FORMATTED = "OData.Community.Display.V1.FormattedValue"
"""The annotation holding a column's display text: read as ``<column>@`` + this (docs/crm.md)."""

MAX_EMAIL_LENGTH = 254
"""RFC 5321: a forward path holds at most 254 characters of address."""

_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

VALUE_TRANSFORMS = {
    "strip": str.strip,
    "lower": str.lower,
    "upper": str.upper,
    "title": str.title,
    "capitalize": str.capitalize,
}
"""Names allowed in a mapping's ``transforms`` list."""


def is_valid_email(address: str) -> bool:
    """A pragmatic check of the address shape the ESP will accept (no IP literals, no quoting)."""
    return len(address) <= MAX_EMAIL_LENGTH and _EMAIL.fullmatch(address) is not None


def normalize_email(address: str) -> str:
    """The form used to compare addresses (de-duplication, suppression list)."""
    return address.strip().lower()


def columns_to_read(config: "Config") -> dict[CrmTable, list[str]]:
    """CRM columns per table that the mapping needs, in mapping order, without repeats.

    A ``label`` line adds ``<column>@OData.Community.Display.V1.FormattedValue``: the reader
    asks for that annotation and keeps it with the row (never in ``$select``)."""
    columns: dict[CrmTable, list[str]] = {table: [] for table in CrmTable}
    for table_name, mappings in config.mappings.items():
        table = CrmTable(table_name)
        for field_mapping in mappings:
            names = [field_mapping.crm_column] + ([f"{field_mapping.crm_column}@{FORMATTED}"]
                                                  if field_mapping.label else [])
            columns[table] += [n for n in names if n not in columns[table]]
    return columns


def esp_attribute_names(config: "Config") -> list[str]:
    """Every ESP attribute any table maps to, in first-seen order: the batch file columns."""
    names: list[str] = []
    for table in CrmTable:
        for field_mapping in config.mappings.get(table.value, ()):
            if field_mapping.esp_attribute not in names:
                names.append(field_mapping.esp_attribute)
    return names


def unknown_attribute_mappings(config: "Config", known: Iterable[str], account: str = "") -> list[ConfigProblem]:
    """One ``ConfigProblem`` per ``[mapping.*]`` line whose ESP attribute the account does not have.

    Names compare without case, as Marketing Cloud's attribute names do; the problem names
    the file, line, section and attribute, so an operator can fix the line or add the attribute.
    """
    have = {name.strip().casefold() for name in known}
    where = str(config.source_path) if config.source_path else "service.ini"
    problems = []
    for table in CrmTable:
        for field_mapping in config.mappings.get(table.value, ()):
            if field_mapping.esp_attribute.strip().casefold() not in have:
                problems.append(ConfigProblem(
                    f"mapping.{table.value}", field_mapping.esp_attribute, field_mapping.line,
                    f"ESP attribute {field_mapping.esp_attribute!r} does not exist in the ESP account"
                    + (f" {account!r}" if account else ""),
                    "add the profile attribute in Marketing Cloud (Subscribers > Profile Management), "
                    "or map the CRM column to an attribute the account has", where))
    return problems


def to_text(value: object) -> str:
    """A CRM value as the text an ESP attribute holds (booleans true/false, dates ISO, no control characters)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return format(value, "f")
    return _CONTROL.sub(" ", str(value))


def format_date(value: object, date_format: str, time_zone: str) -> object:
    """A CRM date/time (``2026-03-01T14:30:00Z``) in ``time_zone`` and ``date_format``; other values as they are.

    A date without a time (a date-only column) is not moved between zones."""
    if value is None or value == "":
        return value
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return value  # not a date: the text as CRM gave it
    date_only = not isinstance(value, datetime) and len(str(value)) <= 10
    if not date_only:
        from zoneinfo import ZoneInfo

        parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(
            ZoneInfo(time_zone) if time_zone else timezone.utc)
    return parsed.strftime(date_format) if date_format else parsed.isoformat()


class Mapper:
    """Turns recipients into subscribers according to the config. Stateless per call."""

    def __init__(self, config: "Config") -> None:
        self.key_by_email = config.sends.subscriber_key == "email"
        self.mappings: dict[CrmTable, tuple["FieldMapping", ...]] = {
            CrmTable(name): tuple(items) for name, items in config.mappings.items()
        }
        self.lookups = _lookup_tables(config.transforms)
        for items in self.mappings.values():
            for field_mapping in items:
                unknown = [t for t in field_mapping.transforms if t not in VALUE_TRANSFORMS]
                if unknown or (field_mapping.lookup and field_mapping.lookup not in self.lookups):
                    from connector.errors import ConfigError

                    raise ConfigError(
                        f"mapping of ESP attribute {field_mapping.esp_attribute!r} names an unknown "
                        f"transform {(unknown or [field_mapping.lookup])[0]!r}; use one of "
                        f"{sorted(VALUE_TRANSFORMS)} or add a [transform.NAME] section",
                        section="mapping",
                        key=field_mapping.esp_attribute,
                    )

    def map(self, recipient: Recipient) -> Subscriber | Skip:
        """The subscriber for this recipient, or why it must not be sent to."""
        ref = recipient.ref
        email = (recipient.email or "").strip()
        if not email:
            return Skip(ref, None, SkipReason.NO_EMAIL, f"{ref.table.value} {ref.id} has no email address")
        if not is_valid_email(email):
            return Skip(ref, email, SkipReason.MALFORMED_EMAIL, f"{email!r} is not a valid address; fix it in CRM")
        if recipient.do_not_email:
            return Skip(ref, email, SkipReason.DO_NOT_EMAIL, "the record does not allow email")
        if recipient.do_not_bulk_email:
            return Skip(ref, email, SkipReason.DO_NOT_BULK_EMAIL, "the record does not allow bulk email")
        if not recipient.active:
            return Skip(ref, email, SkipReason.INACTIVE, "the record is inactive in CRM")
        attributes = {}
        for field_mapping in self.mappings.get(ref.table, ()):
            raw = recipient.attributes.get(field_mapping.crm_column)
            if field_mapping.label and raw is not None:
                raw = recipient.attributes.get(f"{field_mapping.crm_column}@{FORMATTED}", raw)
            elif field_mapping.date_format or field_mapping.time_zone:
                raw = format_date(raw, field_mapping.date_format, field_mapping.time_zone)
            attributes[field_mapping.esp_attribute] = self._value(field_mapping, raw)
        key = normalize_email(email) if self.key_by_email else ref.id
        return Subscriber(subscriber_key=key, email=email, attributes=attributes, ref=ref)

    def _value(self, field_mapping: "FieldMapping", raw: object) -> str:
        value = to_text(raw)
        for name in field_mapping.transforms:
            value = VALUE_TRANSFORMS[name](value)
        if value and field_mapping.lookup:
            table = self.lookups[field_mapping.lookup]
            value = table.get(value, table.get(value.casefold(), value))
        return value or field_mapping.default


def _lookup_tables(transforms: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Lookup tables with a case-insensitive fallback entry for every key."""
    tables: dict[str, dict[str, str]] = {}
    for name, table in transforms.items():
        merged = {key.casefold(): value for key, value in table.items()}
        merged.update(table)
        tables[name] = merged
    return tables
