"""Describe for the Marketing Cloud sandbox: which objects and properties it supports.

Answers ``DefinitionRequestMsg`` with one ``ObjectDefinition`` per requested type.
Its ``Properties`` carry ``IsRetrievable`` / ``IsFilterable`` from the same tables the
Retrieve checks (``properties``), as clients such as tap-exacttarget and FuelSDK's
``ET_Get`` read them before building their property lists. For Subscriber, the
account's profile attributes come as ``ExtendedProperties`` (the only object with
both, per the guide's "Describe a Subscriber"); FuelSDK's ``ET_ProfileAttribute.get``
is exactly this call. The reply has no OverallStatus, like the real one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.sandbox.marketing_cloud.properties import RETRIEVABLE_OBJECTS, filterable, retrievable
from connector.sandbox.marketing_cloud.soap import Obj, SoapFault, message, render_fields
from connector.sandbox.marketing_cloud.wsdl import ENUMS, fields_of

if TYPE_CHECKING:
    from connector.sandbox.marketing_cloud.store import EspStore

CREATABLE = {"Subscriber", "List", "Email", "EmailSendDefinition", "ImportDefinition", "DataExtension",
             "DataExtensionObject"}
UPDATABLE = {"Subscriber", "List", "EmailSendDefinition", "ImportDefinition", "DataExtensionObject"}
DATA_TYPES = {"string": "String", "int": "Int32", "long": "Int64", "boolean": "Boolean", "dateTime": "DateTime",
              "byte": "Byte"}


def describe(store: "EspStore", request: Obj, request_id: str) -> str:
    wrapper = request.get("DescribeRequests")
    items = wrapper.all("ObjectDefinitionRequest") if isinstance(wrapper, Obj) else []
    definitions = []
    for item in items:
        obj_type = item.text("ObjectType") if isinstance(item, Obj) else ""
        if obj_type not in RETRIEVABLE_OBJECTS and obj_type not in CREATABLE:
            raise SoapFault("soap:Client", f"Unable to describe object type '{obj_type}': it is not supported.")
        values = _definition(obj_type)
        if obj_type == "Subscriber":
            values["ExtendedProperties"] = {"ExtendedProperty": _profile_attributes(store)}
        definitions.append(f"<ObjectDefinition>{render_fields('ObjectDefinition', values)}</ObjectDefinition>")
    return message("DefinitionResponseMsg", "".join(definitions) + f"<RequestID>{request_id}</RequestID>")


def _definition(obj_type: str) -> dict:
    can_get, can_filter = retrievable(obj_type), filterable(obj_type)
    properties = []
    names = []
    for field in fields_of(obj_type):
        name, typ = field[0], field[1].split(":")[-1]
        if typ.startswith("{"):
            continue
        scalar = typ in DATA_TYPES or typ in ENUMS
        names.append((name, DATA_TYPES.get(typ, "String" if scalar else typ)))
    names += [(dotted, "String") for dotted in sorted(can_get - {n for n, _ in names})]
    for name, data_type in names:
        properties.append(("PropertyDefinition", {
            "Name": name, "DataType": data_type, "IsCreatable": obj_type in CREATABLE,
            "IsUpdatable": obj_type in UPDATABLE, "IsRetrievable": name in can_get, "IsFilterable": name in can_filter,
        }))
    return {
        "ObjectType": obj_type, "Name": obj_type, "IsCreatable": obj_type in CREATABLE,
        "IsUpdatable": obj_type in UPDATABLE, "IsRetrievable": bool(can_get), "Properties": properties,
    }


def _profile_attributes(store: "EspStore") -> list[tuple]:
    with store.lock:
        attributes = list(store.attributes.values())
    return [("PropertyDefinition", {"Name": a.name, "PropertyType": a.type, "IsCreatable": True, "IsUpdatable": True,
                                    "IsRetrievable": True, "IsFilterable": False, "IsRequired": a.required,
                                    "IsViewable": True, "IsEditable": True})
            for a in attributes]
