"""Retrieve for the Marketing Cloud sandbox: property checks, filters, 2,500-row pages.

A Retrieve becomes a cursor: a generator of rendered ``<Results>`` rows. The first
reply's ``RequestID`` names the whole result set, as on the real service: every page
of it carries that same RequestID, and each ``ContinueRequest`` with it gets the next
page. So a continuation repeated after a lost reply gets the page after the lost one:
a client must not retry a continuation blindly (the connector starts the Retrieve
over instead). Cursors idle for ``CURSOR_SECONDS`` are forgotten.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from itertools import islice
from typing import Any, Callable, Iterator
from xml.sax.saxutils import escape

import re

from connector.sandbox.marketing_cloud import events as ev
from connector.sandbox.marketing_cloud.dataext import row_object
from connector.sandbox.marketing_cloud.filters import FilterError, compile_filter, key_hint
from connector.sandbox.marketing_cloud.properties import RETRIEVABLE_OBJECTS, filterable, retrievable
from connector.sandbox.marketing_cloud.soap import Obj, SoapFault, message, render_fields
from connector.sandbox.marketing_cloud.store import EspStore
from connector.sandbox.marketing_cloud.values import as_int

PAGE_SIZE = 2500
MAX_CURSORS = 2000
CURSOR_SECONDS = 20 * 60
RETRIEVABLE = RETRIEVABLE_OBJECTS


class _Cursor:
    """One Retrieve's remaining rows."""

    def __init__(self, rows: Iterator[str], page_size: int) -> None:
        self.rows = rows
        self.page_size = page_size
        self.pending: str | None = None
        self.lock = threading.Lock()


class Retriever:
    """Answers RetrieveRequestMsg bodies from the store."""

    def __init__(self, store: EspStore) -> None:
        self.store = store
        self._cursors: OrderedDict[str, tuple[_Cursor, float]] = OrderedDict()
        self._lock = threading.Lock()

    def retrieve(self, request: Obj, request_id: str) -> str:
        rr = request.get("RetrieveRequest")
        if not isinstance(rr, Obj):
            raise SoapFault("soap:Client", "RetrieveRequest is required.")
        continue_id = rr.text("ContinueRequest")
        if continue_id:
            return self._continue(continue_id, request_id)
        obj_type = rr.text("ObjectType")
        properties = [p for p in rr.all("Properties") if isinstance(p, str) and p]
        if obj_type.startswith("DataExtensionObject"):
            de_rows = self._de_rows(obj_type, properties, rr)
            if isinstance(de_rows, str):
                return retrieve_msg(de_rows, request_id, "")
            return self._page(_Cursor(de_rows, min(PAGE_SIZE, _batch(rr))), request_id)
        problem = check_request(obj_type, properties)
        if problem:
            return retrieve_msg(problem, request_id, "")
        try:
            predicate = compile_filter(rr.get("Filter"), filterable(obj_type))
        except (FilterError, ValueError) as exc:
            text = str(exc)
            return retrieve_msg(text if text.startswith("Error") else f"Error: {text}", request_id, "")
        rows = self._rows(obj_type, rr.get("Filter"), predicate, properties)
        return self._page(_Cursor(rows, min(PAGE_SIZE, _batch(rr))), request_id)

    def _de_rows(self, obj_type: str, properties: list[str], rr: Obj) -> Iterator[str] | str:
        """The rows of ``DataExtensionObject[<name>]``, or the OverallStatus error text."""
        match = re.fullmatch(r"DataExtensionObject\[(.+)\]", obj_type)
        if match is None:
            return ("Error: The Request ObjectType 'DataExtensionObject' needs the data extension in brackets: "
                    "DataExtensionObject[<name>].")
        name = match.group(1)
        rec = self.store.data_extension(name=name) or self.store.data_extension(customer_key=name)
        if rec is None:
            return f"Error: The data extension '{name}' does not exist."
        if not properties:
            return f"Error: The Request Properties are required for {obj_type}."
        bad = [p for p in properties if rec.field(p) is None]
        if bad:
            return f"Error: The Request Property(s) {', '.join(bad)} do not match with the fields of {obj_type} retrieve"
        if _uses_like(rr.get("Filter")):
            return "Error: The LIKE operator is not supported in filters of data extension objects."
        try:
            predicate = compile_filter(rr.get("Filter"), frozenset(f.name for f in rec.fields))
        except (FilterError, ValueError) as exc:
            text = str(exc)
            return text if text.startswith("Error") else f"Error: {text}"
        head = '<Results xsi:type="DataExtensionObject">'
        return (f"{head}{render_fields('DataExtensionObject', row_object(rec, row, properties))}</Results>"
                for row in self.store.iter_de_rows(rec) if predicate(row))

    def _rows(self, obj_type: str, filter_part: Any, predicate: Callable[[dict], bool],
              properties: list[str]) -> Iterator[str]:
        if obj_type in ev.EVENT_OBJECTS:
            now_ts = self.store.clock.now_ts()
            self.store.apply_due_changes()
            with self.store.lock:
                blocks = list(self.store.blocks)
            return ev.iter_event_rows(blocks, obj_type, filter_part, predicate, properties, now_ts)
        keys = key_hint(filter_part, "SubscriberKey") if obj_type in ("Subscriber", "ListSubscriber") else None
        lists = key_hint(filter_part, "ListID") if obj_type == "ListSubscriber" else None
        list_ids = [as_int(v) for v in lists] if lists is not None else None
        return self._object_rows(obj_type, predicate, properties, keys, list_ids)

    def _object_rows(self, obj_type: str, predicate: Callable[[dict], bool], properties: list[str],
                     keys: list[str] | None, list_ids: list[int] | None = None) -> Iterator[str]:
        plain = [p for p in properties if "." not in p]
        nested: dict[str, set[str]] = {}
        for p in properties:
            if "." in p:
                head, _, tail = p.partition(".")
                nested.setdefault(head, set()).add(tail)
        only = set(plain) | set(nested)
        if obj_type == "Subscriber":  # profile attributes come with every subscriber, asked for or not
            only.add("Attributes")
        head = f'<Results xsi:type="{obj_type}">'
        for row in self.store.rows(obj_type, keys, list_ids):
            if predicate(row):
                values = _narrow_nested(row, nested, plain) if nested else row
                yield f"{head}{render_fields(obj_type, values, only)}</Results>"

    def _page(self, cursor: _Cursor, request_id: str) -> str:
        rows = [cursor.pending] if cursor.pending is not None else []
        cursor.pending = None
        rows.extend(islice(cursor.rows, cursor.page_size - len(rows)))
        more = False
        if len(rows) == cursor.page_size:
            cursor.pending = next(cursor.rows, None)
            more = cursor.pending is not None
        if more:
            now = time.monotonic()
            with self._lock:
                self._cursors[request_id] = (cursor, now)
                while self._cursors and (len(self._cursors) > MAX_CURSORS
                                         or next(iter(self._cursors.values()))[1] < now - CURSOR_SECONDS):
                    self._cursors.popitem(last=False)
        return retrieve_msg("MoreDataAvailable" if more else "OK", request_id, "".join(rows))

    def _continue(self, continue_id: str, request_id: str) -> str:
        with self._lock:
            entry = self._cursors.pop(continue_id, None)
        if entry is None:
            return retrieve_msg(f"Error: ContinueRequest '{continue_id}' is not valid or has expired.", request_id, "")
        cursor = entry[0]
        with cursor.lock:  # the next page of the set, under the set's one RequestID
            return self._page(cursor, continue_id)


def check_request(obj_type: str, properties: list[str]) -> str:
    """The OverallStatus error text for a bad object type or property list, or ''."""
    if obj_type not in RETRIEVABLE:
        return f"Error: The Request ObjectType '{obj_type}' is not retrievable."
    if not properties:
        return f"Error: The Request Properties are required for {obj_type}."
    allowed = retrievable(obj_type)
    bad = [p for p in properties if p not in allowed]
    if bad:
        return f"Error: The Request Property(s) {', '.join(bad)} do not match with the fields of {obj_type} retrieve"
    return ""


def _narrow_nested(row: dict, nested: dict[str, set[str]], plain: list[str]) -> dict:
    """Keep only the requested children of nested objects ("Email.ID" → Email with ID)."""
    values = dict(row)
    for name, subs in nested.items():
        if name in plain:
            continue
        value = row.get(name)
        if isinstance(value, tuple):
            values[name] = (value[0], {k: v for k, v in value[1].items() if k in subs})
        elif isinstance(value, list):
            values[name] = [(v[0], {k: x for k, x in v[1].items() if k in subs}) for v in value]
    return values


def retrieve_msg(status: str, request_id: str, rows: str) -> str:
    return message("RetrieveResponseMsg", f"<OverallStatus>{escape(status)}</OverallStatus>"
                   f"<RequestID>{request_id}</RequestID>{rows}")


def _positive_int(value: Any) -> int:
    return max(0, as_int(value))


def _batch(rr: Obj) -> int:
    """RetrieveOptions.BatchSize ("the API uses the lesser of the two values"), else the page size."""
    options = rr.get("Options")
    return _positive_int(options.get("BatchSize") if isinstance(options, Obj) else None) or PAGE_SIZE


def _uses_like(part: Any) -> bool:
    if not isinstance(part, Obj):
        return False
    if part.text("SimpleOperator") == "like":
        return True
    return any(_uses_like(part.get(name)) for name in ("LeftOperand", "RightOperand"))
