"""Formatted values (issue 20.5): the Dataverse sandbox gives them only when asked, as the real service does;
the connector asks for them for ``label`` mapping lines and hands the label, not the code or GUID, to the ESP."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from connector.config import Config, FieldMapping
from connector.mapping import FORMATTED, Mapper, columns_to_read
from connector.models import CrmTable, SendTarget, Subscriber, TargetKind
from tests.fixtures.sandbox import crm_session_for

LOOKUP_TABLE = "Microsoft.Dynamics.CRM.lookuplogicalname"


@pytest.fixture
def org(crm_org, crm_ca, crm_seed):
    crm_org.ca_file = crm_ca.ca_file
    account = crm_seed.account(name="Acme Corporation")
    contact = crm_seed.contact(emailaddress1="anna@example.com", gendercode=2, donotbulkemail=0,
                               parentcustomerid=("account", account), birthdate="1990-12-31T00:00:00Z")
    with crm_session_for(crm_org) as session:
        yield crm_org, session, contact


def _get(session, url: str, prefer: str | None) -> dict:
    r = session.get(url, headers={"Prefer": prefer} if prefer else {})
    assert r.status_code == 200, r.text
    return r.json()


def test_formatted_values_only_when_asked(org) -> None:
    crm, session, contact = org
    url = crm.api_url + f"contacts({contact})?$select=gendercode,_parentcustomerid_value,donotbulkemail,birthdate"
    plain = _get(session, url, None)
    assert plain["gendercode"] == 2 and not [k for k in plain if "@OData.Community" in k or LOOKUP_TABLE in k]
    wanted = _get(session, url, f'odata.include-annotations="{FORMATTED}"')
    assert wanted[f"gendercode@{FORMATTED}"] == "Female"
    assert wanted[f"_parentcustomerid_value@{FORMATTED}"] == "Acme Corporation"
    assert wanted[f"donotbulkemail@{FORMATTED}"] == "No"
    assert wanted[f"birthdate@{FORMATTED}"] == "12/31/1990 12:00 AM"
    assert f"_parentcustomerid_value@{LOOKUP_TABLE}" not in wanted  # not asked for
    table_only = _get(session, url, f'odata.include-annotations="{LOOKUP_TABLE}"')
    assert table_only[f"_parentcustomerid_value@{LOOKUP_TABLE}"] == "account"
    assert f"gendercode@{FORMATTED}" not in table_only
    wildcard = _get(session, url, 'odata.include-annotations="OData.Community.Display.V1.*"')
    assert f"gendercode@{FORMATTED}" in wildcard and f"_parentcustomerid_value@{LOOKUP_TABLE}" not in wildcard
    everything = _get(session, url, 'odata.include-annotations="*"')
    assert f"gendercode@{FORMATTED}" in everything and f"_parentcustomerid_value@{LOOKUP_TABLE}" in everything
    fetch = ("<fetch><entity name='contact'><attribute name='gendercode'/><filter><condition attribute='contactid'"
             f" operator='eq' value='{contact}'/></filter></entity></fetch>")
    rows = _get(session, crm.api_url + "contacts?fetchXml=" + quote(fetch), None)["value"]
    assert rows[0]["gendercode"] == 2 and f"gendercode@{FORMATTED}" not in rows[0]
    rows = _get(session, crm.api_url + "contacts?fetchXml=" + quote(fetch),
                f'odata.include-annotations="{FORMATTED}"')["value"]
    assert rows[0][f"gendercode@{FORMATTED}"] == "Female"


def test_label_lines_reach_the_subscriber_as_people_see_them(org, crm_client, crm_seed) -> None:
    crm, _, contact = org
    config = Config(mappings={"contact": (
        FieldMapping(esp_attribute="Gender", crm_column="gendercode", label=True),
        FieldMapping(esp_attribute="Company", crm_column="_parentcustomerid_value", label=True),
        FieldMapping(esp_attribute="Company id", crm_column="_parentcustomerid_value"),
        FieldMapping(esp_attribute="Born", crm_column="birthdate", date_format="%d.%m.%Y", time_zone="Europe/Vienna"),
    )})
    attributes = columns_to_read(config)
    static = crm_seed.static_list("contact", [contact])
    dynamic = crm_seed.dynamic_list("contact", "<fetch><entity name='contact'><attribute name='fullname'/>"
                                    "<filter><condition attribute='emailaddress1' operator='eq'"
                                    " value='anna@example.com'/></filter></entity></fetch>")
    mapper = Mapper(config)
    paths = [list(crm_client.iter_recipients(SendTarget(TargetKind.CONTACT, contact), attributes)),
             list(crm_client.iter_recipients(SendTarget(TargetKind.LIST, static), attributes)),
             list(crm_client.iter_recipients(SendTarget(TargetKind.LIST, dynamic), attributes)),
             list(crm_client.iter_record_targets([SendTarget(TargetKind.CONTACT, contact)], attributes))]
    account = crm.store.get_raw(crm.store.schema.entity("contact"), contact)["parentcustomerid"]
    for recipients in paths:
        (recipient,) = recipients
        sub = mapper.map(recipient)
        assert isinstance(sub, Subscriber)
        assert sub.attributes == {"Gender": "Female", "Company": "Acme Corporation", "Company id": account,
                                  "Born": "31.12.1990"}, recipient
    assert CrmTable.CONTACT in attributes
