"""Dataverse sandbox internals without sockets: $filter compiler, keys, FetchXML, store."""

from __future__ import annotations

import pytest

from connector.sandbox.dataverse.fetchxml import run_fetch
from connector.sandbox.dataverse.http import parse_key, split_path
from connector.sandbox.dataverse.odata import compile_filter, parse_filter
from connector.sandbox.dataverse.schema import standard_entities
from connector.sandbox.dataverse.store import DataverseStore, StoreError


@pytest.fixture
def store():
    s = DataverseStore()
    yield s
    s.close()


def _ids(store, where, params=()):
    return {r[0] for r in store.execute(f"SELECT firstname FROM e_contact AS t0 WHERE {where}", params)}


def test_filter_semantics(store):
    for i, (first, email, dnb, city) in enumerate([("Ann", "ann@x.com", False, "Oslo"), ("Bob", None, True, "Oslo"),
                                                   ("Åse", "aase@y.org", False, "Bergen"),
                                                   ("O'Neil", "o@x.com", False, None)]):
        store.insert("contacts", {"firstname": first, "emailaddress1": email, "donotbulkemail": dnb,
                                  "address1_city": city})
    c = store.schema.entity("contact")

    def run(text):
        sql, params = compile_filter(c, text, alias="t0")
        return _ids(store, sql, params)

    assert run("firstname eq 'ANN'") == {"Ann"}  # case-insensitive
    assert run("emailaddress1 eq null") == {"Bob"}
    assert run("address1_city ne 'Oslo'") == {"Åse"}  # SQL semantics: ne never matches null
    assert run("not (address1_city eq 'Oslo') and emailaddress1 ne null") == {"Åse"}
    assert run("address1_city ne 'Oslo' or address1_city eq null") == {"Åse", "O'Neil"}
    assert run("firstname eq 'O''Neil'") == {"O'Neil"}
    assert run("endswith(emailaddress1,'@x.com') or donotbulkemail eq true") == {"Ann", "Bob", "O'Neil"}
    assert run("contains(emailaddress1,'%')") == set()  # LIKE wildcards are escaped
    assert run("Microsoft.Dynamics.CRM.NotIn(PropertyName='firstname',PropertyValues=['Ann','Bob'])") == {
        "Åse", "O'Neil"}
    assert run('Microsoft.Dynamics.CRM.In(PropertyName=\'firstname\',PropertyValues=["Ann","O\'Neil"])') == {
        "Ann", "O'Neil"}
    sql, params = compile_filter(c, "Microsoft.Dynamics.CRM.In(PropertyName=@p1,PropertyValues=@p2)", alias="t0",
                                 aliases={"@p1": "'lastname'", "@p2": '["X","Y"]'})
    assert params == ["X", "Y"] and '"lastname"' in sql
    assert run("createdon gt 2000-01-01T00:00:00Z") == {"Ann", "Bob", "Åse", "O'Neil"}
    with pytest.raises(StoreError):
        run("firstname eq")
    with pytest.raises(StoreError):
        run("nosuch eq 1")


def test_lookup_and_guid_literals():
    c = standard_entities()["contact"]
    sql, params = compile_filter(c, "_parentcustomerid_value eq 6F9619FF-8B86-D011-B42D-00C04FC964FF")
    assert params == ["6f9619ff-8b86-d011-b42d-00c04fc964ff"] and '"parentcustomerid"' in sql
    assert parse_filter("a eq 1 and (b eq 2 or c eq 3)")[0] == "and"


def test_keys_and_paths():
    assert parse_key("{6F9619FF-8B86-D011-B42D-00C04FC964FF}") == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    assert parse_key("cesp_trackingkey='a:b''c/d',n=5") == {"cesp_trackingkey": "a:b'c/d", "n": 5}
    assert split_path("campaignresponses(cesp_trackingkey='x/y')/$ref") == [
        "campaignresponses(cesp_trackingkey='x/y')", "$ref"]


def test_fetchxml_link_entity_and_paging_cookie(store):
    acct = store.insert("accounts", {"name": "Acme"})
    ids = [store.insert("contacts", {"firstname": f"F{i}", "emailaddress1": f"f{i}@x.com",
                                     "parentcustomerid": ("account", acct) if i % 2 else None}) for i in range(6)]
    c = store.schema.entity("contact")
    xml = ("<fetch count='2'><entity name='contact'><attribute name='firstname'/>"
           "<link-entity name='account' from='accountid' to='parentcustomerid' alias='a'>"
           "<attribute name='name'/></link-entity></entity></fetch>")
    rows, more, cookie = run_fetch(store, c, xml)
    assert more and len(rows) == 2 and rows[0]["a.name"] == "Acme"
    assert "pagenumber=\"2\"" in cookie
    rows2, more2, _ = run_fetch(store, c, xml.replace("count='2'", "count='2' page='2'"))
    assert not more2 and len(rows2) == 1
    assert {r["contactid"] for r in rows + rows2} == {ids[1], ids[3], ids[5]}
    with pytest.raises(StoreError):
        run_fetch(store, c, "<fetch><entity name='lead'/></fetch>")
    with pytest.raises(StoreError):
        run_fetch(store, c, "<fetch><entity name='contact'><attribute name='nosuch'/></entity></fetch>")


def test_store_versions_transactions_and_deletes(store):
    cid = store.insert("contacts", {"lastname": "A"})
    v1 = store.get("contacts", cid)["versionnumber"]
    store.patch("contacts", cid, {"lastname": "B"})
    assert store.get("contacts", cid)["versionnumber"] > v1
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.insert("contacts", {"lastname": "rolled back"})
            raise RuntimeError
    assert store.count("contacts") == 1
    lst = store.insert("lists", {"listname": "L", "createdfromcode": 2})
    store.associate("listcontact_association", lst, cid)
    store.associate("listcontact_association", lst, cid)  # idempotent
    assert store.list_members(lst) == [cid]
    assert store.remove("contacts", cid)
    assert store.list_members(lst) == []
    assert store.execute("SELECT count(*) FROM _deleted WHERE entity = 'contact'")[0][0] == 1
