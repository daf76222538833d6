"""Which instance annotations a Web API reply carries: only those the request asked for.

``Prefer: odata.include-annotations="..."`` names them: ``*`` (all), a list separated by
commas, or a namespace wildcard (``OData.Community.Display.V1.*``). Without it a reply has
none (PD webapi/compose-http-requests-handle-errors.md, "Prefer headers";
webapi/query/overview.md, "Formatted values"). Formatted values are given for choice,
yes/no, lookup (the referenced row's primary name), date/time and number columns
(docs/sandbox.md, "Formatted values").
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    from connector.sandbox.dataverse.store import DataverseStore

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_TABLE = "Microsoft.Dynamics.CRM.lookuplogicalname"


class Annotations:
    """The annotations one request asked for, and the store that names a lookup's row."""

    def __init__(self, requested: str, store: DataverseStore | None = None) -> None:
        self.patterns = [p.strip() for p in requested.split(",") if p.strip()]
        self.store = store

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def wants(self, annotation: str) -> bool:
        for pattern in self.patterns:
            if pattern == "*" or pattern == annotation:
                return True
            if pattern.endswith(".*") and annotation.startswith(pattern[:-1]):
                return True
        return False

    def lookup_name(self, table: str | None, record_id: str) -> str | None:
        """The primary name of the row a lookup points at (its formatted value)."""
        if self.store is None or not table:
            return None
        e = self.store.schema.entity(table)
        row = self.store.get_raw(e, record_id) if e is not None else None
        value = row.get(e.primary_name) if row and e is not None else None
        return None if value is None else str(value)


ALL = Annotations("*")
"""Every annotation, for callers inside the sandbox that want them all (no lookup names)."""


def formatted_date(text: str) -> str:
    """``2026-01-02T15:04:00Z`` as the sandbox's users see it: ``1/2/2026 3:04 PM`` (en-US, UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    hour = value.hour % 12 or 12
    return f"{value.month}/{value.day}/{value.year} {hour}:{value.minute:02d} {'AM' if value.hour < 12 else 'PM'}"


def formatted_number(value: float | int, kind: str) -> str:
    if kind == "Money":
        return f"${value:,.2f}"
    if kind in ("Decimal", "Double"):
        return f"{value:,.2f}"
    return f"{int(value):,}"


Wanted = Callable[[str], bool]
