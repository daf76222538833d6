"""Data extensions of the Marketing Cloud sandbox, over SOAP: definitions, rows, the real rules."""

from __future__ import annotations

import pytest

from tests.unit.test_sandbox_esp_app import P, UPSERT, retrieve, texts, xml

FIELDS = (
    "<Field><Name>ContactId</Name><IsRequired>true</IsRequired><MaxLength>36</MaxLength><IsPrimaryKey>true"
    "</IsPrimaryKey><FieldType>Text</FieldType></Field>"
    "<Field><Name>Email</Name><FieldType>EmailAddress</FieldType></Field>"
    "<Field><Name>Tier</Name><MaxLength>10</MaxLength><FieldType>Text</FieldType></Field>"
    "<Field><Name>Points</Name><FieldType>Number</FieldType></Field>"
    "<Field><Name>Vip</Name><FieldType>Boolean</FieldType></Field>"
    "<Field><Name>ChangedOn</Name><FieldType>Date</FieldType></Field>"
)


def create_de(call, key: str = "cesp-members", fields: str = FIELDS, sendable: str = ""):
    body = (f'<CreateRequest {P}><Options/><Objects xsi:type="DataExtension"><CustomerKey>{key}</CustomerKey>'
            f"<Name>{key} name</Name>{sendable}<Fields>{fields}</Fields></Objects></CreateRequest>")
    _s, reply = call.soap("Create", body)
    return xml(reply)


def row(key: str, **values: str) -> str:
    props = "".join(f"<Property><Name>{n}</Name><Value>{v}</Value></Property>" for n, v in values.items())
    return (f'<Objects xsi:type="DataExtensionObject"><CustomerKey>{key}</CustomerKey>'
            f"<Properties>{props}</Properties></Objects>")


def write(call, verb: str, *objects: str, options: str = "<Options/>"):
    element = {"Create": "CreateRequest", "Update": "UpdateRequest", "Delete": "DeleteRequest"}[verb]
    _s, reply = call.soap(verb, f"<{element} {P}>{options}{''.join(objects)}</{element}>")
    return xml(reply)


SENDABLE = ("<IsSendable>true</IsSendable><SendableDataExtensionField><Name>ContactId</Name>"
            "</SendableDataExtensionField><SendableSubscriberField><Name>Subscriber Key</Name><Value></Value>"
            "</SendableSubscriberField>")


def test_a_sendable_data_extension_is_created_and_retrieved_with_its_fields(mcsb_call):
    root = create_de(mcsb_call, sendable=SENDABLE)
    assert texts(root, "//p:OverallStatus") == ["OK"]
    found = retrieve(mcsb_call, "DataExtension", ["CustomerKey", "Name", "IsSendable", "SendableDataExtensionField.Name",
                                                  "SendableSubscriberField.Name"],
                     '<Filter xsi:type="SimpleFilterPart"><Property>CustomerKey</Property><SimpleOperator>equals'
                     "</SimpleOperator><Value>cesp-members</Value></Filter>")
    assert texts(found, "//p:Results/p:IsSendable") == ["true"]
    assert texts(found, "//p:Results/p:SendableDataExtensionField/p:Name") == ["ContactId"]
    assert texts(found, "//p:Results/p:SendableSubscriberField/p:Name") == ["Subscriber Key"]
    fields = retrieve(mcsb_call, "DataExtensionField", ["Name", "FieldType", "IsPrimaryKey", "MaxLength", "Ordinal"],
                      '<Filter xsi:type="SimpleFilterPart"><Property>DataExtension.CustomerKey</Property>'
                      "<SimpleOperator>equals</SimpleOperator><Value>cesp-members</Value></Filter>")
    assert texts(fields, "//p:Results/p:Name") == ["ContactId", "Email", "Tier", "Points", "Vip", "ChangedOn"]
    assert texts(fields, "//p:Results/p:IsPrimaryKey")[:2] == ["true", "false"]
    # a data extension's Fields are not a retrievable property of DataExtension
    refused = retrieve(mcsb_call, "DataExtension", ["Name", "Fields"])
    assert texts(refused, "//p:OverallStatus")[0].startswith("Error: The Request Property(s) Fields")


def test_definitions_the_service_refuses(mcsb_call):
    not_required_pk = FIELDS.replace("<IsRequired>true</IsRequired>", "")
    assert "must be required" in texts(create_de(mcsb_call, "a", not_required_pk), "//p:StatusMessage")[0]
    assert "SendableDataExtensionField" in texts(
        create_de(mcsb_call, "b", sendable=SENDABLE.replace("ContactId", "Nope")), "//p:StatusMessage")[0]
    assert texts(create_de(mcsb_call, "c"), "//p:OverallStatus") == ["OK"]
    assert "already exists" in texts(create_de(mcsb_call, "c"), "//p:StatusMessage")[0]
    too_long = "<Field><Name>T</Name><MaxLength>4001</MaxLength><FieldType>Text</FieldType></Field>"
    assert "MaxLength" in texts(create_de(mcsb_call, "d", too_long), "//p:StatusMessage")[0]


def test_rows_create_update_upsert_delete_with_per_row_errors(mcsb_call):
    create_de(mcsb_call)
    root = write(mcsb_call, "Create",
                 row("cesp-members", ContactId="c1", Email="a@example.com", Tier="gold", Points="5"),
                 row("cesp-members", Email="b@example.com"),                    # no primary key
                 row("cesp-members", ContactId="c3", Tier="platinum-plus"),     # longer than MaxLength 10
                 row("cesp-members", ContactId="c4", Points="many"),            # not a Number
                 row("cesp-members", ContactId="c5", Shoe="44"),                # no such field
                 row("cesp-members", ContactId="c6", Email="not-an-address"))
    assert texts(root, "//p:OverallStatus") == ["Has Errors"]
    assert texts(root, "//p:Results/p:StatusCode") == ["OK"] + ["Error"] * 5
    messages = texts(root, "//p:Results/p:StatusMessage")
    assert "Primary key field 'ContactId'" in messages[1] and "MaxLength is 10" in messages[2]
    assert "Number" in messages[3] and "'Shoe'" in messages[4] and "EmailAddress" in messages[5]
    assert set(texts(root, "//p:Results/p:ErrorCode")) == {"310007"}
    # Create of an existing key is refused; Update without UpdateAdd of a missing one too
    again = write(mcsb_call, "Create", row("cesp-members", ContactId="c1", Tier="x"))
    assert texts(again, "//p:Results/p:ErrorCode") == ["310003"]
    missing = write(mcsb_call, "Update", row("cesp-members", ContactId="zz", Tier="x"))
    assert texts(missing, "//p:Results/p:ErrorCode") == ["310004"]
    # UpdateAdd: an upsert, only the given fields change
    up = write(mcsb_call, "Update", row("cesp-members", ContactId="c1", Tier="silver"),
               row("cesp-members", ContactId="c2", Points="7"), options=UPSERT)
    assert texts(up, "//p:OverallStatus") == ["OK"]
    store = mcsb_call.app.store
    rows = {r["ContactId"]: r for r in store.de_rows(store.data_extensions["cesp-members"])}
    assert rows["c1"]["Tier"] == "silver" and rows["c1"]["Points"] == 5 and rows["c2"]["Points"] == 7
    gone = write(mcsb_call, "Delete", '<Objects xsi:type="DataExtensionObject"><CustomerKey>cesp-members'
                 "</CustomerKey><Keys><Key><Name>ContactId</Name><Value>c2</Value></Key></Keys></Objects>")
    assert texts(gone, "//p:OverallStatus") == ["OK"]
    again = write(mcsb_call, "Delete", '<Objects xsi:type="DataExtensionObject"><CustomerKey>cesp-members'
                  "</CustomerKey><Keys><Key><Name>ContactId</Name><Value>c2</Value></Key></Keys></Objects>")
    assert texts(again, "//p:Results/p:ErrorCode") == ["310002"]
    nokey = write(mcsb_call, "Create", '<Objects xsi:type="DataExtensionObject"><Properties><Property><Name>'
                  "ContactId</Name><Value>q</Value></Property></Properties></Objects>")
    assert texts(nokey, "//p:Results/p:ErrorCode") == ["310001"]


def test_rows_retrieve_by_name_in_brackets_with_filters_dates_and_pages(mcsb_call):
    create_de(mcsb_call)
    store = mcsb_call.app.store
    for i in range(2600):
        store.edit_row("cesp-members", {"ContactId": f"c{i:05d}", "Points": str(i), "Vip": "true" if i % 2 else "0",
                                        "ChangedOn": "2026-03-01T12:30:00.600Z"})
    asked = ["ContactId", "Points", "Vip", "ChangedOn"]
    first = retrieve(mcsb_call, "DataExtensionObject[cesp-members name]", asked)
    assert texts(first, "//p:OverallStatus") == ["MoreDataAvailable"]
    assert len(first.findall(".//{http://exacttarget.com/wsdl/partnerAPI}Results")) == 2500
    values = texts(first, "//p:Results[1]/p:Properties/p:Property/p:Value")
    # Dates: server time (CST), rounded to the second, with AM/PM; booleans True/False
    assert values == ["c00000", "0", "False", "3/1/2026 6:30:01 AM"]
    flt = ('<Filter xsi:type="SimpleFilterPart"><Property>Points</Property><SimpleOperator>greaterThan'
           "</SimpleOperator><Value>2597</Value></Filter>")
    some = retrieve(mcsb_call, "DataExtensionObject[cesp-members name]", ["ContactId"], flt)
    assert texts(some, "//p:Results/p:Properties/p:Property/p:Value") == ["c02598", "c02599"]
    like = flt.replace("greaterThan", "like").replace("2597", "c%")
    assert "LIKE" in texts(retrieve(mcsb_call, "DataExtensionObject[cesp-members name]", ["ContactId"], like),
                           "//p:OverallStatus")[0]
    bad = retrieve(mcsb_call, "DataExtensionObject[cesp-members name]", ["ContactId", "Nope"])
    assert texts(bad, "//p:OverallStatus")[0].startswith("Error: The Request Property(s) Nope")
    assert texts(retrieve(mcsb_call, "DataExtensionObject", ["ContactId"]), "//p:OverallStatus")[0].startswith("Error")
    assert texts(retrieve(mcsb_call, "DataExtensionObject[nothing]", ["ContactId"]), "//p:OverallStatus")[0] == (
        "Error: The data extension 'nothing' does not exist.")


def test_decimal_fields_keep_their_scale_and_filter_as_numbers(mcsb_call):
    from connector.sandbox.marketing_cloud.dataext import DEFieldRec

    store = mcsb_call.app.store
    store.add_data_extension("prices", "Prices", [DEFieldRec("Sku", "Text", 20, is_primary_key=True, is_required=True),
                                                  DEFieldRec("Price", "Decimal", scale=2)])
    for sku, price in (("a", "1.25"), ("b", "10.5"), ("c", "2")):
        store.edit_row("prices", {"Sku": sku, "Price": price})
    with pytest.raises(ValueError, match="decimal places"):
        store.edit_row("prices", {"Sku": "d", "Price": "1.255"})
    flt = ('<Filter xsi:type="SimpleFilterPart"><Property>Price</Property><SimpleOperator>greaterThan'
           "</SimpleOperator><Value>1.5</Value></Filter>")
    root = retrieve(mcsb_call, "DataExtensionObject[Prices]", ["Sku"], flt)
    assert sorted(texts(root, "//p:Results/p:Properties/p:Property/p:Value")) == ["b", "c"]


def test_a_data_extension_without_a_primary_key_takes_every_row(mcsb_call):
    from connector.sandbox.marketing_cloud.dataext import DEFieldRec

    store = mcsb_call.app.store
    store.add_data_extension("log", "Log", [DEFieldRec("Line", "Text", 50)])
    assert store.edit_row("log", {"Line": "one"}) == {"Line": "one"}
    store.edit_row("log", {"Line": "one"})  # no key: a second row, not an update
    assert [r["Line"] for r in store.de_rows(store.data_extensions["log"])] == ["one", "one"]
