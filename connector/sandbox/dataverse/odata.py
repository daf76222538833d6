"""OData query options of the Dataverse sandbox: ``$filter``, ``$orderby``, ``$select``.

``$filter`` is parsed into a small tree and compiled to a SQLite WHERE clause over
the store's tables. Supported: ``eq ne gt ge lt le``, ``and or not``, parentheses,
``contains`` / ``startswith`` / ``endswith``, ``null`` / ``true`` / ``false``, string,
number, GUID and date-time literals, lookups as ``_x_value``, and
``Microsoft.Dynamics.CRM.In`` / ``NotIn`` / ``Between`` / ``NotBetween``. String
comparisons are case-insensitive, as in Dataverse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from connector.sandbox.dataverse.schema import FLOAT_TYPES, INT_TYPES, LOOKUP_TYPES, STRING_TYPES, Attribute, Entity
from connector.sandbox.dataverse.store import StoreError, quote_ident as _q, utc_text

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<dqstring>"(?:[^"\\]|\\.)*")
    | (?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?(?![\w-]))
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})
    | (?P<number>-?\d+(?:\.\d+)?(?![\w-]))
    | (?P<name>[A-Za-z_][\w.]*)
    | (?P<punct>[(),=\[\]])
    )""", re.VERBOSE)

COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def bad_query(message: str) -> StoreError:
    return StoreError(400, "0x80060888", message)


@dataclass
class Tok:
    kind: str
    value: Any


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise bad_query(f"Syntax error at position {pos} in '{text}'.")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "string":
            value = value[1:-1].replace("''", "'")
        elif kind == "dqstring":  # JSON string (PropertyValues=["a","b"])
            kind, value = "string", json.loads(value)
        elif kind == "number":
            value = float(value) if "." in value else int(value)
        toks.append(Tok(kind, value))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise bad_query(f"Syntax error: unexpected end of '$filter={self.text}'.")
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        tok = self.take()
        if tok.value != value:
            raise bad_query(f"Syntax error: expected '{value}' but found '{tok.value}' in '{self.text}'.")

    def is_word(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "name" and tok.value == word

    def parse(self) -> tuple:
        node = self.or_expr()
        if self.peek() is not None:
            raise bad_query(f"Syntax error at '{self.peek().value}' in '{self.text}'.")
        return node

    def or_expr(self) -> tuple:
        node = self.and_expr()
        while self.is_word("or"):
            self.take()
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self) -> tuple:
        node = self.not_expr()
        while self.is_word("and"):
            self.take()
            node = ("and", node, self.not_expr())
        return node

    def not_expr(self) -> tuple:
        if self.is_word("not"):
            self.take()
            return ("not", self.not_expr())
        return self.comparison()

    def comparison(self) -> tuple:
        left = self.primary()
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.value in COMPARISONS:
            self.take()
            return ("cmp", tok.value, left, self.primary())
        return left

    def primary(self) -> tuple:
        tok = self.take()
        if tok.value == "(":
            node = self.or_expr()
            self.expect(")")
            return node
        if tok.kind == "name":
            nxt = self.peek()
            if nxt is not None and nxt.value == "(":
                return self.function(tok.value)
            if tok.value in ("true", "false"):
                return ("lit", tok.value == "true")
            if tok.value == "null":
                return ("lit", None)
            return ("prop", tok.value)
        if tok.kind == "punct":
            raise bad_query(f"Syntax error at '{tok.value}' in '{self.text}'.")
        if tok.kind == "datetime":
            return ("lit", _offset_literal(tok.value))
        if tok.kind == "guid":
            return ("lit", tok.value.lower())
        return ("lit", tok.value)

    def function(self, name: str) -> tuple:
        self.expect("(")
        args: list = []
        named: dict[str, Any] = {}
        while self.peek() is not None and self.peek().value != ")":
            if self.peek().kind == "name" and self.peek(1) is not None and self.peek(1).value == "=":
                key = self.take().value
                self.take()
                named[key] = self.list_or_value()
            else:
                args.append(self.or_expr())
            if self.peek() is not None and self.peek().value == ",":
                self.take()
        self.expect(")")
        return ("func", name, args, named)

    def list_or_value(self) -> Any:
        tok = self.take()
        if tok.value == "[":
            values = []
            while self.peek() is not None and self.peek().value != "]":
                values.append(self.take().value)
                if self.peek() is not None and self.peek().value == ",":
                    self.take()
            self.expect("]")
            return values
        return tok.value


def _offset_literal(text: str) -> str:
    """A DateTimeOffset literal of ``$filter``: a date, or a date-time with ``Z`` or an offset."""
    if len(text) > 10 and not re.search(r"(?:Z|[+-]\d{2}:\d{2})$", text):
        raise bad_query(f"The DateTimeOffset text '{text}' should be in format"
                        " 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range.")
    return _datetime_literal(text)


def _datetime_literal(text: str) -> str:
    if len(text) == 10:
        return text + "T00:00:00Z"
    return utc_text(text)


def parse_filter(text: str, aliases: dict[str, str] | None = None) -> tuple:
    """Parse ``$filter``; ``aliases`` are the request's parameter aliases (``@p1=...``)."""
    if aliases:
        text = re.sub(r"@(\w+)", lambda m: aliases.get("@" + m.group(1), m.group(0)), text)
    return _Parser(text).parse()


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class FilterCompiler:
    """Compile a parsed ``$filter`` to SQL for one table (optionally qualified by an alias)."""

    def __init__(self, entity: Entity, alias: str = "") -> None:
        self.entity = entity
        self.alias = alias
        self.params: list[Any] = []

    def attr(self, name: str) -> Attribute:
        attr = self.entity.by_wire_name(name)
        if attr is None:
            raise bad_query(f"Could not find a property named '{name}' on type "
                            f"'Microsoft.Dynamics.CRM.{self.entity.logical_name}'.")
        return attr

    def column(self, attr: Attribute) -> str:
        return (f"{self.alias}." if self.alias else "") + _q(attr.logical_name)

    def value(self, attr: Attribute, value: Any) -> Any:
        if value is None:
            return None
        if attr.type == "Boolean":
            return 1 if value in (True, 1, "true", "1") else 0
        if attr.type in INT_TYPES:
            try:
                return int(value)
            except (TypeError, ValueError):
                raise bad_query(f"A binary operator with incompatible types was detected for '{attr.logical_name}'.")
        if attr.type in FLOAT_TYPES:
            return float(value)
        if attr.type == "DateTime" and isinstance(value, str):
            return _datetime_literal(value) if re.match(r"\d{4}-\d{2}-\d{2}", value) else value
        if attr.type in LOOKUP_TYPES or attr.type == "Uniqueidentifier":
            return str(value).lower()
        return value if isinstance(value, str) else str(value)

    def compile(self, node: tuple) -> str:
        kind = node[0]
        if kind in ("and", "or"):
            return f"({self.compile(node[1])} {kind.upper()} {self.compile(node[2])})"
        if kind == "not":
            return f"(NOT {self.compile(node[1])})"
        if kind == "cmp":
            return self.comparison(*node[1:])
        if kind == "func":
            return self.function(*node[1:])
        if kind == "prop":
            attr = self.attr(node[1])
            if attr.type != "Boolean":
                raise bad_query(f"The expression '{node[1]}' is not a Boolean expression.")
            return f"({self.column(attr)} = 1)"
        raise bad_query("A literal is not a valid filter expression.")

    def comparison(self, op: str, left: tuple, right: tuple) -> str:
        if left[0] == "lit" and right[0] == "prop":
            left, right = right, left
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        if left[0] != "prop" or right[0] != "lit":
            raise bad_query("Only comparisons between a property and a literal are supported.")
        attr = self.attr(left[1])
        col = self.column(attr)
        value = self.value(attr, right[1])
        if value is None:
            if op not in ("eq", "ne"):
                raise bad_query("Comparison with null needs 'eq' or 'ne'.")
            return f"({col} IS {'NOT ' if op == 'ne' else ''}NULL)"
        self.params.append(value)
        collate = " COLLATE NOCASE" if attr.type in STRING_TYPES else ""
        # SQL Server semantics, as in Dataverse: "ne" (like "not eq") never matches null
        return f"({col}{collate} {COMPARISONS[op]} ?)"

    def function(self, name: str, args: list, named: dict) -> str:
        short = name.rsplit(".", 1)[-1]
        if short in ("contains", "startswith", "endswith"):
            if len(args) != 2 or args[0][0] != "prop" or args[1][0] != "lit":
                raise bad_query(f"The function '{short}' needs a property and a string literal.")
            attr = self.attr(args[0][1])
            text = _like_escape(str(args[1][1]))
            pattern = {"contains": f"%{text}%", "startswith": f"{text}%", "endswith": f"%{text}"}[short]
            self.params.append(pattern)
            return f"({self.column(attr)} LIKE ? ESCAPE '\\')"
        if name.startswith("Microsoft.Dynamics.CRM."):
            prop = named.get("PropertyName")
            if not isinstance(prop, str):
                raise bad_query(f"The function '{name}' needs PropertyName.")
            attr = self.attr(prop)
            col = self.column(attr)
            values = named.get("PropertyValues", named.get("PropertyValue"))
            if short in ("In", "NotIn"):
                if not isinstance(values, list) or not values:
                    raise bad_query(f"The function '{name}' needs a non-empty PropertyValues list.")
                self.params.extend(self.value(attr, v) for v in values)
                marks = ", ".join("?" * len(values))
                collate = " COLLATE NOCASE" if attr.type in STRING_TYPES else ""
                return f"({col}{collate} {'NOT ' if short == 'NotIn' else ''}IN ({marks}))"
            if short in ("Between", "NotBetween"):
                if not isinstance(values, list) or len(values) != 2:
                    raise bad_query(f"The function '{name}' needs two PropertyValues.")
                self.params.extend(self.value(attr, v) for v in values)
                return f"({col} {'NOT ' if short == 'NotBetween' else ''}BETWEEN ? AND ?)"
            if short in ("Null", "NotNull"):
                return f"({col} IS {'NOT ' if short == 'NotNull' else ''}NULL)"
        raise bad_query(f"The function '{name}' is not supported by the sandbox.")


def compile_filter(entity: Entity, text: str, alias: str = "",
                   aliases: dict[str, str] | None = None) -> tuple[str, list[Any]]:
    compiler = FilterCompiler(entity, alias)
    sql = compiler.compile(parse_filter(text, aliases))
    return sql, compiler.params


def parse_select(entity: Entity, text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if entity.by_wire_name(name) is None:  # a lookup only as _<name>_value, never by its (navigation) name
            hint = ""
            attr = entity.attributes.get(name)
            if attr is not None and attr.type in LOOKUP_TYPES:
                hint = f" Select the lookup as '_{name}_value'."
            raise bad_query(f"Could not find a property named '{name}' on type "
                            f"'Microsoft.Dynamics.CRM.{entity.logical_name}'.{hint}")
    return names


def parse_orderby(entity: Entity, text: str | None, alias: str = "") -> list[str]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        bits = part.split()
        if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1] not in ("asc", "desc")):
            raise bad_query(f"Syntax error in '$orderby={text}'.")
        attr = entity.by_wire_name(bits[0])
        if attr is None:
            raise bad_query(f"Could not find a property named '{bits[0]}' on type "
                            f"'Microsoft.Dynamics.CRM.{entity.logical_name}'.")
        col = (f"{alias}." if alias else "") + _q(attr.logical_name)
        out.append(f"{col} {'DESC' if len(bits) == 2 and bits[1] == 'desc' else 'ASC'}")
    return out
