"""The sandbox's own WSDL: loadable by zeep, and a faithful subset of the real PartnerAPI WSDL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from connector.sandbox.marketing_cloud.wsdl import ELEMENTS, ENUMS, OPERATIONS, TYPES, build_wsdl

XS = "{http://www.w3.org/2001/XMLSchema}"
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "ExactTargetWSDL.xml"


def _sequence(node: etree._Element) -> list[tuple[str, str, str, str]]:
    """(name, type, minOccurs, maxOccurs) of the direct sequence elements of a type/element node."""
    out = []
    for seq in node.iter(XS + "sequence"):
        # only the outermost sequence of this node (skip inline wrapper types)
        parent = seq.getparent()
        while parent is not None and parent is not node and parent.tag != XS + "element":
            parent = parent.getparent()
        if parent is not node and not (parent is not None and parent.tag == XS + "element" and parent is node):
            continue
        for el in seq.findall(XS + "element"):
            typ = (el.get("type") or "").split(":")[-1]
            hi = el.get("maxOccurs", "1")
            out.append((el.get("name"), typ, el.get("minOccurs", "1"), "unbounded" if hi == "unbounded" else hi))
    return out


def _schema_index(root: etree._Element) -> tuple[dict, dict, dict]:
    types, elements, enums = {}, {}, {}
    for schema in root.iter(XS + "schema"):
        if schema.get("targetNamespace") != "http://exacttarget.com/wsdl/partnerAPI":
            continue
        for ct in schema.findall(XS + "complexType"):
            ext = ct.find(f".//{XS}extension")
            types[ct.get("name")] = ((ext.get("base").split(":")[-1] if ext is not None else None), _sequence(ct))
        for el in schema.findall(XS + "element"):
            elements[el.get("name")] = _sequence(el) if el.find(XS + "complexType") is not None else el.get("type")
        for st in schema.findall(XS + "simpleType"):
            enums[st.get("name")] = [e.get("value") for e in st.iter(XS + "enumeration")]
    return types, elements, enums


@pytest.fixture(scope="module")
def ours() -> etree._Element:
    return etree.fromstring(build_wsdl("https://127.0.0.1:1/Service.asmx").encode())


def test_zeep_loads_the_wsdl_and_builds_every_operation(tmp_path, ours):
    import zeep

    path = tmp_path / "sandbox.wsdl"
    path.write_bytes(etree.tostring(ours))
    client = zeep.Client(str(path))
    for op, *_ in OPERATIONS:
        assert hasattr(client.service, op)
    assert client.get_type("ns0:SentEvent").name == "SentEvent"


def test_every_declared_type_is_rendered(ours):
    types, elements, enums = _schema_index(ours)
    assert set(TYPES) <= set(types)
    assert set(ELEMENTS) <= set(elements)
    assert set(ENUMS) <= set(enums)


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference WSDL not present")
def test_types_are_ordered_subsets_of_the_real_partner_api(ours):
    text = re.sub(r'<import id="APIFault"[^>]*/>', "", REFERENCE.read_text(encoding="utf-8"))
    real_types, real_elements, real_enums = _schema_index(etree.fromstring(text.encode()))
    our_types, our_elements, our_enums = _schema_index(ours)
    for name, (base, fields) in our_types.items():
        if name == "APIFault":
            continue
        assert name in real_types, f"{name} is not a PartnerAPI type"
        real_base, real_fields = real_types[name]
        assert base == real_base, f"{name}: base {base} != {real_base}"
        _assert_ordered_subset(name, fields, real_fields)
    for name, fields in our_elements.items():
        assert name in real_elements, f"element {name} is not in the PartnerAPI"
        if isinstance(fields, list):
            _assert_ordered_subset(name, fields, real_elements[name])
    for name, values in our_enums.items():
        assert values == real_enums[name], f"enum {name} differs"


def _assert_ordered_subset(name: str, ours: list, real: list) -> None:
    positions = {f[0]: i for i, f in enumerate(real)}
    last = -1
    for field in ours:
        assert field[0] in positions, f"{name}.{field[0]} is not in the real type"
        real_field = real[positions[field[0]]]
        assert field[1] == real_field[1] or not field[1], f"{name}.{field[0]}: type {field[1]} != {real_field[1]}"
        assert field[2:] == real_field[2:], f"{name}.{field[0]}: occurs {field[2:]} != {real_field[2:]}"
        assert positions[field[0]] > last, f"{name}.{field[0]} is out of order"
        last = positions[field[0]]


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference WSDL not present")
def test_operations_and_soap_actions_match_the_real_binding(ours):
    text = re.sub(r'<import id="APIFault"[^>]*/>', "", REFERENCE.read_text(encoding="utf-8"))
    real = etree.fromstring(text.encode())
    soap = {"soap": "http://schemas.xmlsoap.org/wsdl/soap/", "w": "http://schemas.xmlsoap.org/wsdl/"}
    real_actions = dict(zip(real.xpath("//w:binding/w:operation/@name", namespaces=soap),
                            real.xpath("//w:binding/w:operation/soap:operation/@soapAction", namespaces=soap)))
    our_actions = dict(zip(ours.xpath("//w:binding/w:operation/@name", namespaces=soap),
                           ours.xpath("//w:binding/w:operation/soap:operation/@soapAction", namespaces=soap)))
    for op, action in our_actions.items():
        assert real_actions[op] == action
    real_messages = {m.get("name"): m[0].get("element") for m in real.findall("{http://schemas.xmlsoap.org/wsdl/}message") if len(m)}
    for _op, in_msg, in_el, out_msg, out_el in OPERATIONS:
        assert real_messages[in_msg] == f"tns:{in_el}"
        assert real_messages[out_msg] == f"tns:{out_el}"
