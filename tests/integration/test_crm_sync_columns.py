"""The CRM adapter's sync operations against the Dataverse sandbox: column metadata, record updates."""

from __future__ import annotations

from connector.models import CrmTable


def test_column_definitions_give_types_lengths_writability_and_options(crm_client) -> None:
    columns = crm_client.column_definitions(CrmTable.CONTACT)
    assert columns["firstname"].type == "String" and columns["firstname"].max_length
    assert columns["firstname"].writable and not columns["modifiedon"].writable
    assert columns["gendercode"].type == "Picklist" and columns["gendercode"].options == {1: "Male", 2: "Female"}
    assert columns["statecode"].options[1] == "Inactive"
    assert columns["donotbulkemail"].type == "Boolean" and not columns["donotbulkemail"].options


def test_update_records_writes_existing_records_only(crm_client, crm_seed) -> None:
    first, second = crm_seed.contact(firstname="Anna"), crm_seed.contact(firstname="Berta")
    crm_seed.store.remove("contacts", second)
    results = crm_client.update_records(CrmTable.CONTACT, [(first, {"firstname": "Anne", "gendercode": 2}),
                                                           (second, {"firstname": "Bea"})])
    assert [(r.key, r.ok) for r in results] == [(first, True), (second, False)]
    assert results[1].code == "not_found"
    row = crm_seed.store.get("contacts", first)
    assert (row["firstname"], row["gendercode"]) == ("Anne", 2)
