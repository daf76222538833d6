"""Records over the Web API: queries with paging and change tracking, and writes.

Query paging: without ``$orderby`` pages continue after the last row (keyset), with
it by position; either way the ``$skiptoken`` is an opaque cookie in the real shape.
Change tracking pages by ``versionnumber`` up to a snapshot version taken on the
first page, so a change made while a client pages is delivered next time, never
lost; the ``$deltatoken`` is ``<version>!<MM/dd/yyyy HH:mm:ss>`` as in Dataverse.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any
from urllib.parse import quote, unquote, urlencode

from connector.sandbox.dataverse.http import Request, Response, parse_key, parse_query, parse_segment, split_path
from connector.sandbox.dataverse.odata import bad_query, compile_filter, parse_orderby, parse_select
from connector.sandbox.dataverse.schema import FLOAT_TYPES, INT_TYPES, LOOKUP_TYPES, MANY_TO_MANY, ONE_TO_MANY, STRING_TYPES, Entity
from connector.sandbox.dataverse.store import DataverseStore, StoreError, to_wire

MAX_PAGE_SIZE = 5000
COUNT_LIMIT = 5000
CHANGE_TRACKING_DAYS = 7
"""Days a ``$deltatoken`` stays valid (``organization.expirechangetrackingindays``)."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def not_found(e: Entity, rid: Any) -> StoreError:
    if isinstance(rid, dict):
        keys = ",".join(f"{k}:{v}" for k, v in rid.items())
        return StoreError(404, "0x80040217", f"A record with the specified key values does not exist in"
                          f" {e.logical_name} entity ({keys}).")
    return StoreError(404, "0x80040217", f"{e.logical_name} With Id = {rid} Does Not Exist")


def payload_error(e: Entity, text: str) -> StoreError:
    return StoreError(400, "0x80048d19", f"Error identified in Payload provided by the user for Entity :"
                      f"'{e.entity_set}', For more information on this error please follow this help link"
                      f" https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException :"
                      f" Microsoft.OData.ODataException: {text}")


def _encode_token(state: dict) -> str:
    inner = base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()
    page = state.get("p", 1)
    return (f'<cookie pagenumber="{page + 1}" pagingcookie="{quote(quote(inner, safe=""), safe="")}"'
            ' istracking="{}" />'.format("True" if state.get("t") else "False"))


def _decode_token(token: str) -> dict:
    m = re.search(r'pagingcookie="([^"]*)"', token)
    try:
        return json.loads(base64.urlsafe_b64decode(unquote(unquote(m.group(1)))))
    except (AttributeError, ValueError, json.JSONDecodeError) as exc:
        raise StoreError(400, "0x80060888", "The $skiptoken is not valid. Follow @odata.nextLink as it is"
                         " returned.") from exc


class Records:
    """Record operations of one organization."""

    def __init__(self, store: DataverseStore, org_url: str) -> None:
        self.store = store
        self.org_url = org_url
        self.change_tracking_days = CHANGE_TRACKING_DAYS
        self.min_delta_version = 0

    def api(self, req: Request) -> str:
        return f"{self.org_url}/api/data/{req.version}/"

    # -- addressing -----------------------------------------------------------------
    def resolve_key(self, e: Entity, key: str) -> tuple[dict | None, Any]:
        """(stored row or None, id-or-key-dict)."""
        parsed = parse_key(key)
        if isinstance(parsed, str):
            return self.store.get_raw(e, parsed), parsed
        if list(parsed) == [e.primary_id]:
            rid = str(parsed[e.primary_id]).lower()
            return self.store.get_raw(e, rid), rid
        for k in e.keys.values():
            if set(k.attributes) == set(parsed):
                values = {}
                for name in k.attributes:
                    attr = e.attributes[name]
                    values[name] = str(parsed[name]).lower() if attr.type in LOOKUP_TYPES else parsed[name]
                return self.store.find_by_key(e, values), parsed
        raise StoreError(400, "0x80060888", f"The key in the request URI is not valid for resource"
                         f" 'Microsoft.Dynamics.CRM.{e.logical_name}'. Ensure that the names and number of key"
                         f" properties match the declared or alternate key properties for the resource"
                         f" 'Microsoft.Dynamics.CRM.{e.logical_name}'.")

    def entity_url(self, req: Request, e: Entity, rid: str) -> str:
        return f"{self.api(req)}{e.entity_set}({rid})"

    def parse_ref(self, req: Request, ref: str) -> tuple[Entity, dict]:
        """Resolve an ``@odata.bind`` / ``@odata.id`` value to (table, stored row)."""
        ref = ref.strip()
        m = re.match(r"^\$(\w+)$", ref)
        if m:
            if m.group(1) not in req.content_ids:
                raise StoreError(400, "0x80060888", f"Content-ID Reference: '{ref}' does not exist in the batch"
                                 " context.")
            ref = req.content_ids[m.group(1)]
        m = re.search(r"/api/data/v9\.\d/(.*)$", ref)
        path = m.group(1) if m else ref.lstrip("/")
        segs = split_path(unquote(path))
        if len(segs) != 1:
            raise StoreError(400, "0x80060888", f"The URL '{ref}' is not a valid entity reference.")
        name, key = parse_segment(segs[0])
        e = self.store.entity_for_set(name)
        if key is None:
            raise StoreError(400, "0x80060888", f"The URL '{ref}' is not a valid entity reference.")
        row, rid = self.resolve_key(e, key)
        if row is None:
            raise not_found(e, rid)
        return e, row

    # -- payloads -----------------------------------------------------------------------
    def convert(self, req: Request, e: Entity, body: Any, *, creating: bool) -> tuple[dict, list]:
        """Wire JSON -> (store row, deep inserts [(child entity, lookup attr, rows)])."""
        if not isinstance(body, dict):
            raise payload_error(e, "A JSON object was expected as the request body.")
        row: dict[str, Any] = {}
        deep: list = []
        for name, value in body.items():
            if name.startswith("@odata.") or name.startswith("@"):
                continue
            if name.endswith("@odata.bind"):
                nav = name[: -len("@odata.bind")]
                found = e.nav(nav)
                if found is None:
                    raise payload_error(e, f"An undeclared property '{nav}' which only has property annotations"
                                        " in the payload but no property value was found in the payload. In"
                                        " OData, only declared navigation properties and declared named streams"
                                        " can be represented as properties without values.")
                attr, target = found
                if value is None:
                    row[attr.logical_name], row[attr.logical_name + "__type"] = None, None
                    continue
                te, trow = self.parse_ref(req, str(value))
                if te.logical_name != target:
                    raise payload_error(e, f"The navigation property '{nav}' expects a '{target}' reference,"
                                        f" not '{te.logical_name}'.")
                row[attr.logical_name] = trow[te.primary_id]
                row[attr.logical_name + "__type"] = te.logical_name
                continue
            if "@" in name:
                continue
            rel = ONE_TO_MANY.get((e.logical_name, name))
            if rel is not None and isinstance(value, list):
                deep.append((self.store.schema.entity(rel[0]), rel[1], value))
                continue
            attr = e.attributes.get(name)
            if attr is None or attr.type in LOOKUP_TYPES:
                raise payload_error(e, f"The property '{name}' does not exist on type"
                                    f" 'Microsoft.Dynamics.CRM.{e.logical_name}'. Make sure to only use property"
                                    " names that are defined by the type or mark the type as open type.")
            if attr.readonly and not (creating and name == e.primary_id):
                continue
            row[name] = self.check_value(e, attr, value)
        return row, deep

    def check_value(self, e: Entity, attr, value: Any) -> Any:
        if value is None:
            return None
        t = attr.type
        if t in STRING_TYPES:
            if not isinstance(value, str):
                raise payload_error(e, f"Cannot convert a primitive value to the expected type 'Edm.String'"
                                    f" for '{attr.logical_name}'.")
            if attr.max_length and len(value) > attr.max_length:
                raise StoreError(400, "0x80044331", f"A validation error occurred.  The length of the"
                                 f" '{attr.logical_name}' attribute of the '{e.logical_name}' entity exceeded the"
                                 f" maximum allowed length of '{attr.max_length}'.")
            return value
        if t in INT_TYPES:
            if isinstance(value, bool) or not isinstance(value, int):
                raise payload_error(e, f"Cannot convert the literal '{value}' to the expected type 'Edm.Int32'.")
            if t == "Picklist" and attr.options and value not in attr.options:
                raise StoreError(400, "0x8004431a", f"{attr.logical_name}: Value {value} is outside the valid"
                                 " range of option values.")
            return value
        if t == "Boolean":
            if not isinstance(value, bool):
                raise payload_error(e, f"Cannot convert the literal '{value}' to the expected type 'Edm.Boolean'.")
            return 1 if value else 0
        if t in FLOAT_TYPES:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise payload_error(e, f"Cannot convert the literal '{value}' to the expected type 'Edm.Decimal'.")
            return float(value)
        if t == "DateTime":
            try:
                parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError as exc:
                raise payload_error(e, f"Cannot convert the literal '{value}' to the expected type"
                                    " 'Edm.DateTimeOffset'.") from exc
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            return parsed.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if t == "Uniqueidentifier":
            if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F-]{36}", value):
                raise payload_error(e, f"Cannot convert the literal '{value}' to the expected type 'Edm.Guid'.")
            return value.lower()
        return value

    def create_row(self, req: Request, e: Entity, body: Any, extra: dict | None = None) -> str:
        row, deep = self.convert(req, e, body, creating=True)
        row.update(extra or {})
        with self.store.transaction():
            try:
                rid = self.store.insert_many(e, [row])[0]
            except StoreError as exc:
                if exc.status == 412:
                    raise StoreError(412, "0x80040237", "A record with matching key values already exists.") from exc
                raise
            for child, lookup, rows in deep:
                for child_body in rows:
                    self.create_row(req, child, child_body, {lookup: rid, lookup + "__type": e.logical_name})
        return rid

    def representation(self, req: Request, e: Entity, rid: str, status: int) -> Response:
        raw = self.store.get_raw(e, rid)
        select = parse_select(e, req.query.get("$select"))
        body = {"@odata.context": f"{self.api(req)}$metadata#{e.entity_set}"
                + (f"({','.join(select)})" if select else "") + "/$entity"}
        body.update(to_wire(e, raw, select, annotate=self.annotate(req)))
        return Response.json(status, body, self.entity_headers(req, e, rid) + [
            ("Preference-Applied", "return=representation")])

    def entity_headers(self, req: Request, e: Entity, rid: str) -> list[tuple[str, str]]:
        url = self.entity_url(req, e, rid)
        return [("OData-EntityId", url), ("Location", url)]

    def annotate(self, req: Request) -> bool:
        return "odata.include-annotations" in req.prefer

    # -- single records ---------------------------------------------------------------
    def post(self, req: Request, e: Entity) -> Response:
        rid = self.create_row(req, e, req.json())
        if req.prefer.get("return") == "representation":
            return self.representation(req, e, rid, 201)
        return Response.empty(204, self.entity_headers(req, e, rid))

    def get_one(self, req: Request, e: Entity, key: str) -> Response:
        row, rid = self.resolve_key(e, key)
        if row is None:
            raise not_found(e, rid)
        etag = f'W/"{row.get("versionnumber")}"'
        if req.headers.get("if-none-match") == etag and not self.annotate(req):
            return Response.empty(304, [("ETag", etag)])
        select = parse_select(e, req.query.get("$select"))
        body = {"@odata.context": f"{self.api(req)}$metadata#{e.entity_set}"
                + (f"({','.join(select)})" if select else "") + "/$entity"}
        body.update(to_wire(e, row, select, annotate=self.annotate(req)))
        return Response.json(200, body, [("ETag", etag)])

    def check_preconditions(self, req: Request, e: Entity, row: dict | None, rid: Any) -> None:
        if_match = req.headers.get("if-match")
        if_none = req.headers.get("if-none-match")
        if if_match:
            if row is None:
                raise not_found(e, rid)
            if if_match != "*" and if_match != f'W/"{row.get("versionnumber")}"':
                raise StoreError(412, "0x80060882", "The version of the existing record doesn't match the"
                                 " RowVersion property provided.")
        if if_none == "*" and row is not None:
            raise StoreError(412, "0x80040237", "A record with matching key values already exists.")

    def patch(self, req: Request, e: Entity, key: str) -> Response:
        row, rid = self.resolve_key(e, key)
        self.check_preconditions(req, e, row, rid)
        body = req.json()
        if row is None:  # upsert: create with the id / key values from the URL
            extra = {e.primary_id: rid} if isinstance(rid, str) else {
                k: (self.check_value(e, e.attributes[k], v) if e.attributes[k].type not in LOOKUP_TYPES else v)
                for k, v in rid.items()}
            new_id = self.create_row(req, e, body, extra)
            if req.prefer.get("return") == "representation":
                return self.representation(req, e, new_id, 201)
            return Response.empty(204, self.entity_headers(req, e, new_id))
        changes, deep = self.convert(req, e, body, creating=False)
        rid = row[e.primary_id]
        with self.store.transaction():
            if changes:
                self.store.update(e, rid, changes)
            for child, lookup, rows in deep:
                for child_body in rows:
                    self.create_row(req, child, child_body, {lookup: rid, lookup + "__type": e.logical_name})
        if req.prefer.get("return") == "representation":
            return self.representation(req, e, rid, 200)
        return Response.empty(204, self.entity_headers(req, e, rid))

    def delete(self, req: Request, e: Entity, key: str) -> Response:
        row, rid = self.resolve_key(e, key)
        if row is None:
            raise not_found(e, rid)
        self.check_preconditions(req, e, row, rid)
        self.store.delete(e, row[e.primary_id])
        return Response.empty(204)

    def property(self, req: Request, e: Entity, key: str, name: str) -> Response:
        row, rid = self.resolve_key(e, key)
        if row is None:
            raise not_found(e, rid)
        attr = e.by_wire_name(name) or e.attributes.get(name)
        if attr is None:
            raise bad_query(f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM."
                            f"{e.logical_name}'.")
        if req.method == "GET":
            value = to_wire(e, row, [name])[attr.wire_name]
            if value is None:
                return Response.empty(204)
            return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#{e.entity_set}({rid})/{name}",
                                       "value": value})
        if req.method == "PUT":
            self.store.update(e, row[e.primary_id], {name: self.check_value(e, attr, req.json().get("value"))})
        elif req.method == "DELETE":
            self.store.update(e, row[e.primary_id], {attr.logical_name: None})
        else:
            raise StoreError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed here.")
        return Response.empty(204)

    # -- collections --------------------------------------------------------------------
    def query(self, req: Request, e: Entity, base: str = "", base_params: tuple = (),
              context: str | None = None) -> Response:
        """GET a collection (``base`` restricts it, e.g. to a list's members)."""
        if "fetchXml" in req.query:
            return self.fetch(req, e)
        if "$skip" in req.query:
            raise StoreError(400, "0x80060888", "The query parameter $skip is not supported.")
        if "$expand" in req.query and not ("$deltatoken" in req.query or "odata.track-changes" in req.prefer):
            raise StoreError(501, "0x8004800d", "$expand is not implemented by the sandbox (the real service"
                             " supports it); read the related records with their own query.")
        if "$deltatoken" in req.query or "odata.track-changes" in req.prefer:
            return self.delta(req, e)
        select = parse_select(e, req.query.get("$select"))
        where, params = [], list(base_params)
        if base:
            where.append(base)
        if req.query.get("$filter"):
            sql, fparams = compile_filter(e, req.query["$filter"], alias="t0")
            where.append(sql)
            params += fparams
        order = parse_orderby(e, req.query.get("$orderby"), alias="t0")
        pref_size = req.prefer.get("odata.maxpagesize")
        size = MAX_PAGE_SIZE
        if pref_size:
            try:
                size = max(1, min(int(pref_size), MAX_PAGE_SIZE))
            except ValueError:
                raise StoreError(400, "0x80060888", f"Invalid odata.maxpagesize '{pref_size}'.")
        top = req.query.get("$top")
        if top and not pref_size:
            try:
                size = int(top)
            except ValueError:
                raise bad_query(f"Invalid value '{top}' for $top.")
            if size > MAX_PAGE_SIZE:
                size = MAX_PAGE_SIZE
        state = _decode_token(req.query["$skiptoken"]) if "$skiptoken" in req.query else {"p": 1}
        cols = self.store.columns(e)
        page_where = list(where)
        page_params = list(params)
        offset = 0
        if order:
            offset = int(state.get("o", 0))
        elif "r" in state:
            page_where.append("t0.rowid > ?")
            page_params.append(int(state["r"]))
        sql = (f"SELECT t0.rowid, {', '.join('t0.' + _q(c) for c in cols)} FROM {_q('e_' + e.logical_name)} AS t0"
               + (f" WHERE {' AND '.join(page_where)}" if page_where else "")
               + f" ORDER BY {', '.join(order + ['t0.rowid'])} LIMIT {size + 1} OFFSET {offset}")
        rows = self.store.execute(sql, page_params)
        more = len(rows) > size and not (top and not pref_size)
        rows = rows[:size]
        ctx = context or f"{e.entity_set}" + (f"({','.join(select)})" if select else "")
        body: dict[str, Any] = {"@odata.context": f"{self.api(req)}$metadata#{ctx}"}
        if req.query.get("$count") == "true":
            total = self.store.execute(
                f"SELECT count(*) FROM {_q('e_' + e.logical_name)} AS t0"
                + (f" WHERE {' AND '.join(where)}" if where else ""), params)[0][0]
            body["@odata.count"] = min(total, COUNT_LIMIT)
            if self.annotate(req):
                body["@Microsoft.Dynamics.CRM.totalrecordcount"] = min(total, COUNT_LIMIT)
                body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = total > COUNT_LIMIT
        annotate = self.annotate(req)
        body["value"] = [to_wire(e, dict(zip(cols, r[1:])), select, annotate=annotate) for r in rows]
        headers = []
        if pref_size:
            headers.append(("Preference-Applied", f"odata.maxpagesize={size}"))
        if more:
            nxt = {"p": state.get("p", 1) + 1}
            if order:
                nxt["o"] = offset + size
            else:
                nxt["r"] = rows[-1][0]
            body["@odata.nextLink"] = self.next_link(req, _encode_token(nxt))
        return Response.json(200, body, headers)

    def next_link(self, req: Request, token: str, param: str = "$skiptoken") -> str:
        query = {k: v for k, v in req.query.items() if k not in ("$skiptoken", "$deltatoken")}
        query[param] = token
        return f"{self.api(req)}{req.path}?" + urlencode(query, quote_via=quote, safe="$,()'")

    def count(self, req: Request, e: Entity) -> Response:
        where, params = "", []
        if req.query.get("$filter"):
            where, params = compile_filter(e, req.query["$filter"], alias="t0")
        total = self.store.execute(f"SELECT count(*) FROM {_q('e_' + e.logical_name)} AS t0"
                                   + (f" WHERE {where}" if where else ""), params)[0][0]
        return Response(200, [("Content-Type", "text/plain; charset=utf-8"), ("OData-Version", "4.0")],
                        str(min(total, COUNT_LIMIT)).encode())

    # -- FetchXML -------------------------------------------------------------------------
    def fetch(self, req: Request, e: Entity) -> Response:
        from connector.sandbox.dataverse.fetchxml import run_fetch

        rows, more, cookie = run_fetch(self.store, e, req.query["fetchXml"])
        body: dict[str, Any] = {"@odata.context": f"{self.api(req)}$metadata#{e.entity_set}", "value": rows}
        wanted = req.prefer.get("odata.include-annotations", "")
        if more and ("*" in wanted or "fetchxmlpagingcookie" in wanted or "morerecords" in wanted):
            body["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"] = cookie
            body["@Microsoft.Dynamics.CRM.morerecords"] = True
        return Response.json(200, body)

    # -- change tracking --------------------------------------------------------------------
    def delta(self, req: Request, e: Entity) -> Response:
        for option in ("$filter", "$orderby", "$expand", "$top"):
            if option in req.query:
                raise StoreError(400, "0x80060888", f'The "{option}" query parameter isn\'t supported when'
                                 " Change Tracking is enabled.")
        if not e.change_tracking:
            raise StoreError(400, "0x80048d19", f"Change tracking is not enabled for entity {e.logical_name}.")
        select = parse_select(e, req.query.get("$select"))
        pref_size = req.prefer.get("odata.maxpagesize")
        size = max(1, min(int(pref_size), MAX_PAGE_SIZE)) if pref_size and pref_size.isdigit() else MAX_PAGE_SIZE
        if "$skiptoken" in req.query:
            state = _decode_token(req.query["$skiptoken"])
        else:
            since = self.parse_delta_token(req.query["$deltatoken"]) if "$deltatoken" in req.query else 0
            state = {"p": 1, "t": 1, "s": since, "n": self.store.version, "v": since, "d": since}
        since, snap = state["s"], state["n"]
        cols = self.store.columns(e)
        rows = self.store.execute(
            f"SELECT {', '.join(_q(c) for c in cols)} FROM {_q('e_' + e.logical_name)}"
            " WHERE versionnumber > ? AND versionnumber <= ? ORDER BY versionnumber LIMIT ?",
            (state["v"], snap, size + 1))
        value = [to_wire(e, dict(zip(cols, r)), select, annotate=self.annotate(req)) for r in rows[:size]]
        more = len(rows) > size
        last_v = rows[min(len(rows), size) - 1][cols.index("versionnumber")] if rows[:size] else state["v"]
        last_d = state["d"]
        if not more and since > 0:
            room = size - len(value)
            deleted = self.store.execute(
                "SELECT id, version FROM _deleted WHERE entity = ? AND version > ? AND version <= ?"
                " ORDER BY version LIMIT ?", (e.logical_name, state["d"], snap, room + 1))
            for rid, _version in deleted[:room]:
                value.append({"@odata.context": f"{self.api(req)}$metadata#{e.entity_set}/$deletedEntity",
                              "id": rid, "reason": "deleted"})
            if deleted[:room]:
                last_d = deleted[:room][-1][1]
            more = len(deleted) > room
        ctx = f"{e.entity_set}" + (f"({','.join(select)})" if select else "")
        body: dict[str, Any] = {"@odata.context": f"{self.api(req)}$metadata#{ctx}"
                                + ("/$delta" if since > 0 else ""), "value": value}
        if more:
            nxt = dict(state, p=state["p"] + 1, v=last_v, d=last_d)
            body["@odata.nextLink"] = self.next_link(req, _encode_token(nxt))
        else:
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
            body["@odata.deltaLink"] = self.next_link(req, f"{snap}!{stamp}", "$deltatoken")
        headers = [("Preference-Applied", "odata.track-changes" + (f",odata.maxpagesize={size}" if pref_size else ""))]
        return Response.json(200, body, headers)

    def parse_delta_token(self, token: str) -> int:
        m = re.fullmatch(r"(\d+)!(\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2})", token.strip())
        if not m:
            raise StoreError(400, "0x80044352", "The delta token is not valid. Please perform a full sync.")
        version = int(m.group(1))
        issued = dt.datetime.strptime(m.group(2), "%m/%d/%Y %H:%M:%S").replace(tzinfo=dt.timezone.utc)
        age = dt.datetime.now(dt.timezone.utc) - issued
        if version > self.store.version:
            raise StoreError(400, "0x80044352", "The delta token is not valid. Please perform a full sync.")
        if version < self.min_delta_version or age > dt.timedelta(days=self.change_tracking_days):
            raise StoreError(400, "0x80044352", "Version stamp associated with the client has expired. Please"
                             " perform a full sync.")
        return version

    # -- navigation -------------------------------------------------------------------------
    def navigation(self, req: Request, e: Entity, key: str, nav: str, rest: list[str]) -> Response:
        row, rid = self.resolve_key(e, key)
        if row is None:
            raise not_found(e, rid)
        rid = row[e.primary_id]
        nav_name, nav_key = parse_segment(nav)
        is_ref = bool(rest) and rest[0] == "$ref"
        if nav_name in MANY_TO_MANY:
            one, two, _ = MANY_TO_MANY[nav_name]
            if e.logical_name not in (one, two):
                raise self.no_nav(e, nav_name)
            forward = e.logical_name == one
            other = self.store.schema.entity(two if forward else one)
            if one == "list":
                base = ("t0.{pk} IN (SELECT entityid FROM e_listmember WHERE listid = ?)" if forward
                        else "t0.{pk} IN (SELECT listid FROM e_listmember WHERE entityid = ?)")
                params: tuple = (rid,)
            else:
                base = ("t0.{pk} IN (SELECT id2 FROM _assoc WHERE rel = ? AND id1 = ?)" if forward
                        else "t0.{pk} IN (SELECT id1 FROM _assoc WHERE rel = ? AND id2 = ?)")
                params = (nav_name, rid)
            if is_ref:
                return self.ref_many(req, nav_name, forward, rid, other, nav_key)
            if req.method != "GET":
                raise StoreError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed here.")
            return self.query(req, other, base.format(pk=_q(other.primary_id)), params,
                              context=f"{e.entity_set}({rid})/{nav_name}")
        rel = ONE_TO_MANY.get((e.logical_name, nav_name))
        if rel is not None:
            child = self.store.schema.entity(rel[0])
            if req.method != "GET":
                raise StoreError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed here.")
            return self.query(req, child, f"t0.{_q(rel[1])} = ?", (rid,),
                              context=f"{e.entity_set}({rid})/{nav_name}")
        found = e.nav(nav_name)
        if found is None:
            raise self.no_nav(e, nav_name)
        attr, target = found
        te = self.store.schema.entity(target)
        if is_ref:
            if req.method == "DELETE":
                self.store.update(e, rid, {attr.logical_name: None, attr.logical_name + "__type": None})
                return Response.empty(204)
            if req.method == "PUT":
                ref = req.json().get("@odata.id", "")
                re_, trow = self.parse_ref(req, ref)
                self.store.update(e, rid, {attr.logical_name: trow[re_.primary_id],
                                           attr.logical_name + "__type": re_.logical_name})
                return Response.empty(204)
        if req.method == "GET" and row.get(attr.logical_name) and row.get(attr.logical_name + "__type") == target:
            return self.get_one(req, te, row[attr.logical_name])
        raise StoreError(404, "0x80040217", f"No {target} is linked through '{nav_name}'.")

    def no_nav(self, e: Entity, nav: str) -> StoreError:
        return StoreError(400, "0x80060888", f"Could not find a property named '{nav}' on type"
                          f" 'Microsoft.Dynamics.CRM.{e.logical_name}'.")

    def ref_many(self, req: Request, rel: str, forward: bool, rid: str, other: Entity, nav_key: str | None) -> Response:
        def link(other_id: str, add: bool) -> bool:
            id1, id2 = (rid, other_id) if forward else (other_id, rid)
            if add:
                self.store.associate(rel, id1, id2)
                return True
            return self.store.disassociate(rel, id1, id2)

        if req.method == "POST":
            te, trow = self.parse_ref(req, req.json().get("@odata.id", ""))
            if te.logical_name != other.logical_name:
                raise StoreError(400, "0x80048d19", f"The relationship '{rel}' links to '{other.logical_name}',"
                                 f" not '{te.logical_name}'.")
            link(trow[te.primary_id], True)
            return Response.empty(204)
        if req.method == "DELETE":
            if nav_key:
                target_id = parse_key(nav_key)
            elif "$id" in req.query:
                te, trow = self.parse_ref(req, req.query["$id"])
                target_id = trow[te.primary_id]
            else:
                raise StoreError(400, "0x80060888", "Disassociate needs $id=<entity URL> or <nav>(<id>)/$ref.")
            if not isinstance(target_id, str) or not link(target_id, False):
                raise StoreError(404, "0x80040217", f"The record is not associated through '{rel}'.")
            return Response.empty(204)
        if req.method == "GET":
            resp = self.navigation_ids(req, rel, forward, rid, other)
            return resp
        raise StoreError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed here.")

    def navigation_ids(self, req: Request, rel: str, forward: bool, rid: str, other: Entity) -> Response:
        one = MANY_TO_MANY[rel][0]
        if one == "list":
            col_from, col_to = ("listid", "entityid") if forward else ("entityid", "listid")
            ids = [r[0] for r in self.store.execute(f"SELECT {col_to} FROM e_listmember WHERE {col_from} = ?", (rid,))]
        else:
            col_from, col_to = ("id1", "id2") if forward else ("id2", "id1")
            ids = [r[0] for r in self.store.execute(f"SELECT {col_to} FROM _assoc WHERE rel = ? AND {col_from} = ?",
                                                    (rel, rid))]
        return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#Collection($ref)",
                                   "value": [{"@odata.id": self.entity_url(req, other, i)} for i in ids]})

    # -- bulk actions -------------------------------------------------------------------------
    def bulk(self, req: Request, e: Entity, action: str) -> Response:
        targets = req.json().get("Targets")
        if not isinstance(targets, list) or not targets:
            raise StoreError(400, "0x80040203", "Required field 'Targets' is missing or empty.")
        expected = f"Microsoft.Dynamics.CRM.{e.logical_name}"
        for t in targets:
            if not isinstance(t, dict) or t.get("@odata.type") != expected:
                raise StoreError(400, "0x80048d19", f"The @odata.type annotation is missing or is not '{expected}'"
                                 " on a target: every target must carry it.")
        ids = []
        with self.store.transaction():
            for t in targets:
                if action == "CreateMultiple":
                    ids.append(self.create_row(req, e, t))
                elif action == "UpdateMultiple":
                    rid = t.get(e.primary_id)
                    if not rid or self.store.get_raw(e, rid) is None:
                        raise not_found(e, rid)
                    changes, _ = self.convert(req, e, {k: v for k, v in t.items() if k != e.primary_id},
                                              creating=False)
                    self.store.update(e, rid, changes)
                else:  # UpsertMultiple
                    ref = t.get("@odata.id")
                    body = {k: v for k, v in t.items() if k != "@odata.id"}
                    if ref:
                        seg = split_path(ref.split("/api/data/")[-1].split("/", 1)[-1] if "/api/data/" in ref else ref)
                        _, key = parse_segment(seg[-1])
                        row, rid = self.resolve_key(e, key or "")
                    elif body.get(e.primary_id):
                        rid = str(body[e.primary_id]).lower()
                        row = self.store.get_raw(e, rid)
                    else:
                        row, rid = None, None
                    if row is None:
                        extra = {}
                        if isinstance(rid, dict):
                            extra = {k: v for k, v in rid.items()}
                        elif rid:
                            extra = {e.primary_id: rid}
                        self.create_row(req, e, {k: v for k, v in body.items() if k != e.primary_id}, extra)
                    else:
                        changes, _ = self.convert(req, e, {k: v for k, v in body.items() if k != e.primary_id},
                                                  creating=False)
                        self.store.update(e, row[e.primary_id], changes)
        if action == "CreateMultiple":
            return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#Microsoft.Dynamics.CRM."
                                       "CreateMultipleResponse", "Ids": ids})
        return Response.empty(204)

    def add_member_list(self, req: Request, e: Entity, key: str) -> Response:
        row, rid = self.resolve_key(e, key)
        if row is None:
            raise not_found(e, rid)
        entity_id = str(req.json().get("EntityId", "")).lower()
        member_type = {1: "account", 2: "contact", 4: "lead"}.get(row.get("createdfromcode"), "contact")
        if row.get("type"):
            raise StoreError(400, "0x8004f656", "Members can't be added to a dynamic marketing list.")
        me = self.store.schema.entity(member_type)
        if self.store.get_raw(me, entity_id) is None:
            raise not_found(me, entity_id)
        self.store.associate(f"list{member_type}_association", row["listid"], entity_id)
        found = self.store.execute("SELECT listmemberid FROM e_listmember WHERE listid = ? AND entityid = ?",
                                   (row["listid"], entity_id))
        return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#Microsoft.Dynamics.CRM."
                                   "AddMemberListResponse", "Id": found[0][0]})
