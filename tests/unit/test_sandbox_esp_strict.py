"""Production rules of the Marketing Cloud sandbox: attribute catalogue, retrievable/filterable properties."""

from __future__ import annotations

import time

from tests.unit.test_sandbox_esp_app import P, UPSERT, create_list, retrieve, texts, xml


def subscriber_with(key: str, attributes: dict[str, str], list_id: int) -> str:
    attrs = "".join(f"<Attributes><Name>{n}</Name><Value>{v}</Value></Attributes>" for n, v in attributes.items())
    return (f'<Objects xsi:type="Subscriber"><EmailAddress>{key}@example.com</EmailAddress>{attrs}'
            f"<SubscriberKey>{key}</SubscriberKey><Lists><ID>{list_id}</ID><Status>Active</Status>"
            "<Action>create</Action></Lists></Objects>")


def test_an_attribute_the_account_lacks_fails_that_subscriber_only(mcsb_call):
    list_id = create_list(mcsb_call)
    objects = (subscriber_with("a1", {"first name": "Ann"}, list_id)
               + subscriber_with("a2", {"First Name": "Bob", "Shoe Size": "44"}, list_id))
    _s, body = mcsb_call.soap("Create", f"<CreateRequest {P}>{UPSERT}{objects}</CreateRequest>")
    root = xml(body)
    assert texts(root, "//p:OverallStatus") == ["Has Errors"]
    assert texts(root, "//p:Results/p:StatusCode") == ["OK", "Error"]
    assert texts(root, "//p:Results/p:ErrorCode") == ["12004"]
    assert "'Shoe Size'" in texts(root, "//p:Results/p:StatusMessage")[1]
    store = mcsb_call.app.store
    assert store.subscriber("a1").attributes == {"First Name": "Ann"}  # the catalogue's spelling
    assert store.subscriber("a2") is None
    _s, body = mcsb_call.soap("Update", f"<UpdateRequest {P}>{UPSERT}"
                              f"{subscriber_with('a1', {'Shoe Size': '44'}, list_id)}</UpdateRequest>")
    assert texts(xml(body), "//p:Results/p:ErrorCode") == ["12004"]
    store.add_attribute("Shoe Size")
    _s, body = mcsb_call.soap("Update", f"<UpdateRequest {P}>{UPSERT}"
                              f"{subscriber_with('a1', {'Shoe Size': '44'}, list_id)}</UpdateRequest>")
    assert texts(xml(body), "//p:OverallStatus") == ["OK"]


def test_describe_subscriber_lists_the_profile_attributes_as_extended_properties(mcsb_call):
    _s, body = mcsb_call.soap("Describe", f"<DefinitionRequestMsg {P}><DescribeRequests><ObjectDefinitionRequest>"
                              "<ObjectType>Subscriber</ObjectType></ObjectDefinitionRequest></DescribeRequests>"
                              "</DefinitionRequestMsg>")
    root = xml(body)
    names = texts(root, "//p:ExtendedProperties/p:ExtendedProperty/p:Name")
    assert {"Email Address", "First Name", "Last Name", "Country"} <= set(names)
    props = dict(zip(texts(root, "//p:ObjectDefinition/p:Properties/p:Name"),
                     texts(root, "//p:ObjectDefinition/p:Properties/p:IsRetrievable")))
    # the guide's "Describe a Subscriber": Attributes, Lists, ModifiedDate, CustomerKey are not retrievable
    assert props["SubscriberKey"] == props["EmailAddress"] == props["Status"] == "true"
    assert props["Attributes"] == props["Lists"] == props["ModifiedDate"] == props["CustomerKey"] == "false"


def test_only_retrievable_properties_may_be_asked_for(mcsb_call):
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey", "ModifiedDate"])
    assert texts(root, "//p:OverallStatus") == [
        "Error: The Request Property(s) ModifiedDate do not match with the fields of Subscriber retrieve"]
    root = retrieve(mcsb_call, "SentEvent", ["SendID", "CreatedDate"])
    assert texts(root, "//p:OverallStatus")[0].startswith("Error: The Request Property(s) CreatedDate")
    assert texts(retrieve(mcsb_call, "SentEvent", ["SendID", "BatchID", "ListID"]), "//p:OverallStatus") == ["OK"]


def test_only_filterable_properties_may_be_filtered_on(mcsb_call):
    flt = ('<Filter xsi:type="SimpleFilterPart"><Property>Attributes</Property>'
           "<SimpleOperator>equals</SimpleOperator><Value>x</Value></Filter>")
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey"], flt)
    assert texts(root, "//p:OverallStatus") == ["Error: The Filter Property 'Attributes' is not a filterable property."]
    flt = flt.replace("Attributes", "ModifiedDate")
    assert texts(retrieve(mcsb_call, "Subscriber", ["SubscriberKey"], flt), "//p:OverallStatus")[0].startswith("Error:")


def test_an_import_column_that_names_no_attribute_gives_row_errors(mcsb_call):
    store = mcsb_call.app.store
    list_id = create_list(mcsb_call)
    (store.import_root / "Import" / "odd.csv").write_text(
        "SubscriberKey,EmailAddress,First Name,Shoe Size\nk1,a@example.com,Ann,40\nk2,b@example.com,Bob,44\n",
        encoding="utf-8")
    definition = (f'<Objects xsi:type="ImportDefinition"><CustomerKey>imp-odd</CustomerKey><Name>i</Name>'
                  f'<DestinationObject xsi:type="List"><ID>{list_id}</ID></DestinationObject>'
                  "<FileSpec>odd.csv</FileSpec></Objects>")
    mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{definition}</CreateRequest>")
    mcsb_call.soap("Perform", f'<PerformRequestMsg {P}><Action>start</Action><Definitions>'
                   '<Definition xsi:type="ImportDefinition"><CustomerKey>imp-odd</CustomerKey></Definition>'
                   "</Definitions></PerformRequestMsg>")
    deadline = time.monotonic() + 10
    while not (store.runs_for("imp-odd") and store.runs_for("imp-odd")[0].status in ("Completed", "Error")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    run = store.runs_for("imp-odd")[0]
    assert (run.total, run.ok, run.errors) == (2, 0, 2)
    assert [e.subscriber_key for e in run.row_errors] == ["k1", "k2"]
    assert "'Shoe Size'" in run.row_errors[0].message
    assert store.subscriber("k1") is None
