"""Retrieve filters: SimpleFilterPart / ComplexFilterPart compiled to row predicates.

A row is a dict of property name -> Python value (str, int, bool, aware datetime,
None). Operands arrive as text in ``Value`` or ``DateValue`` and are coerced to the
row value's type; string comparisons ignore case, as on the real service's SQL
collation. ``date_bounds`` extracts an EventDate range so event stores can bisect
instead of scanning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from connector.sandbox.marketing_cloud.soap import Obj, SoapFault, parse_date

Predicate = Callable[[dict], bool]

ONE_VALUE = {"equals", "notEquals", "greaterThan", "lessThan", "greaterThanOrEqual", "lessThanOrEqual", "like",
             "beginsWith", "endsWith", "contains", "notContains"}


class FilterError(ValueError):
    """A filter the service would refuse; the message becomes ``OverallStatus`` text."""


def _coerce(sample: Any, text: str) -> Any:
    if isinstance(sample, datetime):
        return parse_date(text)
    if isinstance(sample, Decimal):  # a data extension's Decimal field
        try:
            return Decimal(text.strip())
        except InvalidOperation:
            raise ValueError(f"'{text}' is not a number") from None
    if isinstance(sample, bool):
        return text.strip().lower() in ("true", "1")
    if isinstance(sample, int):
        try:
            return int(text)
        except ValueError:
            return text
    return text.casefold()


def _norm(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _like(pattern: str) -> re.Pattern:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(parts) + r"\Z", re.IGNORECASE | re.DOTALL)


def _compare(op: str, value: Any, operands: list[Any]) -> bool:
    if op == "isNull":
        return value is None or value == ""
    if op == "isNotNull":
        return not (value is None or value == "")
    if value is None:
        return False
    try:
        if op == "equals":
            return value == operands[0]
        if op == "notEquals":
            return value != operands[0]
        if op == "greaterThan":
            return value > operands[0]
        if op == "greaterThanOrEqual":
            return value >= operands[0]
        if op == "lessThan":
            return value < operands[0]
        if op == "lessThanOrEqual":
            return value <= operands[0]
        if op == "between":
            return operands[0] <= value <= operands[1]
        if op == "IN":
            return value in operands
        if op == "beginsWith":
            return str(value).startswith(str(operands[0]))
        if op == "endsWith":
            return str(value).endswith(str(operands[0]))
        if op == "contains":
            return str(operands[0]) in str(value)
        if op == "notContains":
            return str(operands[0]) not in str(value)
    except TypeError:
        return False
    raise FilterError(f"Error: The filter operator {op} is not supported on this property")


def compile_filter(part: Any, allowed: frozenset[str]) -> Predicate:
    """A predicate for a parsed FilterPart; ``allowed`` = the object's filterable properties."""
    if part is None:
        return lambda row: True
    if not isinstance(part, Obj):
        raise FilterError("Error: The filter is not a SimpleFilterPart or ComplexFilterPart")
    if part.type == "ComplexFilterPart":
        return _compile_complex(part, allowed)
    if part.type == "SimpleFilterPart":
        return _compile_simple(part, allowed)
    # FilterPart is abstract: a filter or operand without its xsi:type is refused, as live replies show
    raise FilterError(f"Error: Unknown filter of type {part.type or 'FilterPart'} encountered")


def _compile_complex(part: Obj, allowed: frozenset[str]) -> Predicate:
    operator = part.text("LogicalOperator")
    operands = [part.get("LeftOperand")]
    if part.get("RightOperand") is not None:
        operands.append(part.get("RightOperand"))
    extra = part.get("AdditionalOperands")
    if isinstance(extra, Obj):
        operands.extend(extra.all("Operand"))
    preds = [compile_filter(o, allowed) for o in operands]
    if operator == "AND":
        return lambda row: all(p(row) for p in preds)
    if operator == "OR":
        return lambda row: any(p(row) for p in preds)
    raise FilterError(f"Error: LogicalOperator '{operator}' is not valid (use AND or OR)")


def _compile_simple(part: Obj, allowed: frozenset[str]) -> Predicate:
    prop = part.text("Property")
    op = part.text("SimpleOperator")
    if prop not in allowed:
        raise FilterError(f"Error: The Filter Property '{prop}' is not a filterable property.")
    texts = [v for v in part.all("Value") if isinstance(v, str)] + [v for v in part.all("DateValue") if isinstance(v, str)]
    if op in ONE_VALUE and len(texts) < 1 or op == "between" and len(texts) < 2:
        raise FilterError(f"Error: The filter on {prop} with operator {op} has too few values.")
    if op == "like":
        pattern = _like(texts[0])
        return lambda row: row.get(prop) is not None and bool(pattern.match(str(row.get(prop))))
    cache: dict[type, list[Any]] = {}

    def operands_for(value: Any) -> list[Any]:
        key = type(value)
        if key not in cache:
            try:
                cache[key] = [_coerce(value, t) for t in texts]
            except ValueError as exc:
                raise FilterError(f"Error: {exc} for filter property {prop}") from exc
        return cache[key]

    def predicate(row: dict) -> bool:
        value = row.get(prop)
        return _compare(op, _norm(value), operands_for(value) if value is not None else [])

    return predicate


@dataclass
class Bounds:
    """An EventDate range in epoch seconds; ``exact`` = the whole filter is this range."""

    lo: float | None = None
    lo_incl: bool = True
    hi: float | None = None
    hi_incl: bool = True
    exact: bool = True


def date_bounds(part: Any, prop: str = "EventDate") -> Bounds:
    if part is None:
        return Bounds()
    if not isinstance(part, Obj):
        return Bounds(exact=False)
    if part.type == "ComplexFilterPart" or "LogicalOperator" in part.values:
        if part.text("LogicalOperator") != "AND" or part.get("AdditionalOperands") is not None:
            return Bounds(exact=False)
        result = Bounds()
        for operand in (part.get("LeftOperand"), part.get("RightOperand")):
            if operand is not None:
                _narrow(result, date_bounds(operand, prop))
        return result
    if part.text("Property") != prop:
        return Bounds(exact=False)
    op = part.text("SimpleOperator")
    texts = [v for v in part.all("DateValue") + part.all("Value") if isinstance(v, str)]
    try:
        ts = [parse_date(t).timestamp() for t in texts]
    except ValueError:
        return Bounds(exact=False)
    if not ts and op not in ("isNull", "isNotNull"):
        return Bounds(exact=False)
    if op == "greaterThan":
        return Bounds(lo=ts[0], lo_incl=False)
    if op == "greaterThanOrEqual":
        return Bounds(lo=ts[0])
    if op == "lessThan":
        return Bounds(hi=ts[0], hi_incl=False)
    if op == "lessThanOrEqual":
        return Bounds(hi=ts[0])
    if op == "between" and len(ts) >= 2:
        return Bounds(lo=ts[0], hi=ts[1])
    if op == "equals":
        return Bounds(lo=ts[0], hi=ts[0])
    if op == "isNotNull":
        return Bounds()
    return Bounds(exact=False)


def _narrow(into: Bounds, other: Bounds) -> None:
    if other.lo is not None and (into.lo is None or other.lo > into.lo or (other.lo == into.lo and not other.lo_incl)):
        into.lo, into.lo_incl = other.lo, other.lo_incl
    if other.hi is not None and (into.hi is None or other.hi < into.hi or (other.hi == into.hi and not other.hi_incl)):
        into.hi, into.hi_incl = other.hi, other.hi_incl
    into.exact = into.exact and other.exact


__all__ = ["Bounds", "FilterError", "compile_filter", "date_bounds", "SoapFault"]


def key_hint(part: Any, prop: str) -> list[str] | None:
    """The values ``prop`` must take for the filter to match (equals / IN, possibly inside ANDs).

    None when the filter does not pin ``prop`` down; used as an index lookup so that a
    Retrieve of a few subscribers does not scan a million of them.
    """
    if not isinstance(part, Obj):
        return None
    if part.type == "ComplexFilterPart" or "LogicalOperator" in part.values:
        if part.text("LogicalOperator") != "AND":
            return None
        for operand in (part.get("LeftOperand"), part.get("RightOperand")):
            found = key_hint(operand, prop)
            if found is not None:
                return found
        return None
    if part.text("Property") != prop or part.text("SimpleOperator") not in ("equals", "IN"):
        return None
    return [v for v in part.all("Value") if isinstance(v, str)]
