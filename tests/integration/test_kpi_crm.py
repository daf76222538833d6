"""KPI rows in the Dataverse sandbox: crm-setup creates the table, upserts by the alternate key
(customer lookup + KPI name) never duplicate, removal deactivates, matching is by a column."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from connector.models import CrmTable, KpiValue


def _rows(sandbox) -> list[dict]:
    return list(sandbox.store.rows("cesp_kpis"))


def test_upsert_by_key_twice_makes_one_row_and_removal_deactivates(kpi_org) -> None:
    sandbox, client = kpi_org
    assert client.kpi_key_status(CrmTable.CONTACT) == ("Active", "cesp_kpi.cesp_kpi_contact_key")
    ada = sandbox.store.insert("contacts", {"firstname": "Ada", "emailaddress1": "Ada@Example.com"})
    bob = sandbox.store.insert("contacts", {"firstname": "Bob", "emailaddress1": "bob@example.com"})
    when = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    values = [KpiValue(ada, "revenue_6m", Decimal("1234.5"), "2026-06..2026-11", "erp", when),
              KpiValue(ada, "churn_score", Decimal("0.125"), "", "erp", when),
              KpiValue(bob, "revenue_6m", None, "", "erp", when)]
    assert all(r.ok for r in client.upsert_kpis(CrmTable.CONTACT, values))
    again = [KpiValue(ada, "revenue_6m", Decimal("99"), "2026-07..2026-12", "erp", when)]
    assert all(r.ok for r in client.upsert_kpis(CrmTable.CONTACT, again))
    rows = {(r["_cesp_contactid_value"], r["cesp_name"]): r for r in _rows(sandbox)}
    assert len(rows) == 3
    assert rows[(ada, "revenue_6m")]["cesp_value"] == 99 and rows[(ada, "revenue_6m")]["cesp_period"] == "2026-07..2026-12"
    assert rows[(bob, "revenue_6m")]["cesp_value"] is None

    gone = sandbox.store.insert("contacts", {"firstname": "Gone"})
    sandbox.store.remove("contacts", gone)
    missing = client.upsert_kpis(CrmTable.CONTACT, [KpiValue(gone, "revenue_6m", Decimal(1))])
    assert not missing[0].ok and missing[0].code == "not_found"

    removed = client.remove_kpis(CrmTable.CONTACT, [(ada, "churn_score"), (gone, "revenue_6m")])
    assert [r.ok for r in removed] == [True, True]  # a row already gone counts as removed
    state = {r["cesp_name"]: r["statecode"] for r in _rows(sandbox) if r["_cesp_contactid_value"] == ada}
    assert state == {"revenue_6m": 0, "churn_score": 1}
    client.upsert_kpis(CrmTable.CONTACT, [KpiValue(ada, "churn_score", Decimal("0.5"))])  # back: active again
    assert {r["cesp_name"]: r["statecode"] for r in _rows(sandbox)
            if r["_cesp_contactid_value"] == ada} == {"revenue_6m": 0, "churn_score": 0}


def test_match_customers_case_insensitive_active_only_and_ambiguous(kpi_org) -> None:
    sandbox, client = kpi_org
    one = sandbox.store.insert("contacts", {"emailaddress1": "One@Example.com"})
    twin_a = sandbox.store.insert("contacts", {"emailaddress1": "twin@example.com"})
    twin_b = sandbox.store.insert("contacts", {"emailaddress1": "TWIN@example.com"})
    sandbox.store.insert("contacts", {"emailaddress1": "old@example.com", "statecode": 1, "statuscode": 2})
    found = client.match_customers(CrmTable.CONTACT, "emailaddress1",
                                   ["one@example.com", "twin@example.com", "old@example.com", "o'neil@example.com"])
    assert found["one@example.com"] == [one]
    assert sorted(found["twin@example.com"]) == sorted([twin_a, twin_b])
    assert "old@example.com" not in found and "o'neil@example.com" not in found


def test_a_lookup_of_a_key_is_addressed_by_its_lookup_property_only(kpi_org) -> None:
    from tests.fixtures.sandbox import crm_session_for

    sandbox, client = kpi_org
    crm_session = crm_session_for(sandbox)
    ada = sandbox.store.insert("contacts", {"firstname": "Ada"})
    client.upsert_kpis(CrmTable.CONTACT, [KpiValue(ada, "orders_books", Decimal(3))])
    url = sandbox.api_url
    good = crm_session.get(f"{url}cesp_kpis(_cesp_contactid_value={ada},cesp_name='orders_books')", timeout=30)
    assert good.status_code == 200 and good.json()["cesp_value"] == 3
    bare = crm_session.get(f"{url}cesp_kpis(cesp_contactid={ada},cesp_name='orders_books')", timeout=30)
    assert bare.status_code == 400 and "key in the request URI is not valid" in bare.text
    too_big = crm_session.patch(f"{url}cesp_kpis(_cesp_contactid_value={ada},cesp_name='orders_books')",
                                json={"cesp_value": 1e12}, timeout=30)
    assert too_big.status_code == 400 and "outside the valid range" in too_big.text


def test_crm_setup_puts_the_kpi_subgrid_on_a_customer_form(kpi_org) -> None:
    from connector.crm.ui import kpi_form

    sandbox, _ = kpi_org
    form = kpi_form("cesp", "contact", "cesp_contact_cesp_kpi")
    row = sandbox.store.get("systemforms", form.form_id)
    assert row is not None and row["objecttypecode"] == "contact" and row["publishedon"]
    assert "<RelationshipName>cesp_contact_cesp_kpi</RelationshipName>" in row["formxml"]
    assert "<TargetEntityType>cesp_kpi</TargetEntityType>" in row["formxml"]


def test_the_sandbox_refuses_a_subgrid_over_a_relationship_the_table_does_not_have(kpi_org) -> None:
    from connector.crm.ui import kpi_form
    from tests.fixtures.sandbox import crm_session_for

    sandbox, _ = kpi_org
    wrong = kpi_form("cesp", "account", "cesp_contact_cesp_kpi")  # the lookup is to contact, not account
    reply = crm_session_for(sandbox).post(f"{sandbox.api_url}systemforms", timeout=30, json={
        "formid": wrong.form_id, "name": wrong.name, "objecttypecode": "account", "type": 2,
        "formxml": wrong.formxml(lambda table, column: True)})
    assert reply.status_code == 400 and "cesp_contact_cesp_kpi" in reply.text
