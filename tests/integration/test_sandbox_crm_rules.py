"""Production rules of the Dataverse sandbox (docs/sandbox.md, "Production rules"): what the
real Web API refuses, refused the same way over HTTPS."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from connector.sandbox.dataverse.schema import Key
from tests.integration.test_sandbox_crm_webapi import _batch, _op

FORBIDDEN = "<>*%&:/\\+"
BATCH = {"Content-Type": "multipart/mixed; boundary=batch_abc"}


def _key_url(api: str, value: str) -> str:
    return f"{api}campaignresponses(cesp_trackingkey='{quote(value, safe='')}')"


def _response_body(camp: str) -> dict:
    return {"subject": "Opened", "channeltypecode": 1, "responsecode": 1,
            "regardingobjectid_campaign_campaignresponse@odata.bind": f"/campaigns({camp})"}


@pytest.mark.parametrize("char", list(FORBIDDEN))
def test_alternate_key_values_with_forbidden_characters_are_refused(crm_sandbox, crm_session, char):
    api = crm_sandbox.api_url
    camp = crm_sandbox.store.insert("campaigns", {"name": "Spring"})
    value = f"job1{char}sub1"
    url = _key_url(api, value)
    for method in ("GET", "PATCH", "DELETE"):
        r = crm_session.request(method, url, json=_response_body(camp) if method == "PATCH" else None)
        assert r.status_code == 400, (method, char, r.text)
    assert crm_sandbox.store.count("campaignresponses") == 0
    # inside $batch (no IIS path check there), the key itself is refused
    r = crm_session.post(api + "$batch", data=_batch([_op("PATCH", url, _response_body(camp))]),
                         headers=BATCH | {"Prefer": "odata.continue-on-error"})
    assert r.status_code == 200 and "HTTP/1.1 400 Bad Request" in r.text, r.text
    assert crm_sandbox.store.count("campaignresponses") == 0
    # and as a reference (@odata.bind, @odata.id) to a row whose key value was stored some other way
    crm_sandbox.store.add_key("account", Key("accountnumber_key", ("accountnumber",)))
    crm_sandbox.store.insert("accounts", {"name": "Acme", "accountnumber": value})
    bind = crm_session.post(api + "contacts", json={
        "lastname": "Ng", "parentcustomerid_account@odata.bind": f"/accounts(accountnumber='{value}')"})
    assert bind.status_code == 400 and bind.json()["error"]["code"] == "0x8006088a"
    upsert = crm_session.post(api + "accounts/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": [
        {"@odata.type": "Microsoft.Dynamics.CRM.account", "@odata.id": f"accounts(accountnumber='{value}')",
         "name": "Renamed"}]})
    assert upsert.status_code == 400
    assert crm_sandbox.store.count("contacts") == 0
    assert [a["name"] for a in crm_sandbox.store.rows("accounts")] == ["Acme"]
    # the same value is fine where no key addresses it
    assert crm_session.get(api + "accounts", params={"$filter": f"accountnumber eq '{value}'"}).json()["value"]


def test_request_path_characters_refused_by_the_front_end(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    r = crm_session.get(_key_url(api, "a:b"))
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/html")
    assert "potentially dangerous Request.Path value was detected from the client (:)" in r.text
    slash = crm_session.get(_key_url(api, "a/b"))
    assert slash.status_code == 400 and slash.json()["error"]["code"] == "0x8006088a"
    # the same characters are fine in a query string
    ok = crm_session.get(api + "campaignresponses", params={"$filter": "cesp_trackingkey eq 'a:b/c*d%e&f'"})
    assert ok.status_code == 200 and ok.json()["value"] == []


def test_urls_over_32768_characters_are_refused_and_batch_allows_64_kb(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    long_filter = "lastname eq '" + "x" * 33_000 + "'"
    r = crm_session.get(api + "contacts", params={"$filter": long_filter})
    assert r.status_code == 414 and "The request URL is too long" in r.text
    inside = crm_session.post(api + "$batch", data=_batch([_op("GET", f"contacts?$filter={quote(long_filter)}")]),
                              headers=BATCH)
    assert inside.status_code == 200 and "HTTP/1.1 200 OK" in inside.text, inside.text[:300]
    too_long = "lastname eq '" + "x" * 66_000 + "'"
    over = crm_session.post(api + "$batch", data=_batch([_op("GET", f"contacts?$filter={quote(too_long)}")]),
                            headers=BATCH)
    assert over.status_code == 400 and "The Uri string is too long" in over.text


def test_content_id_references_resolve_only_inside_their_change_set(crm_sandbox, crm_session):
    api = crm_sandbox.api_url

    def changeset(name: str, *ops: str) -> str:
        return (f"Content-Type: multipart/mixed; boundary={name}\r\n\r\n"
                + "".join(f"--{name}\r\n{op}" for op in ops) + f"--{name}--\r\n")

    first = changeset("cs_1", _op("POST", "accounts", {"name": "Parent"}, "1"))
    second = changeset("cs_2", _op("POST", "contacts", {"lastname": "Child",
                                                         "parentcustomerid_account@odata.bind": "$1"}, "2"))
    r = crm_session.post(api + "$batch", data=_batch([first, second]), headers=BATCH)
    assert r.status_code == 400 and "Content-ID Reference: '$1' does not exist in the batch context." in r.text
    assert crm_sandbox.store.count("contacts") == 0
    # a part outside change sets cannot be referred to either
    loose = _op("POST", "accounts", {"name": "Loose"}, "7")
    after = _op("PATCH", "$7", {"name": "Renamed"})
    r = crm_session.post(api + "$batch", data=_batch([loose, after]), headers=BATCH)
    assert r.status_code == 400 and "'$7' does not exist" in r.text
    # inside one change set it works
    both = changeset("cs_3", _op("POST", "accounts", {"name": "P2"}, "1"),
                     _op("POST", "contacts", {"lastname": "C2", "parentcustomerid_account@odata.bind": "$1"}, "2"))
    ok = crm_session.post(api + "$batch", data=_batch([both]), headers=BATCH)
    assert ok.status_code == 200 and ok.text.count("HTTP/1.1 204 No Content") == 2


def test_select_of_a_lookup_needs_the_value_form(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    acc = crm_sandbox.store.insert("accounts", {"name": "Acme"})
    crm_sandbox.store.insert("contacts", {"lastname": "Ng", "parentcustomerid": ("account", acc)})
    for name in ("parentcustomerid", "ownerid"):
        r = crm_session.get(api + "contacts", params={"$select": f"lastname,{name}"})
        assert r.status_code == 400 and f"'_{name}_value'" in r.json()["error"]["message"]
    ok = crm_session.get(api + "contacts", params={"$select": "lastname,_parentcustomerid_value"})
    assert ok.status_code == 200 and ok.json()["value"][0]["_parentcustomerid_value"] == acc


def test_datetimeoffset_literals_need_an_offset(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    crm_sandbox.store.insert("contacts", {"lastname": "Ng"})
    for literal in ("2026-01-01T00:00:00", "2026-01-01T10:30"):
        r = crm_session.get(api + "contacts", params={"$filter": f"modifiedon gt {literal}"})
        assert r.status_code == 400, literal
    for literal in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123+02:00", "2026-01-01"):
        r = crm_session.get(api + "contacts", params={"$filter": f"modifiedon gt {literal}"})
        assert r.status_code == 200 and len(r.json()["value"]) == 1, literal


def _fetch(crm_session, api: str, xml: str) -> dict:
    r = crm_session.get(api + "contacts", params={"fetchXml": xml}, headers={"Prefer": 'odata.include-annotations="*"'})
    assert r.status_code == 200, r.text
    return r.json()


def test_fetchxml_simple_paging_stops_at_50000_rows(crm_sandbox, crm_session):
    import uuid as _uuid

    api = crm_sandbox.api_url
    entity = crm_sandbox.store.schema.entity("contact")
    crm_sandbox.store.bulk_insert(entity, ["contactid", "lastname"],
                                  ((str(_uuid.UUID(int=i + 1)), f"n{i}") for i in range(50_100)))
    page = "<fetch count='5000' page='{}'><entity name='contact'><attribute name='lastname'/></entity></fetch>"
    tenth = _fetch(crm_session, api, page.format(10))  # rows 45,001-50,000: the last ones simple paging gives
    assert len(tenth["value"]) == 5000 and "@Microsoft.Dynamics.CRM.morerecords" not in tenth
    eleventh = _fetch(crm_session, api, page.format(11))
    assert eleventh["value"] == [] and "@Microsoft.Dynamics.CRM.morerecords" not in eleventh
    # with the cookie of page 10 the same query goes on
    first = _fetch(crm_session, api, page.format(1))
    assert first["@Microsoft.Dynamics.CRM.morerecords"] is True and first["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"]
    last_of_ten = tenth["value"][-1]["contactid"]
    cookie = f"&lt;cookie page=&quot;10&quot;&gt;&lt;contactid last=&quot;{{{last_of_ten}}}&quot; /&gt;&lt;/cookie&gt;"
    on = _fetch(crm_session, api, f"<fetch count='5000' page='11' paging-cookie='{cookie}'><entity name='contact'>"
                "<attribute name='lastname'/></entity></fetch>")
    assert len(on["value"]) == 100


def test_fetchxml_ordered_on_a_link_entity_attribute_gets_no_paging_cookie(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    for i in range(5):
        crm_sandbox.store.insert("contacts", {"lastname": f"n{i}"})
    linked = ("<fetch count='2' page='1'><entity name='contact'><attribute name='lastname'/>"
              "<link-entity name='account' from='accountid' to='parentcustomerid' link-type='outer'>"
              "<order attribute='name'/></link-entity></entity></fetch>")
    body = _fetch(crm_session, api, linked)
    assert body["@Microsoft.Dynamics.CRM.morerecords"] is True
    assert "@Microsoft.Dynamics.CRM.fetchxmlpagingcookie" not in body
    plain = _fetch(crm_session, api, "<fetch count='2' page='1'><entity name='contact'><attribute name='lastname'/>"
                   "<order attribute='lastname'/></entity></fetch>")
    assert plain["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"]
