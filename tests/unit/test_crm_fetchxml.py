"""The connector's rewrite of a dynamic list's FetchXML (no sockets)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from connector.crm import fetchxml

QUERY = ("<fetch distinct='true' count='50' page='3'><entity name='contact'><attribute name='fullname'/>"
         "<order attribute='lastname' descending='true'/>"
         "<filter><condition attribute='address1_city' operator='eq' value='Oslo'/></filter>"
         "<link-entity name='account' from='accountid' to='parentcustomerid' link-type='outer'>"
         "<order attribute='name'/><attribute name='name'/></link-entity></entity></fetch>")


def test_prepare_orders_by_the_primary_id_only_and_keeps_filters_and_links() -> None:
    root = fetchxml.prepare(QUERY, "contactid", ["emailaddress1", "_parentcustomerid_value"])
    entity = root.find("entity")
    assert [o.get("attribute") for o in root.iter("order")] == ["contactid"]
    assert [a.get("name") for a in entity.findall("attribute")] == ["contactid", "emailaddress1", "parentcustomerid"]
    assert entity.find("filter/condition").get("value") == "Oslo"
    assert entity.find("link-entity/attribute").get("name") == "name"
    assert "count" not in root.attrib and "page" not in root.attrib and root.get("distinct") == "true"


def test_after_restricts_a_copy_to_ids_past_the_last_one() -> None:
    root = fetchxml.prepare(QUERY, "contactid", [])
    page = ET.fromstring(fetchxml.page_query(fetchxml.after(root, "contactid", "c0ffee00-0000-4000-8000-000000000009"),
                                             1, 5000, None))
    conditions = [(c.get("attribute"), c.get("operator"), c.get("value")) for c in page.iter("condition")]
    assert ("contactid", "gt", "c0ffee00-0000-4000-8000-000000000009") in conditions
    assert ("address1_city", "eq", "Oslo") in conditions
    assert page.get("page") == "1" and page.get("paging-cookie") is None
    assert not any(c.get("operator") == "gt" for c in root.iter("condition"))  # the prepared query is untouched
