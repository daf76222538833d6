"""Values between the peers and the rules: CRM values as text, text back to the CRM column's type.

A rule works on text. A CRM value is made text the way the send mapping does it
(``connector.mapping.to_text``); going back, the text is typed for the column from the
CRM's metadata (``ColumnInfo``). A value the column cannot take is bad input: the field of
that record is skipped with the reason, never written half-right.
"""

from __future__ import annotations

from connector.mapping import is_valid_email, to_text
from connector.models import ColumnInfo

__all__ = ["EMAIL_ATTRIBUTES", "crm_text", "is_email_rule", "typed_for_crm"]

EMAIL_ATTRIBUTES = frozenset({"email address", "emailaddress"})
"""The ESP attribute names that stand for the subscriber's own e-mail address (any case)."""

NUMBER_TYPES = ("Integer", "BigInt", "Picklist", "State", "Status")
DECIMAL_TYPES = ("Decimal", "Double", "Money")


def crm_text(value: object) -> str:
    return to_text(value)


def is_email_rule(crm_column: str, esp_attribute: str) -> bool:
    return esp_attribute.strip().casefold() in EMAIL_ATTRIBUTES or crm_column.startswith("emailaddress")


def typed_for_crm(text: str, column: ColumnInfo | None, *, email: bool = False) -> object:
    """The value to write into the column; ValueError saying why it cannot go there."""
    if email and text.strip() and not is_valid_email(text.strip()):
        raise ValueError(f"{text!r} is not a valid e-mail address")
    if column is None:
        return text if text != "" else None
    if not column.writable:
        raise ValueError(f"the CRM column {column.name} is read-only")
    if text.strip() == "":
        return None
    kind = column.type
    if kind in ("String", "Memo"):
        if column.max_length and len(text) > column.max_length:
            raise ValueError(f"{len(text)} characters are too long for {column.name} "
                             f"(at most {column.max_length})")
        return text
    if kind in NUMBER_TYPES:
        try:
            number = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number for {column.name}") from None
        if column.options and number not in column.options:
            raise ValueError(f"{number} is not an option of {column.name}")
        return number
    if kind in DECIMAL_TYPES:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a number for {column.name}") from None
    if kind == "Boolean":
        word = text.strip().lower()
        if word in ("true", "1", "yes"):
            return True
        if word in ("false", "0", "no"):
            return False
        raise ValueError(f"{text!r} is not true or false for {column.name}")
    return text
