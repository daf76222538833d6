"""The Dataverse sandbox's Web API over HTTPS with verification (requests)."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote, unquote

import pytest

JSON = {"Content-Type": "application/json"}


def test_create_read_update_delete(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    r = crm_session.post(api + "contacts", json={"firstname": "Zoë", "lastname": "Ørsted",
                                                 "emailaddress1": "zoe@example.com"})
    assert r.status_code == 204
    url = r.headers["OData-EntityId"]
    cid = url.rsplit("(", 1)[1].rstrip(")")
    uuid.UUID(cid)
    got = crm_session.get(url, params={"$select": "fullname,emailaddress1"}).json()
    assert got["fullname"] == "Zoë Ørsted" and got["contactid"] == cid
    owner = crm_session.get(url, params={"$select": "_ownerid_value"}).json()["_ownerid_value"]
    assert owner == crm_sandbox.app_user_id  # the caller owns what it creates
    assert got["@odata.etag"].startswith('W/"')
    assert got["@odata.context"].endswith("$metadata#contacts(fullname,emailaddress1)/$entity")
    # optimistic concurrency
    stale = crm_session.patch(url, json={"lastname": "X"}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    ok = crm_session.patch(url, json={"lastname": "Y"}, headers={"If-Match": got["@odata.etag"],
                                                                  "Prefer": "return=representation"})
    assert ok.status_code == 200 and ok.json()["fullname"] == "Zoë Y"
    # date-times are kept in UTC; an unreadable one is refused
    assert crm_session.patch(url, json={"cesp_lastbounceon": "2026-11-03T10:30:00+02:00"}).status_code == 204
    got = crm_session.get(url, params={"$select": "cesp_lastbounceon"}).json()
    assert got["cesp_lastbounceon"] == "2026-11-03T08:30:00Z"
    bad = crm_session.patch(url, json={"cesp_lastbounceon": "yesterday"})
    assert bad.status_code == 400 and "Edm.DateTimeOffset" in bad.json()["error"]["message"]
    # representation on create
    r = crm_session.post(api + "accounts?$select=name", json={"name": "Acme"},
                         headers={"Prefer": "return=representation"})
    assert r.status_code == 201 and r.json()["name"] == "Acme"
    assert crm_session.delete(url).status_code == 204
    missing = crm_session.get(url)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == f"contact With Id = {cid} Does Not Exist"


def test_unknown_columns_and_bad_values_are_rejected(crm_sandbox_bare):
    from tests.fixtures.sandbox import crm_session_for

    crm = crm_sandbox_bare
    with crm_session_for(crm) as s:
        r = s.post(crm.api_url + "contacts", json={"cesp_lastbouncetype": "hard"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "0x80048d19"
        assert "cesp_lastbouncetype" in r.json()["error"]["message"]
        assert s.get(crm.api_url + "cesp_sendrequests").status_code == 404
        r = s.post(crm.api_url + "contacts", json={"firstname": "x" * 51})
        assert r.status_code == 400 and r.json()["error"]["code"] == "0x80044331"
        r = s.post(crm.api_url + "contacts", json={"donotbulkemail": "yes"})
        assert r.status_code == 400


def test_filter_select_orderby_count_and_paging(crm_sandbox, crm_session):
    store = crm_sandbox.store
    for i in range(23):
        store.insert("contacts", {"firstname": f"P{i:02d}", "lastname": "Pager",
                                  "emailaddress1": None if i % 5 == 0 else f"p{i}@example.com",
                                  "donotbulkemail": i % 4 == 0})
    api = crm_sandbox.api_url
    seen = []
    url = (api + "contacts?$select=firstname,emailaddress1&$filter=" +
           quote("lastname eq 'pager' and emailaddress1 ne null and donotbulkemail eq false") + "&$count=true")
    pages = 0
    while url:
        r = crm_session.get(url, headers={"Prefer": "odata.maxpagesize=4"})
        assert r.status_code == 200, r.text
        assert r.headers["Preference-Applied"] == "odata.maxpagesize=4"
        body = r.json()
        seen += [row["firstname"] for row in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert "$skiptoken=" in url
        pages += 1
    expected = [f"P{i:02d}" for i in range(23) if i % 5 and i % 4]
    assert sorted(seen) == expected and len(seen) == len(set(seen))
    assert pages == 4
    ordered = crm_session.get(api + "contacts", params={"$select": "firstname", "$orderby": "firstname desc",
                                                        "$top": "3"}).json()["value"]
    assert [r["firstname"] for r in ordered] == ["P22", "P21", "P20"]
    r = crm_session.get(api + "contacts", params={"$filter": "startswith(firstname,'P1') and "
                                                  "Microsoft.Dynamics.CRM.In(PropertyName='firstname',"
                                                  "PropertyValues=['P10','P11','Q1'])"})
    assert sorted(x["firstname"] for x in r.json()["value"]) == ["P10", "P11"]
    bad = crm_session.get(api + "contacts", params={"$filter": "nosuch eq 1"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "0x80060888"
    assert crm_session.get(api + "contacts", params={"$skip": "2"}).status_code == 400
    assert crm_session.get(api + "contacts/$count").text == "23"


def test_lists_members_and_fetchxml_paging(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    store = crm_sandbox.store
    ids = [store.insert("contacts", {"firstname": f"M{i}", "emailaddress1": f"m{i}@example.com",
                                     "address1_city": "Oslo" if i % 2 else "Bergen"}) for i in range(9)]
    static = store.insert("lists", {"listname": "Static", "type": False, "createdfromcode": 2})
    for cid in ids[:5]:
        r = crm_session.post(f"{api}lists({static})/listcontact_association/$ref",
                             json={"@odata.id": f"{api}contacts({cid})"})
        assert r.status_code == 204
    r = crm_session.post(f"{api}lists({static})/Microsoft.Dynamics.CRM.AddMemberList", json={"EntityId": ids[5]})
    assert r.status_code == 200
    members = crm_session.get(f"{api}lists({static})/listcontact_association",
                              params={"$select": "contactid,emailaddress1"}).json()["value"]
    assert sorted(m["contactid"] for m in members) == sorted(ids[:6])
    r = crm_session.delete(f"{api}lists({static})/listcontact_association({ids[0]})/$ref")
    assert r.status_code == 204
    r = crm_session.delete(f"{api}lists({static})/listcontact_association/$ref",
                           params={"$id": f"{api}contacts({ids[1]})"})
    assert r.status_code == 204
    assert len(store.list_members(static)) == 4
    lm = crm_session.get(api + "listmembers", params={"$filter": f"_listid_value eq {static}",
                                                      "$select": "_entityid_value"}).json()["value"]
    assert len(lm) == 4
    # dynamic list: its FetchXML run page by page with paging cookies
    fetch = ("<fetch version='1.0' mapping='logical'><entity name='contact'><attribute name='emailaddress1'/>"
             "<filter type='and'><condition attribute='address1_city' operator='eq' value='Oslo'/>"
             "<condition attribute='emailaddress1' operator='not-null'/></filter></entity></fetch>")
    dyn = store.insert("lists", {"listname": "Dynamic", "type": True, "createdfromcode": 2, "query": fetch})
    query = crm_session.get(f"{api}lists({dyn})", params={"$select": "query,type,createdfromcode"}).json()
    assert query["type"] is True and query["createdfromcode"] == 2
    import xml.etree.ElementTree as ET

    root = ET.fromstring(query["query"])
    root.set("count", "2")
    page, cookie, found = 1, None, []
    while True:
        root.set("page", str(page))
        if cookie:
            root.set("paging-cookie", cookie)
        r = crm_session.get(api + "contacts", params={"fetchXml": ET.tostring(root, encoding="unicode")},
                            headers={"Prefer": 'odata.include-annotations="*"'})
        assert r.status_code == 200, r.text
        body = r.json()
        found += [row["contactid"] for row in body["value"]]
        if not body.get("@Microsoft.Dynamics.CRM.morerecords"):
            break
        raw = body["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"]
        cookie = unquote(unquote(raw.split('pagingcookie="')[1].split('"')[0]))
        page += 1
    assert sorted(found) == sorted(ids[i] for i in range(9) if i % 2)
    assert page == 2


def test_alternate_key_upsert_and_campaign_response(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    camp = crm_sandbox.store.insert("campaigns", {"name": "Spring"})
    body = {"subject": "Opened", "channeltypecode": 1, "responsecode": 1,
            "regardingobjectid_campaign_campaignresponse@odata.bind": f"/campaigns({camp})"}
    url = f"{api}campaignresponses(cesp_trackingkey='job1.open.sub1')"
    first = crm_session.patch(url, json=body, headers={"If-None-Match": "*"})
    assert first.status_code == 204, first.text
    again = crm_session.patch(url, json=body, headers={"If-None-Match": "*"})
    assert again.status_code == 412 and again.json()["error"]["code"] == "0x80040237"
    got = crm_session.get(url, headers={"Prefer": 'odata.include-annotations="*"'}).json()
    assert got["_regardingobjectid_value"] == camp and got["cesp_trackingkey"] == "job1.open.sub1"
    assert got["_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "campaign"
    # string keys match case-insensitively (SQL Server collation): same record, and no twin
    assert crm_session.get(f"{api}campaignresponses(cesp_trackingkey='JOB1.Open.SUB1')").json()[
        "activityid"] == got["activityid"]
    twin = crm_session.patch(f"{api}campaignresponses(cesp_trackingkey='JOB1.OPEN.SUB1')", json=body,
                             headers={"If-None-Match": "*"})
    assert twin.status_code == 412
    wrong = crm_session.patch(f"{api}campaignresponses(subject='x')", json=body)
    assert wrong.status_code == 400
    missing = crm_session.patch(f"{api}contacts({uuid.uuid4()})", json={"firstname": "x"},
                                headers={"If-Match": "*"})
    assert missing.status_code == 404


def _batch(parts: list[str], boundary: str = "batch_abc") -> bytes:
    return ("".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n").encode()


def _op(method: str, url: str, body: dict | None = None, content_id: str | None = None, headers: str = "") -> str:
    cid = f"Content-ID: {content_id}\r\n" if content_id else ""
    text = (f"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n{cid}\r\n"
            f"{method} {url} HTTP/1.1\r\n{headers}")
    if body is not None:
        text += "Content-Type: application/json; type=entry\r\n\r\n" + json.dumps(body) + "\r\n"
    else:
        text += "\r\n"
    return text


def test_batch_changesets_content_ids_and_continue_on_error(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    changeset = ("Content-Type: multipart/mixed; boundary=changeset_1\r\n\r\n"
                 + "--changeset_1\r\n" + _op("POST", f"{api}accounts", {"name": "Parent"}, "1")
                 + "--changeset_1\r\n" + _op("POST", "/api/data/v9.2/contacts",
                                              {"lastname": "Child", "parentcustomerid_account@odata.bind": "$1"}, "2")
                 + "--changeset_1--\r\n")
    ok = crm_session.post(api + "$batch", data=_batch([changeset, _op("GET", "contacts?$select=lastname")]),
                          headers={"Content-Type": "multipart/mixed; boundary=batch_abc"})
    assert ok.status_code == 200, ok.text
    assert ok.text.count("HTTP/1.1 204 No Content") == 2 and "HTTP/1.1 200 OK" in ok.text
    child = crm_sandbox.store.rows("contacts").__next__()
    assert child["_parentcustomerid_value"] is not None
    # a failing change set rolls back entirely; continue-on-error goes on
    bad_cs = ("Content-Type: multipart/mixed; boundary=changeset_2\r\n\r\n"
              + "--changeset_2\r\n" + _op("POST", "accounts", {"name": "Rolled back"}, "1")
              + "--changeset_2\r\n" + _op("POST", "contacts", {"nosuch": 1}, "2")
              + "--changeset_2--\r\n")
    r = crm_session.post(api + "$batch", data=_batch([bad_cs, _op("POST", "accounts", {"name": "After"})]),
                         headers={"Content-Type": "multipart/mixed; boundary=batch_abc",
                                  "Prefer": "odata.continue-on-error"})
    assert r.status_code == 200 and "HTTP/1.1 400 Bad Request" in r.text and "HTTP/1.1 204" in r.text
    names = sorted(a["name"] for a in crm_sandbox.store.rows("accounts"))
    assert names == ["After", "Parent"]
    stop = crm_session.post(api + "$batch", data=_batch([_op("POST", "contacts", {"nosuch": 1}),
                                                         _op("POST", "accounts", {"name": "Never"})]),
                            headers={"Content-Type": "multipart/mixed; boundary=batch_abc"})
    assert stop.status_code == 400
    assert "Never" not in [a["name"] for a in crm_sandbox.store.rows("accounts")]
    too_many = _batch([_op("GET", "contacts")] * 1001)
    r = crm_session.post(api + "$batch", data=too_many, headers={"Content-Type": "multipart/mixed; boundary=batch_abc"})
    assert r.status_code == 400


def test_change_tracking_with_deletions_and_expiry(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    store = crm_sandbox.store
    ids = [store.insert("leads", {"lastname": f"L{i}", "emailaddress1": f"l{i}@example.com"}) for i in range(5)]
    bad = crm_session.get(api + "leads", params={"$filter": "lastname eq 'L1'"},
                          headers={"Prefer": "odata.track-changes"})
    assert bad.status_code == 400
    url, rows = api + "leads?$select=lastname", []
    while True:
        r = crm_session.get(url, headers={"Prefer": "odata.track-changes,odata.maxpagesize=2"})
        body = r.json()
        rows += body["value"]
        if "@odata.deltaLink" in body:
            delta = body["@odata.deltaLink"]
            break
        url = body["@odata.nextLink"]
    assert len(rows) == 5 and "$deltatoken=" in delta
    store.patch("leads", ids[0], {"lastname": "Changed"})
    store.remove("leads", ids[1])
    store.insert("leads", {"lastname": "New"})
    body = crm_session.get(delta, headers={"Prefer": "odata.track-changes"}).json()
    assert body["@odata.context"].endswith("/$delta")
    changed = sorted(r["lastname"] for r in body["value"] if "lastname" in r)
    deleted = [r for r in body["value"] if r.get("reason") == "deleted"]
    assert changed == ["Changed", "New"]
    assert deleted[0]["id"] == ids[1] and deleted[0]["@odata.context"].endswith("$metadata#leads/$deletedEntity")
    nothing = crm_session.get(body["@odata.deltaLink"], headers={"Prefer": "odata.track-changes"}).json()
    assert nothing["value"] == []
    crm_sandbox.expire_delta_tokens()
    expired = crm_session.get(body["@odata.deltaLink"], headers={"Prefer": "odata.track-changes"})
    assert expired.status_code == 400
    assert "Version stamp associated with the client has expired" in expired.json()["error"]["message"]


def test_delta_rows_keep_the_select_show_deactivations_and_bad_tokens_say_full_sync(crm_sandbox, crm_session):
    api, store = crm_sandbox.api_url, crm_sandbox.store
    track = {"Prefer": "odata.track-changes"}
    ids = [store.insert("contacts", {"lastname": f"S{i}", "emailaddress1": f"s{i}@example.com"}) for i in range(3)]
    first = crm_session.get(api + "contacts?$select=lastname,statecode", headers=track).json()
    delta = first["@odata.deltaLink"]
    assert "%24select=lastname%2Cstatecode" in delta or "$select=lastname,statecode" in delta
    store.patch("contacts", ids[0], {"statecode": 1, "statuscode": 2})
    store.patch("contacts", ids[1], {"emailaddress1": "other@example.com"})  # a column not selected
    body = crm_session.get(delta, headers=track).json()
    rows = {r["contactid"]: r for r in body["value"]}
    assert sorted(rows) == sorted(ids[:2])
    assert rows[ids[0]]["statecode"] == 1
    assert set(rows[ids[1]]) == {"@odata.etag", "contactid", "lastname", "statecode"}  # only what was selected
    for token in ("garbled", "1!01/01/2001 00:00:00"):
        bad = crm_session.get(api + f"contacts?$select=lastname&$deltatoken={quote(token)}", headers=track)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "0x80044352"
        assert "Please perform a full sync." in bad.json()["error"]["message"]


def test_service_protection_and_faults(crm_sandbox, crm_session):
    import requests

    api = crm_sandbox.api_url
    crm_sandbox.limits.requests = 3
    crm_sandbox.limits.window_seconds = 60
    codes = [crm_session.get(api + "contacts").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = crm_session.get(api + "contacts")
    assert r.json()["error"]["code"] == "0x80072322" and int(r.headers["Retry-After"]) >= 1
    crm_sandbox.limits.requests = 6000
    assert crm_session.get(api + "contacts").status_code == 429  # the block holds until Retry-After
    crm_sandbox.protection.reset()
    crm_sandbox.faults.set("throttle", next_n=1, seconds=2)
    r = crm_session.get(api + "contacts")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    crm_sandbox.faults.set("http503", next_n=1)
    assert crm_session.get(api + "contacts").status_code == 503
    crm_sandbox.faults.set("drop", next_n=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        crm_session.get(api + "contacts")
    assert crm_session.get(api + "contacts").status_code == 200


def test_roles_campaign_lists_and_bulk_actions(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    store = crm_sandbox.store
    user = store.insert("systemusers", {"firstname": "Mia", "lastname": "Manager"})
    role = store.insert("roles", {"name": "Marketing Manager"})
    store.associate("systemuserroles_association", user, role)
    roles = crm_session.get(f"{api}systemusers({user})/systemuserroles_association",
                            params={"$select": "name"}).json()["value"]
    assert [r["name"] for r in roles] == ["Marketing Manager"]
    team = store.insert("teams", {"name": "T"})
    store.associate("teammembership_association", user, team)
    store.associate("teamroles_association", team, role)
    teams = crm_session.get(f"{api}systemusers({user})/teammembership_association",
                            params={"$select": "teamid"}).json()["value"]
    assert [t["teamid"] for t in teams] == [team]
    team_roles = crm_session.get(f"{api}teams({team})/teamroles_association", params={"$select": "name"}).json()
    assert [r["name"] for r in team_roles["value"]] == ["Marketing Manager"]
    camp = store.insert("campaigns", {"name": "C"})
    lst = store.insert("lists", {"listname": "L", "createdfromcode": 2})
    r = crm_session.post(f"{api}campaigns({camp})/campaignlist_association/$ref",
                         json={"@odata.id": f"{api}lists({lst})"})
    assert r.status_code == 204
    lists = crm_session.get(f"{api}campaigns({camp})/campaignlist_association",
                            params={"$select": "listname"}).json()["value"]
    assert [x["listid"] for x in lists] == [lst]
    r = crm_session.post(api + "contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": [
        {"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "B1"},
        {"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "B2"}]})
    assert r.status_code == 200 and len(r.json()["Ids"]) == 2
    r = crm_session.post(api + "contacts/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": [
        {"@odata.type": "Microsoft.Dynamics.CRM.contact", "contactid": r.json()["Ids"][0], "lastname": "B1x"}]})
    assert r.status_code == 204
    r = crm_session.post(api + "contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": [
        {"lastname": "no type"}]})
    assert r.status_code == 400
    r = crm_session.post(api + "campaignresponses/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": [
        {"@odata.type": "Microsoft.Dynamics.CRM.campaignresponse",
         "@odata.id": "campaignresponses(cesp_trackingkey='k1')", "subject": "s1"}]})
    assert r.status_code == 204, r.text
    assert store.count("campaignresponses") == 1
    who = crm_session.get(api + "WhoAmI").json()
    assert who["UserId"] == crm_sandbox.app_user_id


def test_concurrent_clients(crm_sandbox):
    from concurrent.futures import ThreadPoolExecutor

    from tests.fixtures.sandbox import crm_session_for

    api = crm_sandbox.api_url

    def work(n: int) -> int:
        with crm_session_for(crm_sandbox) as s:
            for i in range(10):
                assert s.post(api + "contacts", json={"lastname": f"T{n}-{i}"}).status_code == 204
                assert s.get(api + "contacts", params={"$filter": f"lastname eq 'T{n}-{i}'"}).json()["value"]
        return n

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(work, range(8))) == list(range(8))
    assert crm_sandbox.store.count("contacts") == 80


def test_expand_single_and_collection(crm_sandbox, crm_session):
    api = crm_sandbox.api_url
    store = crm_sandbox.store
    acct = store.insert("accounts", {"name": "Acme"})
    cid = store.insert("contacts", {"lastname": "E", "parentcustomerid": ("account", acct)})
    lst = store.insert("lists", {"listname": "L", "createdfromcode": 2})
    store.associate("listcontact_association", lst, cid)
    rows = crm_session.get(api + "contacts", params={
        "$select": "lastname", "$expand": "parentcustomerid_account($select=name),parentcustomerid_contact"}).json()
    assert rows["value"][0]["parentcustomerid_account"]["name"] == "Acme"
    assert rows["value"][0]["parentcustomerid_contact"] is None
    one = crm_session.get(f"{api}lists({lst})", params={
        "$select": "listname", "$expand": "listcontact_association($select=lastname;$filter=lastname eq 'E')"}).json()
    assert [m["lastname"] for m in one["listcontact_association"]] == ["E"]
    bad = crm_session.get(api + "contacts", params={"$expand": "nosuch"})
    assert bad.status_code == 400
