"""Forms and views (issue 20.4): crm-setup creates and publishes them, the Dataverse sandbox checks them.

Read back over the Web API (HTTPS, OAuth) as an admin tool would; the views' FetchXml is run
against the sandbox to show they list what their names say.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote

import pytest

from connector.crm.setup import CrmSetup
from connector.crm.ui import SUBGRID_CLASSID, forms, views
from tests.fixtures.sandbox import crm_session_for

FAILED, SENT, PENDING = 100000003, 100000002, 100000000


@pytest.fixture
def org(crm_org, crm_ca):
    crm_org.ca_file = crm_ca.ca_file
    with crm_session_for(crm_org) as session:
        yield crm_org, session


def _form(session, api, table: str) -> dict:
    rows = session.get(api + "systemforms", params={
        "$select": "name,type,formxml,publishedon", "$filter": f"objecttypecode eq '{table}'"}).json()["value"]
    assert len(rows) == 1, rows
    return rows[0]


def test_the_send_request_form_has_its_tabs_fields_and_subgrids(org) -> None:
    crm, session = org
    form = _form(session, crm.api_url, "cesp_sendrequest")
    assert form["type"] == 2 and form["name"] == "Email send request" and form["publishedon"]
    root = ET.fromstring(form["formxml"])
    tabs = {tab.get("name"): tab for tab in root.iter("tab")}
    assert list(tabs) == ["general", "targets", "results"]
    fields = {name: [c.get("datafieldname") for c in tab.iter("control") if c.get("datafieldname")]
              for name, tab in tabs.items()}
    assert fields["general"] == ["cesp_name", "cesp_campaignid", "cesp_emailid", "cesp_status", "ownerid"]
    assert {"cesp_resolved", "cesp_skippedbyreason", "cesp_reason", "cesp_espjobid", "cesp_opencount",
            "cesp_previewwouldsend"} <= set(fields["results"])
    grids = [(c.findtext("parameters/RelationshipName"), c.findtext("parameters/TargetEntityType"))
             for c in tabs["targets"].iter("control") if c.get("classid") == SUBGRID_CLASSID]
    assert grids == [("cesp_sendrequest_list", "list"), ("cesp_sendrequest_contact", "contact"),
                     ("cesp_sendrequest_lead", "lead"), ("cesp_sendrequest_account", "account")]
    for table in ("contact", "lead"):
        engagement = ET.fromstring(_form(session, crm.api_url, table)["formxml"])
        assert [c.get("datafieldname") for c in engagement.iter("control")] == [
            "donotbulkemail", "cesp_lastbounceon", "cesp_lastbouncetype", "cesp_lastbouncejob"]
    assert all(not crm.records.customizations.unpublished(t) for t in ("cesp_sendrequest", "contact", "lead"))


def test_the_views_list_what_their_names_say(org, crm_seed) -> None:
    crm, session = org
    api = crm.api_url
    found = session.get(api + "savedqueries", params={
        "$select": "savedqueryid,name,querytype,fetchxml,layoutxml",
        "$filter": "returnedtypecode eq 'cesp_sendrequest'"}).json()["value"]
    by_name = {row["name"]: row for row in found}
    assert set(by_name) == {"My pending sends", "Failed sends", "Sent in the last 30 days"}
    assert {row["querytype"] for row in found} == {0}
    otc = session.get(api + "EntityDefinitions(LogicalName='cesp_sendrequest')",
                      params={"$select": "ObjectTypeCode"}).json()["ObjectTypeCode"]
    assert all(ET.fromstring(row["layoutxml"]).get("object") == str(otc) for row in found)
    mine = crm_seed.send_request([], owner=crm.app_user_id, cesp_name="mine")
    crm_seed.send_request([], cesp_name="someone else's")
    failed = crm_seed.send_request([], cesp_name="failed", cesp_status=FAILED)
    recent = crm_seed.send_request([], cesp_name="sent", cesp_status=SENT, cesp_releasedon="2020-01-01T00:00:00Z")
    session.patch(api + f"cesp_sendrequests({recent})", json={"cesp_releasedon": _days_ago(3)}).raise_for_status()
    crm_seed.send_request([], cesp_name="sent long ago", cesp_status=SENT, cesp_releasedon="2020-01-01T00:00:00Z")

    def listed(name: str) -> list[str]:
        fetch = by_name[name]["fetchxml"]
        rows = session.get(api + "cesp_sendrequests?fetchXml=" + quote(fetch)).json()["value"]
        return [row["cesp_sendrequestid"] for row in rows]

    assert listed("My pending sends") == [mine]
    assert listed("Failed sends") == [failed]
    assert listed("Sent in the last 30 days") == [recent]


def _days_ago(days: int) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_crm_setup_again_finds_them_and_puts_back_a_form_changed_by_hand(org, crm_client) -> None:
    crm, session = org
    again = CrmSetup(crm_client.http).run(dry_run=True)
    assert again.planned == []
    assert {"form cesp_sendrequest: Email send request", "view cesp_sendrequest: Failed sends",
            "form contact: Email engagement"} <= set(again.present)
    form_id = forms()[0].form_id
    session.patch(crm.api_url + f"systemforms({form_id})",
                  json={"formxml": "<form><tabs><tab name='x'><columns><column/></columns></tab></tabs></form>"}
                  ).raise_for_status()
    assert crm.records.customizations.unpublished("cesp_sendrequest") == ["Email send request"]
    assert CrmSetup(crm_client.http).run(dry_run=True).planned == [
        "form cesp_sendrequest: Email send request", "publish cesp_sendrequest"]
    done = CrmSetup(crm_client.http).run()
    assert done.changed == ["form cesp_sendrequest: Email send request"]
    assert done.published == ["cesp_sendrequest"]
    assert ET.fromstring(_form(session, crm.api_url, "cesp_sendrequest")["formxml"]).find(
        "tabs/tab").get("name") == "general"
    assert crm.records.customizations.unpublished("cesp_sendrequest") == []


GOOD_FORM = ("<form><tabs><tab name='t'><columns><column><sections><section name='s'><rows><row><cell>"
             "{control}</cell></row></rows></section></sections></column></columns></tab></tabs></form>")
SUBGRID = ("<control id='g' classid='" + SUBGRID_CLASSID.replace("{", "{{").replace("}", "}}")
           + "'><parameters><RelationshipName>{rel}"
           "</RelationshipName><TargetEntityType>{target}</TargetEntityType>{view}</parameters></control>")


BAD_FORMS = [
    ("<form><tabs>", "not well-formed"),
    ("<forms/>", "root element must be <form>"),
    ("<form/>", "needs one <tabs>"),
    ("<form><tabs><tab name='t'/></tabs></form>", "tab 't' needs one <columns>"),
    (GOOD_FORM.format(control="<control id='c' datafieldname='cesp_nosuch'/>"), "'cesp_nosuch', which is not"),
    (GOOD_FORM.format(control=SUBGRID.format(rel="cesp_sendrequest_nosuch", target="list", view="")),
     "names relationship 'cesp_sendrequest_nosuch'"),
    (GOOD_FORM.format(control=SUBGRID.format(rel="cesp_sendrequest_list", target="contact", view="")),
     "relates 'list', not 'contact'"),
    (GOOD_FORM.format(control=SUBGRID.format(rel="cesp_sendrequest_list", target="list",
                                             view="<ViewId>not-a-guid</ViewId>")), "is not a GUID in braces"),
]


def test_the_sandbox_refuses_a_form_it_could_not_show(org) -> None:
    crm, session = org
    for formxml, message in BAD_FORMS:
        r = session.post(crm.api_url + "systemforms", json={
            "name": "Bad", "objecttypecode": "cesp_sendrequest", "type": 2, "formxml": formxml})
        assert r.status_code == 400 and message in r.json()["error"]["message"], (formxml, r.text)
    good = session.post(crm.api_url + "systemforms", json={
        "name": "Good", "objecttypecode": "cesp_sendrequest", "type": 2,
        "formxml": GOOD_FORM.format(control=SUBGRID.format(rel="cesp_sendrequest_list", target="list", view=""))})
    assert good.status_code == 204, good.text


def test_the_sandbox_refuses_a_form_of_a_table_that_does_not_exist(org) -> None:
    crm, session = org
    r = session.post(crm.api_url + "systemforms", json={
        "name": "Bad", "objecttypecode": "cesp_nosuch", "type": 2, "formxml": GOOD_FORM.format(control="")})
    assert r.status_code == 400 and "'cesp_nosuch' is not a table" in r.json()["error"]["message"]


def _view_body(layoutxml: str) -> dict:
    view = views()[1]
    return {"name": "Bad", "returnedtypecode": view.table, "querytype": 0, "fetchxml": view.fetchxml(),
            "layoutxml": layoutxml}


BAD_VIEWS = [
    ({"querytype": 2}, "only public views (0) can be created"),
    ({"returnedtypecode": "nosuch"}, "'nosuch' is not a table"),
    ({"fetchxml": "<fetch><entity name='contact'><attribute name='fullname'/></entity></fetch>"},
     "the view's entity is 'contact'"),
    ({"fetchxml": "<fetch><entity name='cesp_sendrequest'><attribute name='cesp_nosuch'/></entity></fetch>"},
     "doesn't contain attribute with Name = 'cesp_nosuch'"),
    ({"layoutxml": "<grid name='resultset' object='{otc}' select='1' icon='1' preview='1'/>"},
     "needs the attributes jump"),
    ({"layoutxml": "<grid name='resultset' object='2' jump='cesp_name' select='1' icon='1' preview='1'>"
                   "<row name='result' id='cesp_sendrequestid'/></grid>"}, "is not the type code"),
    ({"layoutxml": "<grid name='resultset' object='{otc}' jump='cesp_nosuch' select='1' icon='1' preview='1'>"
                   "<row name='result' id='cesp_sendrequestid'/></grid>"}, "jump 'cesp_nosuch'"),
    ({"layoutxml": "<grid name='resultset' object='{otc}' jump='cesp_name' select='1' icon='1' preview='1'>"
                   "<row name='result' id='contactid'/></grid>"}, "needs one <row name=\"result\""),
    ({"layoutxml": "<grid name='resultset' object='{otc}' jump='cesp_name' select='1' icon='1' preview='1'>"
                   "<row name='result' id='cesp_sendrequestid'><cell name='cesp_nosuch'/></row></grid>"},
     "cell 'cesp_nosuch'"),
    ({"layoutxml": "<grid"}, "not well-formed"),
]


def test_the_sandbox_refuses_a_view_it_could_not_show(org) -> None:
    crm, session = org
    otc = crm.store.schema.entity("cesp_sendrequest").object_type_code
    for change, message in BAD_VIEWS:
        body = _view_body(layoutxml=views()[1].layoutxml(otc))
        body.update({k: (v.replace("{otc}", str(otc)) if isinstance(v, str) else v) for k, v in change.items()})
        r = session.post(crm.api_url + "savedqueries", json=body)
        assert r.status_code == 400 and message in r.json()["error"]["message"], (change, r.text)
    view_id = views()[1].view_id  # an existing view of any kind can be updated
    assert session.patch(crm.api_url + f"savedqueries({view_id})", json={"querytype": 2}).status_code == 204


def test_publish_xml_names_tables_that_exist(org) -> None:
    crm, session = org
    ok = session.post(crm.api_url + "PublishXml", json={
        "ParameterXml": "<importexportxml><entities><entity>contact</entity></entities></importexportxml>"})
    assert ok.status_code == 204
    for xml, message in (("<importexportxml><entities><entity>nosuch</entity></entities></importexportxml>",
                          "'nosuch' is not a table"), ("<publish/>", "must be <importexportxml>"),
                         ("<importexportxml>", "not well-formed")):
        r = session.post(crm.api_url + "PublishXml", json={"ParameterXml": xml})
        assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
