"""SOAP 1.1 wire helpers for the Marketing Cloud sandbox: parsing requests, rendering replies.

Requests are parsed with lxml into plain values (``Obj``: an object's xsi:type and its
children). Replies are rendered as text in the element order of the schema table in
``wsdl.py``, in the default namespace of the PartnerAPI, as the real service answers.
Dates on the wire are Central Standard Time (UTC-6 all year) without an offset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from xml.sax.saxutils import escape

from lxml import etree

from connector.sandbox.marketing_cloud.wsdl import TNS, fields_of

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
CST = timezone(timedelta(hours=-6), "CST")
_XSI_TYPE = f"{{{XSI}}}type"
_XSI_NIL = f"{{{XSI}}}nil"

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


class SoapFault(Exception):
    """A fault to answer with (HTTP 500)."""

    def __init__(self, code: str, message: str, *, api_code: int | None = None, security: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.api_code = api_code
        self.security = security


@dataclass
class Obj:
    """A parsed APIObject (or any complex value): its xsi:type and child values by name."""

    type: str
    values: dict[str, list[Any]] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        items = self.values.get(name)
        return items[0] if items else default

    def all(self, name: str) -> list[Any]:
        return self.values.get(name, [])

    def text(self, name: str, default: str = "") -> str:
        value = self.get(name)
        return value if isinstance(value, str) else default


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_value(el: etree._Element) -> Any:
    """An element as a string (leaf), None (nil) or an Obj (has children)."""
    if el.get(_XSI_NIL) in ("true", "1"):
        return None
    xsi_type = el.get(_XSI_TYPE)
    if len(el) == 0 and xsi_type is None:
        return el.text or ""
    obj = Obj(type=xsi_type.rsplit(":", 1)[-1] if xsi_type else "")
    for child in el:
        if not isinstance(child.tag, str):
            continue
        obj.values.setdefault(local(child.tag), []).append(parse_value(child))
    if len(el) == 0:  # typed leaf without children, e.g. <Filter xsi:type="..."/>
        obj.values.setdefault("_text", [el.text or ""])
    return obj


def parse_envelope(body: bytes) -> tuple[etree._Element, etree._Element, str]:
    """(Header or an empty element, the first element of Body, the envelope namespace).

    Raises SoapFault on junk.
    """
    try:
        root = etree.fromstring(body, PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("soap:Client", f"Server was unable to read request. There is an error in XML document: {exc}") from exc
    if local(root.tag) != "Envelope" or etree.QName(root).namespace not in (SOAP_ENV, SOAP12_ENV):
        raise SoapFault("soap:VersionMismatch", "Possible SOAP version mismatch: Envelope namespace was unexpected.")
    header = body_el = None
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if local(child.tag) == "Header":
            header = child
        elif local(child.tag) == "Body":
            body_el = child
    payload = next((c for c in body_el if isinstance(c.tag, str)), None) if body_el is not None else None
    if payload is None:
        raise SoapFault("soap:Client", "Server was unable to read request: the SOAP Body is empty.")
    return (header if header is not None else etree.Element("Header")), payload, etree.QName(root).namespace


# ---------------------------------------------------------------- dates

def to_cst_text(moment: datetime) -> str:
    """An aware datetime as the service writes it: CST, no offset, milliseconds."""
    text = moment.astimezone(CST).replace(tzinfo=None).isoformat(timespec="milliseconds")
    return text


def epoch_to_cst_text(ts: int) -> str:
    """Whole epoch seconds (UTC) as CST text without offset; the fast path for events."""
    tm = time.gmtime(ts - 21600)
    return "%04d-%02d-%02dT%02d:%02d:%02d" % tm[:6]


def parse_date(text: str) -> datetime:
    """An incoming date: 'Z' = UTC, an offset is honoured, no offset = server time (CST)."""
    raw = text.strip()
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        try:
            value = datetime.strptime(raw, "%m/%d/%Y %I:%M:%S %p")
        except ValueError as exc:
            raise ValueError(f"'{text}' is not a valid date") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=CST)
    return value.astimezone(timezone.utc)


# ---------------------------------------------------------------- rendering

def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return to_cst_text(value)
    return escape(str(value))


def render_value(name: str, value: Any, declared: str = "") -> str:
    """One element. ``value``: scalar, None (nil), a list (repeated), or (type, dict) object."""
    if isinstance(value, list):
        return "".join(render_value(name, v, declared) for v in value)
    if value is None:
        return f'<{name} xsi:nil="true" />'
    if isinstance(value, tuple):
        type_name, values = value
        type_attr = f' xsi:type="{type_name}"' if type_name != declared else ""
        return f"<{name}{type_attr}>{render_fields(type_name, values)}</{name}>"
    if isinstance(value, dict):  # an inline wrapper such as Results/Result or SaveOptions
        inner = "".join(render_value(k, v) for k, v in value.items())
        return f"<{name}>{inner}</{name}>"
    return f"<{name}>{_scalar(value)}</{name}>"


def render_fields(type_name: str, values: dict[str, Any], only: Iterable[str] | None = None) -> str:
    """The children of an object of ``type_name``, in schema order.

    ``PartnerKey`` and ``ObjectID`` are written as nil when absent, as the real
    service does. ``only`` limits output to requested properties.
    """
    wanted = set(only) if only is not None else None
    out = []
    for f in fields_of(type_name):
        name = f[0]
        if name in values:
            if values[name] is None and not (len(f) > 4 and f[4]):
                continue
            if wanted is not None and name not in wanted and name not in ("PartnerKey", "ObjectID"):
                continue
            declared = f[1].split(":", 1)[-1]
            out.append(render_value(name, values[name], declared))
        elif name in ("PartnerKey", "ObjectID") and type_name not in ("Attribute", "APIProperty"):
            out.append(f'<{name} xsi:nil="true" />')
    return "".join(out)


def envelope(body_xml: str, action: str = "", request_id: str = "", soap_ns: str = SOAP_ENV) -> bytes:
    header = ""
    if action:
        header = (
            f'<soap:Header><wsa:Action>{action}Response</wsa:Action>'
            f"<wsa:MessageID>urn:uuid:{request_id}</wsa:MessageID></soap:Header>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{soap_ns}" xmlns:xsi="{XSI}" '
        f'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:wsa="{WSA}">'
        f"{header}<soap:Body>{body_xml}</soap:Body></soap:Envelope>"
    ).encode("utf-8")


def message(element: str, inner: str) -> str:
    return f'<{element} xmlns="{TNS}">{inner}</{element}>'


def fault_xml(fault: SoapFault, soap_ns: str = SOAP_ENV) -> bytes:
    """A SOAP 1.1 fault (or SOAP 1.2 when the request was 1.2) with the apifault detail."""
    if fault.api_code is not None:
        detail = (
            '<apifault xmlns="urn:fault.partner.exacttarget.com">'
            f"<Code>{fault.api_code}</Code><Message>{escape(fault.message)}</Message></apifault>"
        )
    else:
        detail = ""
    if soap_ns == SOAP12_ENV:
        value = "soap:Receiver" if fault.code.endswith("Server") else "soap:Sender"
        sub = f'<soap:Subcode><soap:Value xmlns:q0="{WSSE}">q0:Security</soap:Value></soap:Subcode>' if fault.security else ""
        return envelope(
            f"<soap:Fault><soap:Code><soap:Value>{value}</soap:Value>{sub}</soap:Code>"
            f'<soap:Reason><soap:Text xml:lang="en">{escape(fault.message)}</soap:Text></soap:Reason>'
            f"<soap:Detail>{detail}</soap:Detail></soap:Fault>", soap_ns=soap_ns)
    if fault.security:
        code = f'<faultcode xmlns:q0="{WSSE}">q0:Security</faultcode>'
    else:
        code = f"<faultcode>{escape(fault.code)}</faultcode>"
    detail_xml = f"<detail>{detail}</detail>" if detail else "<detail />"
    return envelope(f"<soap:Fault>{code}<faultstring>{escape(fault.message)}</faultstring>{detail_xml}</soap:Fault>")
