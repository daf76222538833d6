"""FetchXML for the Dataverse sandbox (``GET <set>?fetchXml=...``).

The subset a marketing list query uses: ``attribute`` / ``all-attributes``,
``order``, nested ``filter`` (and/or) with ``condition`` s, ``link-entity`` (inner
and outer, ``intersect``), ``distinct``, ``top``, and paging with ``count``,
``page`` and ``paging-cookie``. A cookie names the last primary key of the page, so
the next page continues after it (as the real service does), instead of counting
rows from the start. As in Dataverse (PD fetchxml/page-results.md): a query ordered on
a link-entity attribute gets no paging cookie, and paging by page numbers alone
("simple paging") returns at most the first 50,000 rows, then reports no more records.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from connector.sandbox.dataverse.annotations import Annotations
from connector.sandbox.dataverse.odata import FilterCompiler
from connector.sandbox.dataverse.schema import LOOKUP_TYPES, STRING_TYPES, Entity
from connector.sandbox.dataverse.store import DataverseStore, StoreError, to_wire, quote_ident as _q

MAX_PAGE = 5000
SIMPLE_PAGING_LIMIT = 50_000
"""Rows a query paged by page numbers alone (no paging cookie) can return at most."""

_OPS = {"eq": "=", "ne": "<>", "neq": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def fetch_error(message: str) -> StoreError:
    return StoreError(400, "0x80041103", message)


@dataclass
class FetchQuery:
    entity: Entity
    columns: list[tuple[str, str, Entity, str]] = field(default_factory=list)  # (alias, attr, entity, key)
    joins: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    join_params: list[Any] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    count: int = MAX_PAGE
    page: int = 1
    cookie_last: str | None = None
    top: int | None = None
    distinct: bool = False
    has_custom_order: bool = False
    link_order: bool = False  # ordered on a link-entity attribute: no paging cookie


class _Builder:
    def __init__(self, store: DataverseStore, user_id: str = "") -> None:
        self.store = store
        self.user_id = user_id  # the caller, for eq-userid / ne-userid
        self.n = 0

    def entity(self, name: str | None) -> Entity:
        e = self.store.schema.entity(name or "")
        if e is None:
            raise fetch_error(f"'{name}' entity doesn't exist.")
        return e

    def build(self, xml_text: str) -> FetchQuery:
        try:
            root = ET.fromstring(xml_text)
        except ET.ParseError as exc:
            raise fetch_error(f"Invalid XML in fetchXml: {exc}.") from exc
        if root.tag != "fetch":
            raise fetch_error("The root element of fetchXml must be 'fetch'.")
        node = root.find("entity")
        if node is None:
            raise fetch_error("The fetch element must contain an entity element.")
        q = FetchQuery(self.entity(node.get("name")))
        q.distinct = root.get("distinct", "false").lower() == "true"
        if root.get("top"):
            q.top = int(root.get("top"))
            if root.get("count") or root.get("page"):
                raise fetch_error("The top attribute can't be specified with paging attribute page or count.")
        q.count = min(int(root.get("count") or MAX_PAGE), MAX_PAGE)
        q.page = int(root.get("page") or 1)
        cookie = root.get("paging-cookie")
        if cookie:
            m = re.search(rf'<{q.entity.primary_id}\s+last="\{{?([0-9a-fA-F-]+)\}}?"', cookie)
            q.cookie_last = m.group(1).lower() if m else None
        self.walk(q, node, q.entity, "t0", top=True)
        by_id = f"t0.{_q(q.entity.primary_id)} ASC"
        q.has_custom_order = bool(q.order) and q.order != [by_id]  # ordered by the primary id = the default
        if by_id not in q.order:
            q.order.append(by_id)
        return q

    def walk(self, q: FetchQuery, node: ET.Element, e: Entity, alias: str, top: bool,
             out_alias: str = "") -> None:
        prefix = f"{out_alias}." if out_alias else ""
        for child in node:
            if child.tag == "attribute":
                name = child.get("name", "")
                if name not in e.attributes:
                    raise fetch_error(f"'{e.logical_name}' entity doesn't contain attribute with Name = '{name}'.")
                q.columns.append((alias, name, e, prefix + (child.get("alias") or name)))
            elif child.tag == "all-attributes":
                for name in e.attributes:
                    q.columns.append((alias, name, e, prefix + name))
            elif child.tag == "order":
                name = child.get("attribute", "")
                if name not in e.attributes:
                    raise fetch_error(f"'{e.logical_name}' entity doesn't contain attribute with Name = '{name}'.")
                desc = child.get("descending", "false").lower() == "true"
                q.order.append(f"{alias}.{_q(name)} {'DESC' if desc else 'ASC'}")
                q.link_order = q.link_order or not top
            elif child.tag == "filter":
                sql = self.filter(q, child, e, alias)
                if sql:
                    (q.where if top or not out_alias else q.where).append(sql)
            elif child.tag == "link-entity":
                self.link(q, child, e, alias)
        if top and not any(c[0] == alias for c in q.columns):
            q.columns.append((alias, e.primary_id, e, e.primary_id))
        if top and not any(c[1] == e.primary_id and c[0] == alias for c in q.columns):
            q.columns.append((alias, e.primary_id, e, e.primary_id))

    def link(self, q: FetchQuery, node: ET.Element, parent: Entity, parent_alias: str) -> None:
        e = self.entity(node.get("name"))
        self.n += 1
        alias = f"t{self.n}"
        frm, to = node.get("from", ""), node.get("to", "")
        if frm not in e.attributes or to not in parent.attributes:
            raise fetch_error(f"Invalid link-entity '{e.logical_name}': from='{frm}' to='{to}'.")
        outer = node.get("link-type", "inner") == "outer"
        out_alias = node.get("alias") or f"{e.logical_name}{self.n}"
        conds = [f"{alias}.{_q(frm)} = {parent_alias}.{_q(to)}"]
        inner_filters = []
        sub = FetchQuery(e)
        for child in node:
            if child.tag == "filter":
                sql = self.filter(sub, child, e, alias)
                if sql:
                    inner_filters.append(sql)
        if outer:
            conds += inner_filters
            q.join_params += sub.params
        else:
            q.where += inner_filters
            q.params += sub.params
        q.joins.append(f"{'LEFT OUTER' if outer else 'INNER'} JOIN {_q('e_' + e.logical_name)} AS {alias}"
                       f" ON {' AND '.join(conds)}")
        filtered = ET.Element("x")
        filtered.extend([c for c in node if c.tag != "filter"])
        self.walk(q, filtered, e, alias, top=False, out_alias=out_alias)

    def filter(self, q: FetchQuery, node: ET.Element, e: Entity, alias: str) -> str:
        joiner = " OR " if node.get("type", "and").lower() == "or" else " AND "
        parts = []
        for child in node:
            if child.tag == "condition":
                parts.append(self.condition(q, child, e, alias))
            elif child.tag == "filter":
                sub = self.filter(q, child, e, alias)
                if sub:
                    parts.append(sub)
        return f"({joiner.join(parts)})" if parts else ""

    def condition(self, q: FetchQuery, node: ET.Element, e: Entity, alias: str) -> str:
        name = node.get("attribute", "")
        attr = e.attributes.get(name)
        if attr is None:
            raise fetch_error(f"'{e.logical_name}' entity doesn't contain attribute with Name = '{name}'.")
        op = node.get("operator", "")
        col = f"{alias}.{_q(name)}"
        conv = FilterCompiler(e)
        values = [v.text or "" for v in node.findall("value")]
        value = node.get("value")
        if attr.type in LOOKUP_TYPES or attr.type == "Uniqueidentifier":
            value = value.strip("{}") if value else value
            values = [v.strip("{}") for v in values]
        collate = " COLLATE NOCASE" if attr.type in STRING_TYPES else ""
        if op == "null":
            return f"({col} IS NULL)"
        if op == "not-null":
            return f"({col} IS NOT NULL)"
        if op in _OPS:
            if value is None:
                raise fetch_error(f"Condition for attribute '{name}': operator '{op}' needs a value.")
            q.params.append(conv.value(attr, value))
            return f"({col}{collate} {_OPS[op]} ?)"
        if op in ("like", "not-like", "begins-with", "not-begin-with", "ends-with", "not-end-with"):
            text = value or ""
            if op in ("begins-with", "not-begin-with"):
                text = text + "%"
            elif op in ("ends-with", "not-end-with"):
                text = "%" + text
            q.params.append(text)
            return f"({col} {'NOT ' if op.startswith('not') else ''}LIKE ?)"
        if op in ("in", "not-in"):
            if not values:
                raise fetch_error(f"Condition for attribute '{name}': operator '{op}' needs value elements.")
            q.params.extend(conv.value(attr, v) for v in values)
            return f"({col}{collate} {'NOT ' if op == 'not-in' else ''}IN ({', '.join('?' * len(values))}))"
        if op in ("between", "not-between"):
            if len(values) != 2:
                raise fetch_error(f"Condition for attribute '{name}': operator '{op}' needs two values.")
            q.params.extend(conv.value(attr, v) for v in values)
            return f"({col} {'NOT ' if op == 'not-between' else ''}BETWEEN ? AND ?)"
        if op in ("eq-userid", "ne-userid"):
            q.params.append(self.user_id.lower())
            return f"({col} {'=' if op == 'eq-userid' else '<>'} ?)"
        if op == "last-x-days":
            try:
                days = int(value or "")
            except ValueError:
                raise fetch_error(f"Condition for attribute '{name}': operator '{op}' needs a whole number"
                                  " of days.") from None
            since = datetime.now(timezone.utc) - timedelta(days=days)
            q.params.append(since.strftime("%Y-%m-%dT%H:%M:%SZ"))
            return f"({col} >= ?)"
        if op in ("on-or-after", "on-or-before"):
            q.params.append(conv.value(attr, value))
            return f"({col} {'>=' if op == 'on-or-after' else '<='} ?)"
        raise fetch_error(f"The operator '{op}' is not supported by the sandbox.")


def run_fetch(store: DataverseStore, entity_set_entity: Entity, xml_text: str, *, cookies: bool = True,
              user_id: str = "", annotate: bool | Annotations = True) -> tuple[list[dict], bool, str | None]:
    """Run a FetchXML query: (rows as wire JSON without nulls, more records?, cookie or None).

    ``cookies=False`` answers as for a query the real service gives no paging cookie (a test
    knob: ``Records.fetch_cookies``).
    """
    q = _Builder(store, user_id).build(xml_text)
    if q.entity.logical_name != entity_set_entity.logical_name:
        raise fetch_error(f"The entity name specified in FetchXml '{q.entity.logical_name}' does not match the"
                          f" entity set '{entity_set_entity.entity_set}'.")
    select = []
    for i, (alias, name, e, _key) in enumerate(q.columns):
        select.append(f"{alias}.{_q(name)} AS c{i}")
        if e.attributes[name].type in LOOKUP_TYPES:
            select.append(f"{alias}.{_q(name + '__type')} AS c{i}t")
    select.append(f"t0.{_q('versionnumber')} AS _v" if "versionnumber" in q.entity.attributes else "NULL AS _v")
    where = list(q.where)
    params = list(q.join_params) + list(q.params)
    limit = q.top if q.top is not None else q.count
    offset = 0
    simple = q.top is None and q.cookie_last is None  # page numbers only: "simple" (legacy) paging
    if q.cookie_last and not q.has_custom_order:
        where.append(f"t0.{_q(q.entity.primary_id)} > ?")
        params.append(q.cookie_last)
    elif q.top is None:
        offset = (q.page - 1) * q.count
    if simple:  # can't return more than the first SIMPLE_PAGING_LIMIT rows of the query
        limit = max(0, min(limit, SIMPLE_PAGING_LIMIT - offset))
    sql = (f"SELECT {'DISTINCT ' if q.distinct else ''}{', '.join(select)} FROM {_q('e_' + q.entity.logical_name)} AS t0 "
           + " ".join(q.joins) + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" ORDER BY {', '.join(q.order)} LIMIT {limit + 1} OFFSET {offset}")
    raw_rows = store.execute(sql, params) if limit > 0 else []
    more = q.top is None and len(raw_rows) > limit and not (simple and offset + limit >= SIMPLE_PAGING_LIMIT)
    raw_rows = raw_rows[:limit]
    out = []
    pk_index = next(i for i, c in enumerate(q.columns) if c[0] == "t0" and c[1] == q.entity.primary_id)
    for raw in raw_rows:
        cols = dict(zip(_names(q), raw))
        row: dict[str, Any] = {}
        if cols.get("_v") is not None:
            row["@odata.etag"] = f'W/"{cols["_v"]}"'
        for i, (alias, name, e, key) in enumerate(q.columns):
            value = cols[f"c{i}"]
            if value is None:
                continue
            rawrow = {name: value, "versionnumber": None}
            if e.attributes[name].type in LOOKUP_TYPES:
                rawrow[name + "__type"] = cols.get(f"c{i}t")
            wire = to_wire(e, rawrow, [name], annotate=annotate, include_nulls=False)
            wire.pop(e.primary_id, None) if name != e.primary_id else None
            for k, v in wire.items():
                if k == "@odata.etag":
                    continue
                if alias != "t0":
                    k = key.rsplit(".", 1)[0] + "." + k if "." in key else k
                row[k] = v
        out.append(row)
    cookie = None
    if more and not q.link_order and cookies:
        last = raw_rows[-1][pk_index] if raw_rows else ""
        first = raw_rows[0][pk_index] if raw_rows else ""
        inner = (f'<cookie page="{q.page}"><{q.entity.primary_id} last="{{{str(last).upper()}}}"'
                 f' first="{{{str(first).upper()}}}" /></cookie>')
        cookie = (f'<cookie pagenumber="{q.page + 1}" pagingcookie="{quote(quote(inner, safe=""), safe="")}"'
                  ' istracking="False" />')
    return out, more, cookie


def _names(q: FetchQuery) -> list[str]:
    names = []
    for i, (_a, name, e, _k) in enumerate(q.columns):
        names.append(f"c{i}")
        if e.attributes[name].type in LOOKUP_TYPES:
            names.append(f"c{i}t")
    names.append("_v")
    return names
