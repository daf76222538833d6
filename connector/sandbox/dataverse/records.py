"""Records over the Web API: addressing (ids, alternate keys, references), payload
checks, create / read / update / upsert / delete, single properties and the bulk
actions. Collection reads are in :mod:`.query`, navigation properties in :mod:`.navigation`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from connector.sandbox.dataverse.annotations import Annotations
from connector.sandbox.dataverse.customui import Customizations
from connector.sandbox.dataverse.keys import check_key_values
from connector.sandbox.dataverse.navigation import NavigationOps
from connector.sandbox.dataverse.query import CHANGE_TRACKING_DAYS, QueryOps
from connector.sandbox.dataverse.http import (
    Request, Response, not_found, parse_key, parse_segment, payload_error, split_path,
)
from connector.sandbox.dataverse.odata import bad_query, parse_select
from connector.sandbox.dataverse.schema import FLOAT_TYPES, INT_TYPES, LOOKUP_TYPES, ONE_TO_MANY, STRING_TYPES, Attribute, Entity
from connector.sandbox.dataverse.store import DataverseStore, StoreError, to_wire, utc_text

class Records(QueryOps, NavigationOps):
    """Record operations of one organization."""

    def __init__(self, store: DataverseStore, org_url: str) -> None:
        self.store = store
        self.org_url = org_url
        self.change_tracking_days = CHANGE_TRACKING_DAYS
        self.min_delta_version = 0
        self.default_owner = ""  # the calling application user owns what it creates
        self.customizations = Customizations(store)  # checks systemforms / savedqueries rows

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
        for k in e.active_keys():  # a key whose index job has not finished addresses nothing
            # a lookup column of a key is named by its lookup property, _<navigation property>_value
            # (PD use-alternate-key-reference-record.md); its bare logical name is not a key property
            wire = {e.attributes[name].wire_name: name for name in k.attributes}
            if set(wire) == set(parsed):
                check_key_values(parsed)
                values = {}
                for prop, name in wire.items():
                    attr = e.attributes[name]
                    values[name] = str(parsed[prop]).lower() if attr.type in LOOKUP_TYPES else parsed[prop]
                return self.store.find_by_key(e, values), values
        raise StoreError(400, "0x80060888", f"The key in the request URI is not valid for resource"
                         f" 'Microsoft.Dynamics.CRM.{e.logical_name}'. Ensure that the names and number of key"
                         f" properties match the declared or alternate key properties for the resource"
                         f" 'Microsoft.Dynamics.CRM.{e.logical_name}'.")

    def key_columns(self, req: Request, e: Entity, values: dict[str, Any]) -> dict[str, Any]:
        """The columns an upsert by alternate key creates its row with; a lookup value must name a
        record that exists (as when it is set through ``@odata.bind``)."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            attr = e.attributes[name]
            if attr.type not in LOOKUP_TYPES:
                out[name] = self.check_value(e, attr, value)
                continue
            target = self.store.schema.entity(attr.targets[0]) if len(attr.targets) == 1 else None
            if target is None or self.store.get_raw(target, str(value)) is None:
                raise not_found(target or e, value)
            out[name], out[name + "__type"] = str(value), target.logical_name
        return out

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

    def check_value(self, e: Entity, attr: Attribute, value: Any) -> Any:
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
            self.check_range(e, attr, value)
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
            self.check_range(e, attr, value)
            return float(value)
        if t == "DateTime":
            try:
                return utc_text(str(value))
            except ValueError as exc:
                raise payload_error(e, f"Cannot convert the literal '{value}' to the expected type"
                                    " 'Edm.DateTimeOffset'.") from exc
        if t == "Uniqueidentifier":
            if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F-]{36}", value):
                raise payload_error(e, f"Cannot convert the literal '{value}' to the expected type 'Edm.Guid'.")
            return value.lower()
        return value

    @staticmethod
    def check_range(e: Entity, attr: Any, value: float) -> None:
        """A number column refuses a value outside its MinValue..MaxValue [unverified: error code and text]."""
        low, high = attr.min_value, attr.max_value
        if (low is not None and value < low) or (high is not None and value > high):
            raise StoreError(400, "0x80044330", f"A validation error occurred. The value {value} of"
                             f" '{attr.logical_name}' on record of type '{e.logical_name}' is outside the valid"
                             f" range. Accepted Values: {low} to {high}")

    def create_row(self, req: Request, e: Entity, body: Any, extra: dict | None = None) -> str:
        row, deep = self.convert(req, e, body, creating=True)
        row.update(extra or {})
        self.customizations.check(e, row, creating=True)
        if "ownerid" in e.attributes and not row.get("ownerid") and self.default_owner:
            row["ownerid"], row["ownerid__type"] = self.default_owner, "systemuser"
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

    def annotate(self, req: Request) -> Annotations:
        """The annotations the request asked for (falsy when none)."""
        return Annotations(req.prefer.get("odata.include-annotations", ""), self.store)

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
        if req.query.get("$expand"):
            from connector.sandbox.dataverse.expand import expand_rows

            expand_rows(self.store, e, [row], [body], req.query["$expand"], self.annotate(req))
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
            extra = {e.primary_id: rid} if isinstance(rid, str) else self.key_columns(req, e, rid)
            new_id = self.create_row(req, e, body, extra)
            if req.prefer.get("return") == "representation":
                return self.representation(req, e, new_id, 201)
            return Response.empty(204, self.entity_headers(req, e, new_id))
        changes, deep = self.convert(req, e, body, creating=False)
        self.customizations.check(e, {**row, **changes}, creating=False)
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
