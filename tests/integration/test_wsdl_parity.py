"""The sandbox's WSDL against the real PartnerAPI WSDL (when ../shared/reference has it).

1. Static: every complexType, top-level element, enumeration and operation the sandbox
   defines exists in the real WSDL, with the same base type, and its elements are the
   real ones - same names, same types - in the same order (a subset is fine: the
   sandbox leaves out what the connector never uses).
2. Live: a zeep client built from the REAL WSDL, endpoint overridden, gets correct
   answers from the sandbox (through the adapter and through zeep's own reply parser).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

TNS = "http://exacttarget.com/wsdl/partnerAPI"
XSD = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
REAL_WSDL = Path(__file__).resolve().parents[3] / "shared" / "reference" / "ExactTargetWSDL.xml"
if not REAL_WSDL.exists():
    REAL_WSDL = Path("/work/shared/reference/ExactTargetWSDL.xml")

pytestmark = pytest.mark.skipif(not REAL_WSDL.exists(), reason="the real PartnerAPI WSDL (shared/reference) is absent")


def _qname(el: etree._Element, value: str | None) -> str:
    if not value:
        return ""
    prefix, _, local = value.rpartition(":")
    ns = el.nsmap.get(prefix or None, "")
    return f"{{{ns}}}{local}"


def _sequence(parent: etree._Element) -> list[tuple[str, str]]:
    """(element name, type) in order; an inline complexType is described by its children."""
    out = []
    sequence = parent.find(f"{{{XSD}}}sequence")
    children: list[etree._Element] = []
    for item in [] if sequence is None else sequence:
        if item.tag == f"{{{XSD}}}element":
            children.append(item)
        elif item.tag == f"{{{XSD}}}choice":  # a choice counts as its elements, in order
            children.extend(item.iterfind(f"{{{XSD}}}element"))
    for el in children:
        inline = el.find(f"{{{XSD}}}complexType")
        if inline is not None:
            typ = "inline(" + ",".join(f"{n}:{t}" for n, t in _sequence(inline)) + ")"
        else:
            typ = _qname(el, el.get("type"))
        out.append((el.get("name"), typ))
    return out


def _schema_of(doc: etree._Element) -> dict[str, dict]:
    found: dict[str, dict] = {"types": {}, "elements": {}, "enums": {}, "operations": {}}
    for schema in doc.iter(f"{{{XSD}}}schema"):
        if schema.get("targetNamespace") != TNS:
            continue
        for ct in schema.iterfind(f"{{{XSD}}}complexType"):
            ext = ct.find(f"{{{XSD}}}complexContent/{{{XSD}}}extension")
            holder = ext if ext is not None else ct
            base = _qname(ext, ext.get("base")) if ext is not None else ""
            found["types"][ct.get("name")] = (base, _sequence(holder))
        for el in schema.iterfind(f"{{{XSD}}}element"):
            inline = el.find(f"{{{XSD}}}complexType")
            found["elements"][el.get("name")] = _sequence(inline) if inline is not None else _qname(el, el.get("type"))
        for st in schema.iterfind(f"{{{XSD}}}simpleType"):
            found["enums"][st.get("name")] = [e.get("value") for e in st.iter(f"{{{XSD}}}enumeration")]
    messages = {m.get("name"): _qname(p, p.get("element")) for m in doc.iterfind(f"{{{WSDL}}}message")
                for p in m.iterfind(f"{{{WSDL}}}part")}
    for op in doc.iterfind(f"{{{WSDL}}}portType/{{{WSDL}}}operation"):
        inp = _qname(op.find(f"{{{WSDL}}}input"), op.find(f"{{{WSDL}}}input").get("message"))
        out = _qname(op.find(f"{{{WSDL}}}output"), op.find(f"{{{WSDL}}}output").get("message"))
        found["operations"][op.get("name")] = (messages.get(inp.split("}")[1]), messages.get(out.split("}")[1]))
    return found


def _is_subsequence(part: list, whole: list) -> bool:
    it = iter(whole)
    return all(item in it for item in part)


@pytest.fixture(scope="module")
def schemas() -> tuple[dict, dict]:
    from connector.sandbox.marketing_cloud.wsdl import build_wsdl

    sandbox = etree.fromstring(build_wsdl("https://127.0.0.1:1/Service.asmx").encode())
    real = etree.parse(str(REAL_WSDL)).getroot()
    return _schema_of(sandbox), _schema_of(real)


def test_every_sandbox_type_is_a_real_type_with_the_same_fields_in_order(schemas) -> None:
    sandbox, real = schemas
    problems = []
    for name, (base, fields) in sandbox["types"].items():
        if name not in real["types"]:
            problems.append(f"{name}: not a type of the real WSDL")
            continue
        real_base, real_fields = real["types"][name]
        if base != real_base:
            problems.append(f"{name}: base {base} != real {real_base}")
        names = [n for n, _ in real_fields]
        extra = [n for n, _ in fields if n not in names]
        if extra:
            problems.append(f"{name}: fields not in the real type: {extra}")
        elif not _is_subsequence([n for n, _ in fields], names):
            problems.append(f"{name}: field order differs from the real type: {[n for n, _ in fields]}")
        real_types = dict(real_fields)
        for field, typ in fields:
            if field in real_types and real_types[field] != typ:
                problems.append(f"{name}.{field}: type {typ} != real {real_types[field]}")
    assert not problems, "\n".join(problems)


def test_every_sandbox_element_and_enum_matches_the_real_one(schemas) -> None:
    sandbox, real = schemas
    problems = []
    for name, fields in sandbox["elements"].items():
        if name not in real["elements"]:
            problems.append(f"element {name}: not in the real WSDL")
        elif isinstance(fields, list):
            real_fields = real["elements"][name]
            if not _is_subsequence(fields, real_fields):
                problems.append(f"element {name}: {fields} is not an ordered subset of {real_fields}")
        elif fields != real["elements"][name]:
            problems.append(f"element {name}: type {fields} != {real['elements'][name]}")
    for name, values in sandbox["enums"].items():
        if name not in real["enums"]:
            problems.append(f"enum {name}: not in the real WSDL")
        elif set(values) - set(real["enums"][name]):
            problems.append(f"enum {name}: values {sorted(set(values) - set(real['enums'][name]))} not real")
    assert not problems, "\n".join(problems)


def test_every_sandbox_operation_has_the_real_messages(schemas) -> None:
    sandbox, real = schemas
    assert sandbox["operations"], "the sandbox WSDL defines no operation"
    for name, messages in sandbox["operations"].items():
        assert real["operations"].get(name) == messages, name
