"""Metadata of the Dataverse sandbox: EntityDefinitions, Attributes, Keys, $metadata.

Reads: ``EntityDefinitions`` (``$select``, ``$filter`` on simple properties such as
``LogicalName eq 'contact'``, ``$expand=Attributes,Keys``),
``EntityDefinitions(LogicalName='x')`` or ``(<MetadataId>)``, and its ``/Attributes``
and ``/Keys`` collections. Writes, with the real request shapes: ``POST
EntityDefinitions`` (EntityMetadata with its primary name attribute), ``POST
.../Attributes`` (String, Memo, Integer, BigInt, Picklist, Boolean, DateTime, Money,
Decimal, Double metadata), ``POST .../Keys`` (KeyAttributes), ``POST
RelationshipDefinitions`` (OneToManyRelationshipMetadata with its Lookup), ``PUT
EntityDefinitions(...)`` (``ChangeTrackingEnabled``) and ``ReactivateEntityKey``.

A new alternate key is built by a background job, as in Dataverse: its
``EntityKeyIndexStatus`` is Pending, then InProgress, then Active — or Failed when rows
already hold the same values (:class:`KeyActivation` sets how long each phase takes, on
the sandbox's clock). Until it is Active the key does not address records.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable
from xml.sax.saxutils import escape

import structlog

from connector.sandbox.dataverse.http import Request, Response, parse_key, parse_segment
from connector.sandbox.dataverse.odata import parse_filter
from connector.sandbox.dataverse.schema import (
    LOOKUP_TYPES, METADATA_TYPE_NAMES, ODATA_TYPES, ONE_TO_MANY, TYPE_BY_METADATA_NAME,
    Attribute, Entity, Key, _common,
)
from connector.sandbox.dataverse.store import DataverseStore, StoreError

NS = "Microsoft.Dynamics.CRM"
log = structlog.get_logger(__name__)


@dataclass
class KeyActivation:
    """How long the index job of a new alternate key takes (sandbox seconds) [unverified]:
    Microsoft documents only that it runs in the background and can take long on big tables."""

    pending_seconds: float = 5.0
    """Waiting for the asynchronous service to pick the job up."""
    build_seconds: float = 10.0
    """Building the index of an empty table."""
    rows_per_second: float = 5000.0
    """How fast the index build goes through existing rows."""


NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "Integer": (-2_147_483_648, 2_147_483_647),
    "Decimal": (-100_000_000_000, 100_000_000_000),
    "Double": (-100_000_000_000, 100_000_000_000),
    "Money": (-922_337_203_685_477, 922_337_203_685_477),
}
"""The widest MinValue..MaxValue each number column type allows (PD maker/data-platform/types-of-fields.md);
a column is created with the MinValue / MaxValue its metadata gives, within these."""


def _bound(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise StoreError(400, "0x80044331", f"{name} {value!r} of {body.get('SchemaName')} is outside the range"
                         f" of its type ({low} to {high}).")
    return value


def _label(text: str) -> dict:
    loc = {"Label": text, "LanguageCode": 1033}
    return {"LocalizedLabels": [loc], "UserLocalizedLabel": loc}


def _label_text(value: Any, default: str) -> str:
    try:
        return value["LocalizedLabels"][0]["Label"]
    except (TypeError, KeyError, IndexError):
        return default


def plural(name: str) -> str:
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        return name[:-1] + "ies"
    if name.endswith(("s", "x", "z", "ch", "sh")):
        return name + "es"
    return name + "s"


def attribute_json(e: Entity, a: Attribute) -> dict:
    d: dict[str, Any] = {
        "@odata.type": f"#{NS}.{METADATA_TYPE_NAMES.get(a.type, 'AttributeMetadata')}",
        "MetadataId": a.metadata_id, "LogicalName": a.logical_name, "SchemaName": a.schema_name,
        "EntityLogicalName": e.logical_name, "AttributeType": a.type,
        "AttributeTypeName": {"Value": f"{a.type}Type"}, "IsCustomAttribute": a.custom,
        "IsPrimaryId": a.logical_name == e.primary_id, "IsPrimaryName": a.logical_name == e.primary_name,
        "IsValidForCreate": not a.readonly, "IsValidForUpdate": not a.readonly, "IsValidForRead": True,
        "RequiredLevel": {"Value": "ApplicationRequired" if a.required else "None"},
        "DisplayName": _label(a.schema_name),
    }
    if a.max_length:
        d["MaxLength"] = a.max_length
    if a.type in LOOKUP_TYPES:
        d["Targets"] = list(a.targets)
    return d


def key_json(e: Entity, k: Key) -> dict:
    return {"@odata.type": f"#{NS}.EntityKeyMetadata", "LogicalName": k.logical_name, "SchemaName": k.schema_name,
            "EntityLogicalName": e.logical_name, "KeyAttributes": list(k.attributes),
            "EntityKeyIndexStatus": k.status, "IsCustomizable": {"Value": True}, "DisplayName": _label(k.schema_name)}


def entity_json(e: Entity) -> dict:
    return {"@odata.type": f"#{NS}.EntityMetadata", "MetadataId": e.metadata_id, "LogicalName": e.logical_name,
            "SchemaName": e.schema_name, "EntitySetName": e.entity_set, "LogicalCollectionName": e.entity_set,
            "PrimaryIdAttribute": e.primary_id, "PrimaryNameAttribute": e.primary_name,
            "ObjectTypeCode": e.object_type_code, "IsCustomEntity": e.custom,
            "ChangeTrackingEnabled": e.change_tracking, "CanChangeTrackingBeEnabled": {"Value": True},
            "DisplayName": _label(e.display_name or e.schema_name),
            "IsActivity": e.logical_name == "campaignresponse"}


def _matches(node: tuple, item: dict) -> bool:
    kind = node[0]
    if kind == "and":
        return _matches(node[1], item) and _matches(node[2], item)
    if kind == "or":
        return _matches(node[1], item) or _matches(node[2], item)
    if kind == "not":
        return not _matches(node[1], item)
    if kind == "cmp":
        _, op, left, right = node
        if left[0] != "prop" or right[0] != "lit":
            raise StoreError(400, "0x80060888", "Only property-to-literal comparisons are supported on metadata.")
        value = item.get(left[1])
        if isinstance(value, dict) and "Value" in value:
            value = value["Value"]
        lit = right[1]
        if isinstance(value, str) and isinstance(lit, str):
            value, lit = value.lower(), lit.lower()
        if op == "eq":
            return value == lit
        if op == "ne":
            return value != lit
        raise StoreError(400, "0x80060888", f"The operator '{op}' is not supported on metadata queries.")
    raise StoreError(400, "0x80060888", "Unsupported $filter on metadata.")


def _shape(items: list[dict], req: Request) -> list[dict]:
    if req.query.get("$filter"):
        node = parse_filter(req.query["$filter"])
        items = [i for i in items if _matches(node, i)]
    select = [s.strip() for s in req.query.get("$select", "").split(",") if s.strip()]
    if select:
        keep = set(select) | {"MetadataId", "@odata.type"}
        items = [{k: v for k, v in i.items() if k in keep} for i in items]
    return items


class Metadata:
    def __init__(self, store: DataverseStore, org_url: str, clock: Callable[[], float] = time.monotonic,
                 activation: KeyActivation | None = None) -> None:
        self.store = store
        self.org_url = org_url
        self.clock = clock
        self.activation = activation or KeyActivation()
        self._jobs: dict[tuple[str, str], tuple[float, float]] = {}  # (table, key) -> (start, build time)
        for e in store.schema.entities.values():  # a restart picks unfinished jobs up again
            for k in e.keys.values():
                if k.status in ("Pending", "InProgress"):
                    self._start_job(e, k)

    # -- key index jobs -----------------------------------------------------------------
    def _start_job(self, e: Entity, k: Key) -> None:
        rows = self.store.count(e.entity_set)
        act = self.activation
        self._jobs[(e.logical_name, k.logical_name)] = (self.clock(), act.build_seconds + rows / act.rows_per_second)
        k.status, k.failure = "Pending", ""

    def advance_keys(self) -> None:
        """Move every key index job on to where the clock says it is."""
        if not self._jobs:
            return
        now = self.clock()
        with self.store.lock:
            for (table, name), (start, build) in list(self._jobs.items()):
                key = self.store.schema.entities[table].keys.get(name)
                if key is None:  # deleted meanwhile: the job is cancelled
                    del self._jobs[(table, name)]
                    continue
                elapsed = now - start
                if elapsed < self.activation.pending_seconds:
                    key.status = "Pending"
                elif elapsed < self.activation.pending_seconds + build:
                    key.status = "InProgress"
                else:
                    del self._jobs[(table, name)]
                    dups = self.store.activate_key(table, name)
                    log.info("sandbox_key_index_built", table=table, key=name, status=key.status,
                             count=len(dups))

    def api(self, req: Request) -> str:
        return f"{self.org_url}/api/data/{req.version}/"

    def find(self, key: str) -> Entity:
        parsed = parse_key(key)
        for e in self.store.schema.entities.values():
            if (isinstance(parsed, str) and e.metadata_id == parsed) or (
                    isinstance(parsed, dict) and str(parsed.get("LogicalName", "")).lower() == e.logical_name):
                return e
        raise StoreError(404, "0x80040217", f"Could not find entity with key {key}.")

    def handle(self, req: Request, segments: list[str]) -> Response:
        name, key = parse_segment(segments[0])
        if name == "RelationshipDefinitions":
            if req.method != "POST":
                return self.relationships(req)
            return self.create_relationship(req)
        if key is None:
            if req.method == "POST":
                return self.create_entity(req)
            items = []
            expand = req.query.get("$expand", "")
            for e in self.store.schema.entities.values():
                item = entity_json(e)
                if "Attributes" in expand:
                    item["Attributes"] = [attribute_json(e, a) for a in e.attributes.values()]
                if "Keys" in expand:
                    item["Keys"] = [key_json(e, k) for k in e.keys.values()]
                items.append(item)
            return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#EntityDefinitions",
                                       "value": _shape(items, req)})
        e = self.find(key)
        if len(segments) == 1 and req.method in ("PUT", "PATCH"):
            return self.update_entity(req, e)
        if len(segments) == 1:
            item = entity_json(e)
            expand = req.query.get("$expand", "")
            if "Attributes" in expand:
                item["Attributes"] = [attribute_json(e, a) for a in e.attributes.values()]
            if "Keys" in expand:
                item["Keys"] = [key_json(e, k) for k in e.keys.values()]
            shaped = _shape([item], req)[0]
            return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#EntityDefinitions/$entity",
                                       **shaped})
        sub, sub_key = parse_segment(segments[1])
        if sub == "Attributes":
            if req.method == "POST":
                return self.create_attribute(req, e)
            if len(segments) > 2:
                return self.attributes_of_type(req, e, segments[2])
            items = [attribute_json(e, a) for a in e.attributes.values()]
            if sub_key:
                parsed = parse_key(sub_key)
                items = [i for i in items if (isinstance(parsed, dict) and i["LogicalName"] == parsed.get(
                    "LogicalName")) or i["MetadataId"] == parsed]
                if not items:
                    raise StoreError(404, "0x80040217", f"Could not find attribute {sub_key} on {e.logical_name}.")
                return Response.json(200, _shape(items, req)[0])
            return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#EntityDefinitions"
                                       f"({e.metadata_id})/Attributes", "value": _shape(items, req)})
        if sub == "Keys":
            if req.method == "POST":
                return self.create_key(req, e)
            items = [key_json(e, k) for k in e.keys.values()]
            return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#EntityDefinitions"
                                       f"({e.metadata_id})/Keys", "value": _shape(items, req)})
        raise StoreError(404, "0x80060888", f"Resource not found for the segment '{segments[1]}'.")

    def attributes_of_type(self, req: Request, e: Entity, cast: str) -> Response:
        """``Attributes/Microsoft.Dynamics.CRM.<Type>AttributeMetadata``: the columns of one derived
        type, with its own properties (``MaxLength``; ``OptionSet`` by ``$expand``), as Dataverse
        answers the cast (Microsoft Learn, "Query table definitions using the Web API")."""
        name = cast.removeprefix(f"{NS}.")
        kind = TYPE_BY_METADATA_NAME.get(name)
        if not cast.startswith(f"{NS}.") or kind is None:
            raise StoreError(404, "0x80060888", f"Resource not found for the segment '{cast}'.")
        items = []
        for a in e.attributes.values():
            if METADATA_TYPE_NAMES.get(a.type) != name:
                continue
            item = attribute_json(e, a)
            if "OptionSet" in req.query.get("$expand", "") and a.type in ("Picklist", "State", "Status"):
                item["OptionSet"] = {"Options": [{"Value": code, "Label": _label(label)}
                                                 for code, label in a.options.items()]}
            items.append(item)
        select = [s.strip() for s in req.query.get("$select", "").split(",") if s.strip()]
        keep = set(select) | {"MetadataId", "@odata.type", "OptionSet"}
        if select:
            items = [{k: v for k, v in i.items() if k in keep} for i in items]
        return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#EntityDefinitions"
                                   f"({e.metadata_id})/Attributes/{cast}", "value": items})

    # -- writes -------------------------------------------------------------------------
    def update_entity(self, req: Request, e: Entity) -> Response:
        """``PUT EntityDefinitions(...)``: the sandbox applies ``ChangeTrackingEnabled``."""
        body = req.json()
        if str(body.get("@odata.type", f"#{NS}.EntityMetadata")).lstrip("#") != f"{NS}.EntityMetadata":
            raise StoreError(400, "0x80048d19", f"The request body must be EntityMetadata (@odata.type {NS}.EntityMetadata).")
        if str(body.get("LogicalName", e.logical_name)).lower() != e.logical_name:
            raise StoreError(400, "0x80048d19", "The LogicalName of a table can't be changed.")
        if "ChangeTrackingEnabled" in body and bool(body["ChangeTrackingEnabled"]) != e.change_tracking:
            self.store.set_change_tracking(e.logical_name, bool(body["ChangeTrackingEnabled"]))
        return Response.empty(204)

    def reactivate_key(self, req: Request) -> Response:
        """``ReactivateEntityKey``: run the index job of a Failed key again."""
        body = req.json()
        e = self.find(f"LogicalName='{body.get('EntityLogicalName', '')}'")
        key = e.keys.get(str(body.get("EntityKeyLogicalName", "")).lower())
        if key is None:
            raise StoreError(404, "0x80040217", f"Could not find key {body.get('EntityKeyLogicalName')} on"
                             f" {e.logical_name}.")
        if key.status == "Failed":
            self._start_job(e, key)
        return Response.empty(204)

    def _attribute_from(self, body: dict, entity: str) -> Attribute:
        odata_type = str(body.get("@odata.type", "")).lstrip("#").replace(f"{NS}.", "")
        type_ = TYPE_BY_METADATA_NAME.get(odata_type)
        if type_ is None or type_ in LOOKUP_TYPES:
            hint = (" Lookup columns are created through POST RelationshipDefinitions"
                    " (OneToManyRelationshipMetadata)." if type_ in LOOKUP_TYPES else "")
            raise StoreError(400, "0x80048d19", f"The attribute type '{odata_type or '(missing @odata.type)'}' can't"
                             f" be created through the Attributes collection.{hint}")
        schema = body.get("SchemaName")
        if not schema or "_" not in schema:
            raise StoreError(400, "0x80044355", "The SchemaName of a custom attribute must start with the"
                             " publisher's customization prefix followed by '_'.")
        options = {}
        if type_ == "Picklist":
            for opt in (body.get("OptionSet") or {}).get("Options", []):
                options[int(opt["Value"])] = _label_text(opt.get("Label"), str(opt["Value"]))
        max_length = body.get("MaxLength") if type_ in ("String", "Memo") else None
        if type_ == "String" and not max_length:
            max_length = 100
        if type_ == "Memo" and not max_length:
            max_length = 2000
        level = (body.get("RequiredLevel") or {}).get("Value", "None")
        low, high = NUMBER_RANGES.get(type_, (None, None))
        if type_ in NUMBER_RANGES:
            low, high = _bound(body, "MinValue", low, low, high), _bound(body, "MaxValue", high, low, high)
            if low > high:
                raise StoreError(400, "0x80044331", f"MinValue {low} of {schema} is greater than its MaxValue {high}.")
        return Attribute(schema.lower(), type_, max_length, schema_name=schema, custom=True,
                         required=level in ("ApplicationRequired", "SystemRequired"), options=options,
                         min_value=low, max_value=high)

    def create_entity(self, req: Request) -> Response:
        body = req.json()
        if str(body.get("@odata.type", "")).lstrip("#") != f"{NS}.EntityMetadata":
            raise StoreError(400, "0x80048d19", "The request body must be EntityMetadata"
                             f" (@odata.type {NS}.EntityMetadata).")
        schema = body.get("SchemaName", "")
        logical = schema.lower()
        if not logical or "_" not in logical:
            raise StoreError(400, "0x80044355", "The SchemaName of a custom table must start with the publisher's"
                             " customization prefix followed by '_'.")
        if logical in self.store.schema.entities:
            raise StoreError(400, "0x80044363", f"An entity with the specified name {schema} already exists.")
        attrs = [self._attribute_from(a, logical) for a in body.get("Attributes", [])]
        primary = [a for a, raw in zip(attrs, body.get("Attributes", [])) if raw.get("IsPrimaryName")]
        if len(primary) != 1 or primary[0].type != "String":
            raise StoreError(400, "0x80044355", "The table needs exactly one String attribute with"
                             " IsPrimaryName true.")
        e = Entity(logical, plural(logical), logical + "id", primary[0].logical_name, schema_name=schema,
                   custom=True, object_type_code=10000 + len(self.store.schema.entities),
                   change_tracking=bool(body.get("ChangeTrackingEnabled", False)),
                   display_name=_label_text(body.get("DisplayName"), schema))
        for a in attrs + _common(owner=body.get("OwnershipType", "UserOwned") == "UserOwned"):
            e.add(a)
        self.store.add_entity(e)
        return Response.empty(204, [("OData-EntityId", f"{self.api(req)}EntityDefinitions({e.metadata_id})")])

    def create_attribute(self, req: Request, e: Entity) -> Response:
        attr = self._attribute_from(req.json(), e.logical_name)
        if attr.logical_name in e.attributes:
            raise StoreError(400, "0x80044363", f"An attribute with the specified name {attr.schema_name}"
                             f" already exists on {e.logical_name}.")
        self.store.add_attribute(e.logical_name, attr)
        return Response.empty(204, [("OData-EntityId", f"{self.api(req)}EntityDefinitions({e.metadata_id})"
                                                       f"/Attributes({attr.metadata_id})")])

    def create_key(self, req: Request, e: Entity) -> Response:
        body = req.json()
        schema = body.get("SchemaName", "")
        cols = body.get("KeyAttributes") or []
        if not schema or not cols:
            raise StoreError(400, "0x80048d19", "An alternate key needs SchemaName and KeyAttributes.")
        for c in cols:
            if c not in e.attributes:
                raise StoreError(400, "0x80048d19", f"The attribute '{c}' doesn't exist on {e.logical_name}.")
        if schema.lower() in e.keys:
            raise StoreError(400, "0x80060892", f"A key with the name {schema} already exists on {e.logical_name}.")
        key = Key(schema.lower(), tuple(cols), schema, status="Pending")
        self.store.add_key(e.logical_name, key)
        self._start_job(e, key)
        return Response.empty(204, [("OData-EntityId", f"{self.api(req)}EntityDefinitions({e.metadata_id})"
                                                       f"/Keys({key.logical_name})")])

    def create_relationship(self, req: Request) -> Response:
        body = req.json()
        kind = str(body.get("@odata.type", "")).lstrip("#")
        if kind == f"{NS}.ManyToManyRelationshipMetadata":
            return self.create_many_to_many(req, body)
        if kind != f"{NS}.OneToManyRelationshipMetadata":
            raise StoreError(400, "0x80048d19", "The sandbox creates OneToManyRelationshipMetadata and"
                             " ManyToManyRelationshipMetadata only.")
        referenced = self.store.schema.entity(body.get("ReferencedEntity", ""))
        referencing = self.store.schema.entity(body.get("ReferencingEntity", ""))
        lookup = body.get("Lookup") or {}
        if referenced is None or referencing is None or not lookup.get("SchemaName"):
            raise StoreError(400, "0x80048d19", "ReferencedEntity, ReferencingEntity and Lookup.SchemaName are"
                             " required.")
        logical = lookup["SchemaName"].lower()
        if logical in referencing.attributes:
            raise StoreError(400, "0x80044363", f"An attribute with the specified name {lookup['SchemaName']}"
                             f" already exists on {referencing.logical_name}.")
        nav = body.get("ReferencingEntityNavigationPropertyName") or lookup["SchemaName"]
        attr = Attribute(logical, "Lookup", None, (referenced.logical_name,), schema_name=lookup["SchemaName"],
                         custom=True, navs={nav: referenced.logical_name},
                         relationship=str(body.get("SchemaName") or ""))
        self.store.add_attribute(referencing.logical_name, attr)
        rel_id = attr.metadata_id
        return Response.empty(204, [("OData-EntityId", f"{self.api(req)}RelationshipDefinitions({rel_id})")])

    def create_many_to_many(self, req: Request, body: dict) -> Response:
        """``POST RelationshipDefinitions`` with ManyToManyRelationshipMetadata: an N:N and its intersect.

        As the real service: both tables must exist, the SchemaName and the intersect table's name
        carry the publisher prefix and are new. The sandbox's navigation property on both sides is the
        relationship's SchemaName (what Dataverse uses when none is given); other names are refused."""
        schema = str(body.get("SchemaName") or "")
        name = schema.lower()
        one = self.store.schema.entity(str(body.get("Entity1LogicalName") or ""))
        two = self.store.schema.entity(str(body.get("Entity2LogicalName") or ""))
        intersect = str(body.get("IntersectEntityName") or "").lower()
        if one is None or two is None:
            raise StoreError(400, "0x80048d19", "Entity1LogicalName and Entity2LogicalName must name existing"
                             " tables.")
        if "_" not in name or "_" not in intersect:
            raise StoreError(400, "0x80044355", "The SchemaName and IntersectEntityName of a custom relationship"
                             " must start with the publisher's customization prefix followed by '_'.")
        many = self.store.schema.many_to_many
        if name in many or any(i == intersect for _a, _b, i in many.values()) or intersect in self.store.schema.entities:
            raise StoreError(400, "0x80047013", f"A relationship or table named {schema}/{intersect} already exists.")
        for side in ("Entity1NavigationPropertyName", "Entity2NavigationPropertyName"):
            nav = body.get(side)
            if nav and nav != schema:
                raise StoreError(400, "0x80048d19", f"The sandbox names the navigation properties of an N:N after"
                                 f" its SchemaName: {side} must be {schema!r} or absent.")
        self.store.add_many_to_many(schema, one.logical_name, two.logical_name, intersect)
        rel_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "rel:" + name))
        return Response.empty(204, [("OData-EntityId", f"{self.api(req)}RelationshipDefinitions({rel_id})")])

    def insert_option_value(self, req: Request) -> Response:
        """``InsertOptionValue`` (unbound action): a new option of a local choice column."""
        body = req.json()
        e = self.find(f"LogicalName='{body.get('EntityLogicalName', '')}'")
        attr = e.attributes.get(str(body.get("AttributeLogicalName", "")).lower())
        if attr is None or attr.type != "Picklist":
            raise StoreError(400, "0x80048d19", f"{e.logical_name} has no choice column"
                             f" {body.get('AttributeLogicalName')!r} (InsertStatusValue is for status reasons).")
        value = body.get("Value")
        if isinstance(value, bool) or not isinstance(value, int):
            raise StoreError(400, "0x80048d19", "InsertOptionValue needs an integer Value (the sandbox does not"
                             " pick one).")
        if value in attr.options:
            raise StoreError(400, "0x80047012", f"An option with the value {value} already exists on"
                             f" {e.logical_name}.{attr.logical_name}.")
        text = _label_text(body.get("Label"), "")
        if not text:
            raise StoreError(400, "0x80048d19", "InsertOptionValue needs a Label.")
        self.store.add_option(e.logical_name, attr.logical_name, value, text)
        return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#Microsoft.Dynamics.CRM."
                                   "InsertOptionValueResponse", "NewOptionValue": value})

    def relationships(self, req: Request) -> Response:
        items = [{"SchemaName": name, "@odata.type": f"#{NS}.ManyToManyRelationshipMetadata",
                  "Entity1LogicalName": a, "Entity2LogicalName": b, "IntersectEntityName": i}
                 for name, (a, b, i) in self.store.schema.many_to_many.items()]
        return Response.json(200, {"@odata.context": f"{self.api(req)}$metadata#RelationshipDefinitions",
                                   "value": _shape(items, req)})

    # -- CSDL ------------------------------------------------------------------------------
    def csdl(self) -> bytes:
        out = ['<?xml version="1.0" encoding="utf-8"?>',
               '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
               '<edmx:DataServices><Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm"'
               ' xmlns="http://docs.oasis-open.org/odata/ns/edm">',
               '<EntityType Name="crmbaseentity" Abstract="true" />']
        entities = self.store.schema.entities
        for e in entities.values():
            out.append(f'<EntityType Name="{e.logical_name}" BaseType="mscrm.crmbaseentity">'
                       f'<Key><PropertyRef Name="{e.primary_id}" /></Key>')
            for a in e.attributes.values():
                out.append(f'<Property Name="{escape(a.wire_name)}" Type="{ODATA_TYPES.get(a.type, "Edm.String")}" />')
            for a in e.attributes.values():
                for nav, target in a.navs.items():
                    out.append(f'<NavigationProperty Name="{escape(nav)}" Type="mscrm.{target}" />')
            for rel, (one, two, _i) in self.store.schema.many_to_many.items():
                if e.logical_name in (one, two):
                    other = two if e.logical_name == one else one
                    out.append(f'<NavigationProperty Name="{rel}" Type="Collection(mscrm.{other})" />')
            for (parent, nav), (child, _attr) in ONE_TO_MANY.items():
                if parent == e.logical_name:
                    out.append(f'<NavigationProperty Name="{nav}" Type="Collection(mscrm.{child})" />')
            out.append("</EntityType>")
        out.append('<ComplexType Name="WhoAmIResponse"><Property Name="BusinessUnitId" Type="Edm.Guid" />'
                   '<Property Name="UserId" Type="Edm.Guid" /><Property Name="OrganizationId" Type="Edm.Guid" />'
                   '</ComplexType>')
        out.append('<Function Name="WhoAmI"><ReturnType Type="mscrm.WhoAmIResponse" Nullable="false" /></Function>')
        for action in ("CreateMultiple", "UpdateMultiple", "UpsertMultiple"):
            out.append(f'<Action Name="{action}" IsBound="true"><Parameter Name="entityset"'
                       ' Type="Collection(mscrm.crmbaseentity)" Nullable="false" /><Parameter Name="Targets"'
                       ' Type="Collection(mscrm.crmbaseentity)" Nullable="false" /></Action>')
        out.append('<Action Name="AddMemberList" IsBound="true"><Parameter Name="entity" Type="mscrm.list"'
                   ' Nullable="false" /><Parameter Name="EntityId" Type="Edm.Guid" Nullable="false" /></Action>')
        out.append('<EntityContainer Name="System">')
        for e in entities.values():
            out.append(f'<EntitySet Name="{e.entity_set}" EntityType="Microsoft.Dynamics.CRM.{e.logical_name}" />')
        out.append('<FunctionImport Name="WhoAmI" Function="Microsoft.Dynamics.CRM.WhoAmI" />')
        out.append("</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")
        return "\n".join(out).encode()
