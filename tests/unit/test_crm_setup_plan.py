"""Unit tests of crm-setup planning, FetchXML rewriting and send-request rows (no sockets)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import responses

from connector.crm import fetchxml
from connector.crm.odata import ODataHttp
from connector.crm.records import SendRequestColumns
from connector.crm.setup import CrmSetup, customizations
from connector.models import SendRequestUpdate, SendStatus, TargetKind

API = "https://org.example.test/api/data/v9.2/"


def _http() -> ODataHttp:
    return ODataHttp("https://org.example.test", sleep=lambda s: None)


@responses.activate
def test_plan_creates_everything_on_an_empty_org() -> None:
    responses.add(responses.GET, API + "EntityDefinitions", json={"value": []})
    responses.add(responses.GET, re.compile(re.escape(API) + r"EntityDefinitions\(.*\)/(Attributes|Keys).*"),
                  json={"value": [{"LogicalName": "emailaddress1"}]})
    for table in ("contact", "lead", "account"):
        responses.add(responses.GET, API + f"EntityDefinitions(LogicalName='{table}')",
                      json={"LogicalName": table, "ChangeTrackingEnabled": False})
    responses.add(responses.GET, API + "RelationshipDefinitions", json={"value": []})
    responses.add(responses.GET, re.compile(re.escape(API) + r"(systemforms|savedqueries)\(.*"), status=404,
                  json={"error": {"code": "0x80040217", "message": "Does Not Exist"}})
    responses.add(responses.GET, API + "EntityDefinitions(LogicalName='cesp_sendrequest')",
                  json={"ObjectTypeCode": 10042})
    responses.add(responses.POST, re.compile(re.escape(API) + ".*"), status=204)
    responses.add(responses.PUT, re.compile(re.escape(API) + ".*"), status=204)
    http = _http()
    report = CrmSetup(http).run(wait=False)
    http.close()
    spec = customizations()
    assert len(report.created) == (len(spec.tables) + len(spec.columns) + len(spec.keys) + len(spec.relationships)
                                   + len(spec.forms) + len(spec.views))
    puts = [c.request for c in responses.calls if c.request.method == "PUT"]
    assert [json.loads(p.body)["ChangeTrackingEnabled"] for p in puts] == [True, True, True]
    assert report.changed == ["change tracking contact", "change tracking lead", "change tracking account"]
    assert report.published == ["cesp_sendrequest, contact, lead"]
    posts = [c.request for c in responses.calls if c.request.method == "POST"]
    ui = [p for p in posts if re.search(r"/(systemforms|savedqueries|PublishXml)$", p.url)]
    assert [p.url.rsplit("/", 1)[1] for p in ui] == ["systemforms"] * 3 + ["savedqueries"] * 3 + ["PublishXml"]
    assert "<entity>cesp_sendrequest</entity>" in json.loads(ui[-1].body)["ParameterXml"]
    assert 'object="10042"' in json.loads(ui[3].body)["layoutxml"]
    posts = [p for p in posts if p not in ui]
    first = json.loads(posts[0].body)
    assert posts[0].url.endswith("/EntityDefinitions")
    assert first["SchemaName"] == "cesp_Email" and first["Attributes"][0]["IsPrimaryName"] is True
    assert json.loads(posts[1].body)["SchemaName"] == "cesp_SendRequest"
    lookup = [json.loads(p.body) for p in posts if p.url.endswith("RelationshipDefinitions")]
    assert [b["Lookup"]["SchemaName"] for b in lookup if "Lookup" in b] == [
        "cesp_CampaignId", "cesp_EmailId", "cesp_SendRequestId"]
    assert [(b["Entity1LogicalName"], b["Entity2LogicalName"]) for b in lookup if "Lookup" not in b] == [
        ("cesp_sendrequest", "list"), ("cesp_sendrequest", "contact"), ("cesp_sendrequest", "lead"),
        ("cesp_sendrequest", "account")]
    status = next(json.loads(p.body) for p in posts if json.loads(p.body).get("SchemaName") == "cesp_Status")
    options = [(o["Value"], o["Label"]["LocalizedLabels"][0]["Label"]) for o in status["OptionSet"]["Options"]]
    assert options == [(100000000, "Pending"), (100000001, "Processing"), (100000002, "Sent"),
                       (100000003, "Failed"), (100000004, "Cancelled"), (100000005, "Draft"),
                       (100000006, "Preview requested"), (100000007, "Previewed"), (100000008, "Importing"),
                       (100000009, "Scheduled")]
    assert posts[-1].url.endswith("EntityDefinitions(LogicalName='campaignresponse')/Keys")
    assert json.loads(posts[-1].body)["KeyAttributes"] == ["cesp_trackingkey"]
    assert json.loads(posts[-2].body)["KeyAttributes"] == ["cesp_customerkey"]


@responses.activate
def test_plan_is_idempotent_when_all_present(monkeypatch) -> None:
    spec = customizations()
    monkeypatch.setattr(CrmSetup, "plan_ui", lambda self: ([], []))  # forms and views: test_crm_forms
    responses.add(responses.GET, API + "EntityDefinitions", json={"value": [{"LogicalName": "cesp_sendrequest"}]})
    responses.add(responses.GET, API + "RelationshipDefinitions", json={"value": [{"SchemaName": "x"}]})
    status = next(c for c in spec.columns if c.kind == "Picklist")
    responses.add(responses.GET, re.compile(re.escape(API) + r".*PicklistAttributeMetadata.*"),
                  json={"value": [{"LogicalName": "cesp_status",
                                   "OptionSet": {"Options": [{"Value": v} for v, _ in status.options]}}]})
    for table in {c.table for c in spec.columns}:
        names = [{"LogicalName": c.logical_name} for c in spec.columns if c.table == table]
        responses.add(responses.GET, API + f"EntityDefinitions(LogicalName='{table}')/Attributes",
                      json={"value": names})
    for key in spec.keys:
        responses.add(responses.GET, API + f"EntityDefinitions(LogicalName='{key.table}')/Keys",
                      json={"value": [{"LogicalName": key.logical_name}]})
    for table in ("contact", "lead", "account"):
        responses.add(responses.GET, API + f"EntityDefinitions(LogicalName='{table}')",
                      json={"LogicalName": table, "ChangeTrackingEnabled": True})
    http = _http()
    report = CrmSetup(http).run(dry_run=True)
    http.close()
    assert report.planned == [] and report.created == []
    assert "key campaignresponse.cesp_trackingkey_key" in report.present


def test_fetchxml_columns_replaced_and_cookie_decoded() -> None:
    query = ("<fetch version='1.0' top='10'><entity name='contact'><all-attributes/>"
             "<filter><condition attribute='address1_city' operator='eq' value='Oslo'/></filter>"
             "</entity></fetch>")
    root = fetchxml.prepare(query, "contactid", ["emailaddress1", "_parentcustomerid_value"])
    text = fetchxml.page_query(root, 2, 50, "<cookie page=\"1\"><contactid last=\"{X}\"/></cookie>")
    assert "all-attributes" not in text and "top=" not in text
    assert '<attribute name="contactid" />' in text and '<attribute name="parentcustomerid" />' in text
    assert 'page="2"' in text and 'count="50"' in text and "address1_city" in text
    inner = '<cookie page="1"><contactid last="{X}" /></cookie>'
    annotation = f'<cookie pagenumber="2" pagingcookie="{quote(quote(inner))}" istracking="False" />'
    assert fetchxml.next_cookie(annotation) == inner


L1 = "0b5b3a52-6a7e-4d0b-9d0e-1f2a3b4c5d6e"


def test_send_request_row_and_update_body() -> None:
    cols = SendRequestColumns("cesp")
    row = {"cesp_sendrequestid": "r1", "cesp_name": "Nov", "cesp_status": 100000000, "@odata.etag": 'W/"5"',
           "cesp_targets": json.dumps([{"kind": "list", "id": L1}, {"kind": "bogus", "id": "x"}]),
           "_ownerid_value": "u1", "_cesp_campaignid_value": None, "createdon": "2026-11-01T10:00:00Z"}
    req = cols.from_row(row)
    assert req.status is SendStatus.PENDING and req.etag == 'W/"5"' and req.campaign_id is None
    assert [(t.kind, t.id) for t in req.targets] == [(TargetKind.LIST, L1)]
    assert req.invalid_targets == ('target 2 {"kind": "bogus", "id": "x"}: unknown kind \'bogus\'; '
                                   'use one of list, campaign, contact, lead, account',)
    body = cols.update_body(SendRequestUpdate(status=SendStatus.SENT, handed_over=3,
                                              skipped_by_reason={"no_email": 1}, counts={"opens": 2}))
    assert body["cesp_status"] == 100000002 and body["cesp_handedover"] == 3
    assert body["cesp_opencount"] == 2 and "cesp_trackingupdatedon" in body
