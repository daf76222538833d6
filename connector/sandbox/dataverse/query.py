"""Collection reads of the Dataverse sandbox: queries with paging, $count, FetchXML, change tracking.

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

from connector.sandbox.dataverse.http import Request, Response
from connector.sandbox.dataverse.odata import bad_query, compile_filter, parse_orderby, parse_select
from connector.sandbox.dataverse.schema import Entity
from connector.sandbox.dataverse.store import DataverseStore, StoreError, to_wire, quote_ident as _q

MAX_PAGE_SIZE = 5000
COUNT_LIMIT = 5000
CHANGE_TRACKING_DAYS = 7
"""Days a ``$deltatoken`` stays valid (``organization.expirechangetrackingindays``)."""


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


class QueryOps:
    """Mixed into :class:`~connector.sandbox.dataverse.records.Records`."""

    store: DataverseStore
    change_tracking_days: int
    min_delta_version: int
    fetch_cookies: bool = True
    """Test knob: False answers every FetchXML query as one the real service gives no paging cookie."""

    def query(self, req: Request, e: Entity, base: str = "", base_params: tuple = (),
              context: str | None = None) -> Response:
        """GET a collection (``base`` restricts it, e.g. to a list's members)."""
        if "fetchXml" in req.query:
            return self.fetch(req, e)
        if "$skip" in req.query:
            raise StoreError(400, "0x80060888", "The query parameter $skip is not supported.")
        if "$deltatoken" in req.query or "odata.track-changes" in req.prefer:
            return self.delta(req, e)
        select = parse_select(e, req.query.get("$select"))
        where, params = [], list(base_params)
        if base:
            where.append(base)
        if req.query.get("$filter"):
            sql, fparams = compile_filter(e, req.query["$filter"], alias="t0", aliases=req.query)
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
            if self.annotate(req).wants("Microsoft.Dynamics.CRM.totalrecordcount"):
                body["@Microsoft.Dynamics.CRM.totalrecordcount"] = min(total, COUNT_LIMIT)
                body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = total > COUNT_LIMIT
        annotate = self.annotate(req)
        raws = [dict(zip(cols, r[1:])) for r in rows]
        body["value"] = [to_wire(e, raw, select, annotate=annotate) for raw in raws]
        if req.query.get("$expand"):
            from connector.sandbox.dataverse.expand import expand_rows

            expand_rows(self.store, e, raws, body["value"], req.query["$expand"], annotate)
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
            where, params = compile_filter(e, req.query["$filter"], alias="t0", aliases=req.query)
        total = self.store.execute(f"SELECT count(*) FROM {_q('e_' + e.logical_name)} AS t0"
                                   + (f" WHERE {where}" if where else ""), params)[0][0]
        return Response(200, [("Content-Type", "text/plain; charset=utf-8"), ("OData-Version", "4.0")],
                        str(min(total, COUNT_LIMIT)).encode())

    # -- FetchXML -------------------------------------------------------------------------
    def fetch(self, req: Request, e: Entity) -> Response:
        from connector.sandbox.dataverse.fetchxml import run_fetch

        rows, more, cookie = run_fetch(self.store, e, req.query["fetchXml"], cookies=self.fetch_cookies,
                                      user_id=self.default_owner, annotate=self.annotate(req))
        body: dict[str, Any] = {"@odata.context": f"{self.api(req)}$metadata#{e.entity_set}", "value": rows}
        wanted = req.prefer.get("odata.include-annotations", "")
        if more and ("*" in wanted or "fetchxmlpagingcookie" in wanted or "morerecords" in wanted):
            if cookie is not None:
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
            raise StoreError(400, "0x80072491", f"Entity {e.logical_name} isn't enabled for change tracking.")
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
