"""Describe for the Marketing Cloud sandbox: which objects and properties it supports.

Answers ``DefinitionRequestMsg`` with one ``ObjectDefinition`` per requested type,
listing the properties a Retrieve accepts (the same table the Retrieve checks), as
clients such as tap-exacttarget read them before building their property lists.
The reply has no OverallStatus, like the real one.
"""

from __future__ import annotations

from connector.sandbox.marketing_cloud.retrieve import EXTRA, RETRIEVABLE
from connector.sandbox.marketing_cloud.soap import Obj, SoapFault, message, render_fields
from connector.sandbox.marketing_cloud.wsdl import ENUMS, fields_of

CREATABLE = {"Subscriber", "List", "Email", "EmailSendDefinition", "ImportDefinition"}
UPDATABLE = {"Subscriber", "List", "EmailSendDefinition", "ImportDefinition"}
DATA_TYPES = {"string": "String", "int": "Int32", "long": "Int64", "boolean": "Boolean", "dateTime": "DateTime",
              "byte": "Byte"}
HIDDEN = {"Client", "PartnerProperties", "PartnerKey"}


def describe(request: Obj, request_id: str) -> str:
    wrapper = request.get("DescribeRequests")
    items = wrapper.all("ObjectDefinitionRequest") if isinstance(wrapper, Obj) else []
    definitions = []
    for item in items:
        obj_type = item.text("ObjectType") if isinstance(item, Obj) else ""
        if obj_type not in RETRIEVABLE and obj_type not in CREATABLE:
            raise SoapFault("soap:Client", f"Unable to describe object type '{obj_type}': it is not supported.")
        definitions.append(f"<ObjectDefinition>{render_fields('ObjectDefinition', _definition(obj_type))}</ObjectDefinition>")
    return message("DefinitionResponseMsg", "".join(definitions) + f"<RequestID>{request_id}</RequestID>")


def _definition(obj_type: str) -> dict:
    retrievable = obj_type in RETRIEVABLE
    properties = []
    for field in fields_of(obj_type):
        name, typ = field[0], field[1].split(":")[-1]
        if name in HIDDEN or typ.startswith("{"):
            continue
        scalar = typ in DATA_TYPES or typ in ENUMS
        properties.append(_property(obj_type, name, DATA_TYPES.get(typ, "String" if scalar else typ), retrievable))
    for dotted in sorted(EXTRA.get(obj_type, ())):
        properties.append(_property(obj_type, dotted, "String", retrievable))
    return {
        "ObjectType": obj_type, "Name": obj_type, "IsCreatable": obj_type in CREATABLE,
        "IsUpdatable": obj_type in UPDATABLE, "IsRetrievable": retrievable, "Properties": properties,
    }


def _property(obj_type: str, name: str, data_type: str, retrievable: bool) -> tuple:
    return ("PropertyDefinition", {
        "Name": name, "DataType": data_type, "IsCreatable": obj_type in CREATABLE,
        "IsUpdatable": obj_type in UPDATABLE, "IsRetrievable": retrievable, "IsFilterable": retrievable,
    })
