"""Dataverse sandbox metadata: EntityDefinitions reads, customizations through the metadata API."""

from __future__ import annotations

import pytest

from tests.fixtures.sandbox import crm_session_for


def _label(text):
    return {"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]}


@pytest.fixture
def bare(crm_sandbox_bare):
    with crm_session_for(crm_sandbox_bare) as s:
        yield crm_sandbox_bare, s


def test_entity_definitions_queries(bare):
    crm, s = bare
    api = crm.api_url
    r = s.get(api + "EntityDefinitions", params={"$select": "LogicalName,EntitySetName,PrimaryIdAttribute",
                                                 "$filter": "LogicalName eq 'contact'"})
    assert r.status_code == 200
    (row,) = r.json()["value"]
    assert row["EntitySetName"] == "contacts" and row["PrimaryIdAttribute"] == "contactid"
    one = s.get(api + "EntityDefinitions(LogicalName='campaignresponse')",
                params={"$select": "PrimaryIdAttribute,PrimaryNameAttribute"}).json()
    assert one["PrimaryIdAttribute"] == "activityid" and one["PrimaryNameAttribute"] == "subject"
    attrs = s.get(api + "EntityDefinitions(LogicalName='contact')/Attributes",
                  params={"$select": "LogicalName,AttributeType"}).json()["value"]
    assert {"LogicalName": "donotbulkemail", "AttributeType": "Boolean"}.items() <= next(
        a for a in attrs if a["LogicalName"] == "donotbulkemail").items()
    assert s.get(api + "EntityDefinitions(LogicalName='nosuch')").status_code == 404
    csdl = s.get(api + "$metadata")
    assert csdl.status_code == 200 and '<EntitySet Name="contacts"' in csdl.text


def test_customizations_through_the_metadata_api(bare):
    crm, s = bare
    api = crm.api_url
    table = {"@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata", "SchemaName": "cesp_SendRequest",
             "DisplayName": _label("Send request"), "DisplayCollectionName": _label("Send requests"),
             "OwnershipType": "UserOwned", "HasActivities": False, "HasNotes": False, "IsActivity": False,
             "ChangeTrackingEnabled": True,
             "Attributes": [{"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                             "SchemaName": "cesp_Name", "MaxLength": 200, "IsPrimaryName": True,
                             "DisplayName": _label("Name"), "RequiredLevel": {"Value": "ApplicationRequired"}}]}
    r = s.post(api + "EntityDefinitions", json=table)
    assert r.status_code == 204, r.text
    assert "EntityDefinitions(" in r.headers["OData-EntityId"]
    assert s.post(api + "EntityDefinitions", json=table).status_code == 400
    status = {"@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata", "SchemaName": "cesp_Status",
              "DisplayName": _label("Status"), "OptionSet": {
                  "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata", "IsGlobal": False,
                  "OptionSetType": "Picklist",
                  "Options": [{"Value": 100000000, "Label": _label("Pending")}]}}
    assert s.post(api + "EntityDefinitions(LogicalName='cesp_sendrequest')/Attributes", json=status).status_code == 204
    rel = {"@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
           "SchemaName": "cesp_campaign_cesp_sendrequest", "ReferencedEntity": "campaign",
           "ReferencedAttribute": "campaignid", "ReferencingEntity": "cesp_sendrequest",
           "ReferencingEntityNavigationPropertyName": "cesp_campaignid",
           "Lookup": {"@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
                      "SchemaName": "cesp_CampaignId", "DisplayName": _label("Campaign")}}
    assert s.post(api + "RelationshipDefinitions", json=rel).status_code == 204
    lookup_as_attr = s.post(api + "EntityDefinitions(LogicalName='contact')/Attributes",
                            json=rel["Lookup"])
    assert lookup_as_attr.status_code == 400
    key_col = {"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "cesp_TrackingKey",
               "MaxLength": 100, "DisplayName": _label("Tracking key")}
    assert s.post(api + "EntityDefinitions(LogicalName='campaignresponse')/Attributes",
                  json=key_col).status_code == 204
    r = s.post(api + "EntityDefinitions(LogicalName='campaignresponse')/Keys",
               json={"SchemaName": "cesp_trackingkey_key", "DisplayName": _label("Tracking key"),
                     "KeyAttributes": ["cesp_trackingkey"]})
    assert r.status_code == 204, r.text
    keys = s.get(api + "EntityDefinitions(LogicalName='campaignresponse')/Keys",
                 params={"$select": "LogicalName,KeyAttributes"}).json()["value"]
    assert keys[0]["LogicalName"] == "cesp_trackingkey_key"
    # the new table works, with its lookup bound by navigation property
    camp = crm.store.insert("campaigns", {"name": "C"})
    r = s.post(api + "cesp_sendrequests", json={"cesp_name": "Send 1", "cesp_status": 100000000,
                                                 "cesp_campaignid@odata.bind": f"/campaigns({camp})"},
               headers={"Prefer": "return=representation"})
    assert r.status_code == 201, r.text
    assert r.json()["_cesp_campaignid_value"] == camp
    assert s.post(api + "cesp_sendrequests", json={"cesp_status": 5}).status_code == 400


def test_customizations_survive_a_restart(tmp_path, sandbox_ca):
    from connector.sandbox.dataverse import start_crm_sandbox

    db = tmp_path / "org.sqlite"
    crm = start_crm_sandbox(tmp_path / "d", sandbox_ca, customizations=True, db_file=db)
    cid = crm.store.insert("contacts", {"lastname": "Kept", "cesp_lastbouncetype": "hard"})
    crm.stop()
    crm = start_crm_sandbox(tmp_path / "d", sandbox_ca, customizations=False, db_file=db)
    try:
        assert crm.store.get("contacts", cid)["cesp_lastbouncetype"] == "hard"
        assert "cesp_sendrequest" in crm.store.schema.entities
    finally:
        crm.stop()
