"""Navigation properties of the Dataverse sandbox: related collections and $ref (associate/disassociate)."""

from __future__ import annotations

from connector.sandbox.dataverse.http import Request, Response, not_found, parse_key, parse_segment
from connector.sandbox.dataverse.schema import ONE_TO_MANY, Entity
from connector.sandbox.dataverse.store import DataverseStore, StoreError, quote_ident as _q


def collection_base(store: DataverseStore, e: Entity, nav_name: str, rid: str
                    ) -> tuple[Entity, str, tuple, bool] | None:
    """For a collection navigation property: (other table, SQL restriction on ``t0``, params,
    forward direction); None when ``nav_name`` is not a collection of ``e``."""
    many = store.schema.many_to_many
    if nav_name in many:
        one, two, _ = many[nav_name]
        if e.logical_name not in (one, two):
            return None
        forward = e.logical_name == one
        other = store.schema.entity(two if forward else one)
        pk = _q(other.primary_id)
        if one == "list":
            # EXISTS probes the (listid, entityid) index row by row: a page costs what it reads,
            # where IN (SELECT ...) built the whole member set again for every page
            base = (f"EXISTS (SELECT 1 FROM e_listmember lm WHERE lm.listid = ? AND lm.entityid = t0.{pk})"
                    if forward
                    else f"t0.{pk} IN (SELECT listid FROM e_listmember WHERE entityid = ?)")
            return other, base, (rid,), forward
        base = (f"t0.{pk} IN (SELECT id2 FROM _assoc WHERE rel = ? AND id1 = ?)" if forward
                else f"t0.{pk} IN (SELECT id1 FROM _assoc WHERE rel = ? AND id2 = ?)")
        return other, base, (nav_name, rid), forward
    rel = ONE_TO_MANY.get((e.logical_name, nav_name))
    if rel is not None:
        return store.schema.entity(rel[0]), f"t0.{_q(rel[1])} = ?", (rid,), True
    return None


class NavigationOps:
    """Mixed into :class:`~connector.sandbox.dataverse.records.Records`."""

    store: DataverseStore

    def navigation(self, req: Request, e: Entity, key: str, nav: str, rest: list[str]) -> Response:
        row, rid = self.resolve_key(e, key)
        if row is None:
            raise not_found(e, rid)
        rid = row[e.primary_id]
        nav_name, nav_key = parse_segment(nav)
        is_ref = bool(rest) and rest[0] == "$ref"
        many = self.store.schema.many_to_many
        if nav_name in many and e.logical_name not in many[nav_name][:2]:
            raise self.no_nav(e, nav_name)
        collection = collection_base(self.store, e, nav_name, rid)
        if collection is not None:
            other, base, params, forward = collection
            if is_ref and nav_name in many:
                return self.ref_many(req, nav_name, forward, rid, other, nav_key)
            if req.method != "GET":
                raise StoreError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed here.")
            return self.query(req, other, base, params, context=f"{e.entity_set}({rid})/{nav_name}")
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
        one = self.store.schema.many_to_many[rel][0]
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
