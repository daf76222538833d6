"""``$expand`` for the Dataverse sandbox.

``$expand=nav($select=a,b;$filter=...;$orderby=...;$top=n),other`` on collections
and single records: a single-valued navigation property (a lookup) becomes the
related record or null, a collection-valued one (N:N, 1:N) an array of at most
5000 related records. Nested ``$expand`` is not supported (nor is it for N:N in
Dataverse).
"""

from __future__ import annotations

from typing import Any

from connector.sandbox.dataverse.http import split_outside
from connector.sandbox.dataverse.navigation import collection_base
from connector.sandbox.dataverse.odata import bad_query, compile_filter, parse_orderby, parse_select
from connector.sandbox.dataverse.schema import Entity
from connector.sandbox.dataverse.store import DataverseStore, to_wire, quote_ident as _q

MAX_EXPANDS = 15
MAX_EXPANDED_ROWS = 5000


def _split_top(text: str, sep: str) -> list[str]:
    return [p.strip() for p in split_outside(text, sep) if p.strip()]


def parse_expand(text: str) -> list[tuple[str, dict[str, str]]]:
    items = []
    for part in _split_top(text, ","):
        name, _, rest = part.partition("(")
        options: dict[str, str] = {}
        if rest:
            if not rest.endswith(")"):
                raise bad_query(f"Syntax error in '$expand={text}'.")
            for opt in _split_top(rest[:-1], ";"):
                key, _, value = opt.partition("=")
                if key not in ("$select", "$filter", "$orderby", "$top"):
                    raise bad_query(f"The query option '{key}' is not supported inside $expand.")
                options[key] = value
        items.append((name.strip(), options))
    if len(items) > MAX_EXPANDS:
        raise bad_query(f"Number of expand options exceeds the limit of {MAX_EXPANDS}.")
    return items


def expand_rows(store: DataverseStore, e: Entity, raws: list[dict], wires: list[dict], text: str,
                annotate: bool = False) -> None:
    """Add the expanded navigation properties to ``wires`` (the wire form of ``raws``)."""
    for name, options in parse_expand(text):
        found = e.nav(name)
        if found is not None:
            attr, target = found
            te = store.schema.entity(target)
            select = parse_select(te, options.get("$select"))
            for raw, wire in zip(raws, wires):
                related = None
                if raw.get(attr.logical_name) and raw.get(attr.logical_name + "__type") == target:
                    hit = store.get_raw(te, raw[attr.logical_name])
                    related = to_wire(te, hit, select, annotate=annotate) if hit else None
                wire[name] = related
            continue
        for raw, wire in zip(raws, wires):
            coll = collection_base(store, e, name, raw[e.primary_id])
            if coll is None:
                raise bad_query(f"Could not find a property named '{name}' on type"
                                f" 'Microsoft.Dynamics.CRM.{e.logical_name}'.")
            other, base, params, _ = coll
            wire[name] = _collection(store, other, base, params, options, annotate)


def _collection(store: DataverseStore, other: Entity, base: str, params: tuple, options: dict[str, str],
                annotate: bool) -> list[dict[str, Any]]:
    where, args = [base], list(params)
    if options.get("$filter"):
        sql, fparams = compile_filter(other, options["$filter"], alias="t0")
        where.append(sql)
        args += fparams
    order = parse_orderby(other, options.get("$orderby"), alias="t0") + ["t0.rowid"]
    limit = min(int(options.get("$top") or MAX_EXPANDED_ROWS), MAX_EXPANDED_ROWS)
    cols = store.columns(other)
    rows = store.execute(f"SELECT {', '.join('t0.' + _q(c) for c in cols)} FROM {_q('e_' + other.logical_name)}"
                         f" AS t0 WHERE {' AND '.join(where)} ORDER BY {', '.join(order)} LIMIT {limit}", args)
    select = parse_select(other, options.get("$select"))
    return [to_wire(other, dict(zip(cols, r)), select, annotate=annotate) for r in rows]
