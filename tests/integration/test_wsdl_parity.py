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


# -- live: a client built from the REAL WSDL against the sandbox -----------------------------


@pytest.fixture
def real_wsdl_sandbox(tmp_path: Path):
    from connector.sandbox.marketing_cloud import start_esp_sandbox
    from connector.sandbox.tls import SandboxCA

    ca = SandboxCA(tmp_path / "ca")
    sandbox = start_esp_sandbox(tmp_path / "esp", ca, import_root=tmp_path / "sftp", import_delay=0.0)
    try:
        yield sandbox, ca
    finally:
        sandbox.stop()


def test_adapter_on_the_real_wsdl_gets_correct_answers_from_the_sandbox(real_wsdl_sandbox, tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from pydantic import SecretStr

    from connector.config import Config, EspSettings, ServiceSettings
    from connector.esp.marketing_cloud import MarketingCloudEspClient
    from connector.models import EventType, Subscriber, SubscriberStatus

    sandbox, ca = real_wsdl_sandbox
    config = Config(
        esp=EspSettings(wsdl=str(REAL_WSDL), endpoint=sandbox.soap_url, auth="oauth", auth_url=sandbox.auth_url,
                        client_id=sandbox.client_id, client_secret=SecretStr(sandbox.client_secret),
                        ca_bundle=ca.ca_file),
        service=ServiceSettings(data_dir=tmp_path / "data"),
    )
    esp = MarketingCloudEspClient.from_config(config)
    try:
        list_id = esp.ensure_list("cesp-list-real", "Real WSDL")
        results = esp.upsert_subscribers(
            [Subscriber("r-1", "r1@example.com", {"First Name": "Ré"}), Subscriber("r-2", "broken", {})], list_id)
        assert [r.ok for r in results] == [True, False]
        assert esp.subscriber_statuses(["r-1", "r-2"]) == {"r-1": SubscriberStatus.ACTIVE}
        send = esp.start_send("cesp-send-real", list_id, "cesp-demo-email", "Default Commercial", "Real")
        sandbox.advance_past_delays()  # a started send is retrievable a while after the start
        assert esp.find_send("cesp-send-real").job_id == send.job_id
        job = sandbox.store.generate_events(3000, event_types=("ClickEvent",), hours=2)
        events = [e for page in esp.iter_event_pages(EventType.CLICK, datetime.now(timezone.utc) - timedelta(days=1))
                  for e in page if e.job_id == str(job)]
        assert len(events) == 3000 and all(e.url for e in events)
        assert {"First Name", "Country"} <= esp.profile_attributes()  # Describe Subscriber, real WSDL
    finally:
        esp.close()


def test_zeep_objects_from_the_real_wsdl_read_sandbox_replies(real_wsdl_sandbox) -> None:
    """zeep's own service proxy, built from the real WSDL, parses the sandbox's replies."""
    import requests
    import zeep
    from zeep.transports import Transport
    from zeep.wsse.username import UsernameToken

    from connector.esp.wsdl import _PartnerTransport  # noqa: PLC2701 - the offline fault-schema loader

    sandbox, ca = real_wsdl_sandbox
    sandbox.store.add_subscriber("z-1", "z1@example.com", status="Held")
    with requests.Session() as session:
        session.verify = str(ca.ca_file)
        session.trust_env = False
        transport = _PartnerTransport(session=session)
        assert isinstance(transport, Transport)
        client = zeep.Client(str(REAL_WSDL), transport=transport,
                             wsse=UsernameToken(sandbox.username, sandbox.password))
        service = client.create_service(f"{{{TNS}}}SoapBinding", sandbox.soap_url)
        simple = client.get_type(f"{{{TNS}}}SimpleFilterPart")
        request = client.get_type(f"{{{TNS}}}RetrieveRequest")(
            ObjectType="Subscriber", Properties=["SubscriberKey", "EmailAddress", "Status"],
            Filter=simple(Property="SubscriberKey", SimpleOperator="equals", Value=["z-1"]))
        reply = service.Retrieve(RetrieveRequest=request)
        assert reply.OverallStatus == "OK"
        assert [(r.SubscriberKey, r.EmailAddress, r.Status) for r in reply.Results] == [("z-1", "z1@example.com", "Held")]
        created = service.Create(Options={}, Objects=[client.get_type(f"{{{TNS}}}List")(CustomerKey="z-list", ListName="Z")])
        assert created.OverallStatus == "OK" and created.Results[0].StatusCode == "OK" and created.Results[0].NewID
        described = service.Describe(DescribeRequests={"ObjectDefinitionRequest": [{"ObjectType": "Subscriber"}]})
        extended = described.ObjectDefinition[0].ExtendedProperties.ExtendedProperty
        assert "Email Address" in {p.Name for p in extended} and {p.PropertyType for p in extended} >= {"string"}
