"""KPI rows from the source: the columns the query must return, validation, the value hash.

The source query does the aggregation (it is SQL; the database is good at it) and
returns one row per customer and KPI, in long form:

=================  =====================================================================
``customer_key``   the customer's value of ``[kpi] match_column`` (e-mail, account number,
                   external id); matched case-insensitively, surrounding blanks ignored
``kpi``            the KPI's name, e.g. ``revenue_6m``, ``orders_books``, ``churn_score``
                   (1-100 characters, none of ``< > * % & : / \\ + ? #``: it is part of
                   the CRM row's alternate key)
``value``          a number (or NULL): -100,000,000,000 .. 100,000,000,000, kept to
                   ``VALUE_PRECISION`` decimals
``period``         optional: the period the value covers, free text up to 100 characters
=================  =====================================================================

A row that breaks a rule is a :class:`BadRow` with the reason: reported and quarantined,
never written, never dropped silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from connector.crm import keys

REQUIRED_COLUMNS = ("customer_key", "kpi", "value")
OPTIONAL_COLUMNS = ("period",)
KPI_NAME_LENGTH = 100
"""``cesp_name`` is a String 100 column (docs/kpi.md)."""
PERIOD_LENGTH = 100
CUSTOMER_KEY_LENGTH = 400
VALUE_PRECISION = 4
"""Decimals of ``cesp_value`` (DecimalAttributeMetadata Precision)."""
VALUE_LIMIT = Decimal("100000000000")
"""Dataverse's Decimal column range: -100,000,000,000 .. 100,000,000,000."""
_QUANTUM = Decimal(1).scaleb(-VALUE_PRECISION)


@dataclass(frozen=True)
class KpiRow:
    """One valid source row, normalized."""

    customer_key: str  # stripped, lower case: how it is matched and stored
    kpi: str
    value: Decimal | None
    period: str = ""
    shown_key: str = ""  # the key as the source gave it (for reports)

    @property
    def value_hash(self) -> str:
        """Hash of what is written (value and period): equal hashes need no write."""
        text = f"{'' if self.value is None else self.value}\x00{self.period}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def value_text(self) -> str:
        return "" if self.value is None else str(self.value)


@dataclass(frozen=True)
class BadRow:
    """A source row that cannot be written, with the reason (a quarantine code) and what to do."""

    customer_key: str
    kpi: str
    reason: str  # invalid_customer_key | invalid_kpi_name | invalid_value | invalid_period | duplicate | unmatched | ambiguous
    detail: str


def missing_columns(columns: list[str]) -> list[str]:
    have = {c.lower() for c in columns}
    return [c for c in REQUIRED_COLUMNS if c not in have]


def parse_row(raw: Mapping[str, Any]) -> KpiRow | BadRow:
    """A source row (column name -> value, names in lower case) -> a valid row or the reason it is not."""
    shown = "" if raw.get("customer_key") is None else str(raw["customer_key"]).strip()
    name = "" if raw.get("kpi") is None else str(raw["kpi"]).strip()
    if not shown:
        return BadRow(shown, name, "invalid_customer_key", "customer_key is empty: the query must return the "
                      "customer's match value in every row")
    if len(shown) > CUSTOMER_KEY_LENGTH:
        return BadRow(shown[:CUSTOMER_KEY_LENGTH], name, "invalid_customer_key",
                      f"customer_key is longer than {CUSTOMER_KEY_LENGTH} characters")
    if not name or len(name) > KPI_NAME_LENGTH or not keys.addressable(name):
        return BadRow(shown, name, "invalid_kpi_name",
                      f"KPI name {name!r} is empty, longer than {KPI_NAME_LENGTH} characters or holds one of "
                      "< > * % & : / \\ + ? # (it is part of the CRM row's alternate key): rename it in the query")
    value = _number(raw.get("value"))
    if isinstance(value, str):
        return BadRow(shown, name, "invalid_value", value)
    period = "" if raw.get("period") is None else str(raw["period"]).strip()
    if len(period) > PERIOD_LENGTH:
        return BadRow(shown, name, "invalid_period", f"period is longer than {PERIOD_LENGTH} characters")
    return KpiRow(shown.lower(), name, value, period, shown)


def _number(raw: Any) -> Decimal | None | str:
    """The value as a Decimal kept to VALUE_PRECISION decimals, None for NULL, or why it is not a number."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return f"value {raw!r} is a boolean, not a number: return 1/0 in the query"
    try:
        number = Decimal(str(raw).strip())
    except InvalidOperation:
        return f"value {str(raw)[:50]!r} is not a number"
    if not number.is_finite():
        return f"value {raw!r} is not a finite number"
    if abs(number) > VALUE_LIMIT:
        return f"value {number} is outside the CRM column's range -100,000,000,000 .. 100,000,000,000"
    text = format(number.quantize(_QUANTUM), "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text) + 0  # + 0: -0 is 0
