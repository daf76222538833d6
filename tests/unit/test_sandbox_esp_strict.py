"""Production rules of the Marketing Cloud sandbox: attribute catalogue, retrievable/filterable properties."""

from __future__ import annotations

import time

from connector.sandbox.marketing_cloud.store import ALL_SUBSCRIBERS_ID
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


def import_file(mcsb_call, file_name: str, key: str, csv_text: str):
    """Upload ``csv_text`` as ``file_name``, import it into a new list over SOAP and wait for its run."""
    store = mcsb_call.app.store
    list_id = create_list(mcsb_call)
    (store.import_root / "Import" / file_name).write_text(csv_text, encoding="utf-8")
    definition = (f'<Objects xsi:type="ImportDefinition"><CustomerKey>{key}</CustomerKey><Name>i</Name>'
                  f'<DestinationObject xsi:type="List"><ID>{list_id}</ID></DestinationObject>'
                  f"<FileSpec>{file_name}</FileSpec></Objects>")
    mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{definition}</CreateRequest>")
    mcsb_call.soap("Perform", f'<PerformRequestMsg {P}><Action>start</Action><Definitions>'
                   f'<Definition xsi:type="ImportDefinition"><CustomerKey>{key}</CustomerKey></Definition>'
                   "</Definitions></PerformRequestMsg>")
    deadline = time.monotonic() + 10
    while not (store.runs_for(key) and store.runs_for(key)[0].status in ("Completed", "Error")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return store.runs_for(key)[0]


def test_an_import_column_that_names_no_attribute_gives_row_errors(mcsb_call):
    store = mcsb_call.app.store
    run = import_file(mcsb_call, "odd.csv", "imp-odd", "SubscriberKey,EmailAddress,First Name,Shoe Size\n"
                      "k1,a@example.com,Ann,40\nk2,b@example.com,Bob,44\n")
    assert (run.total, run.ok, run.errors) == (2, 0, 2)
    assert [e.subscriber_key for e in run.row_errors] == ["k1", "k2"]
    assert "'Shoe Size'" in run.row_errors[0].message
    assert store.subscriber("k1") is None


def test_event_dates_carry_milliseconds_and_filters_compare_them(mcsb_call):
    """Real replies: <EventDate>2014-03-26T10:02:01.987</EventDate> (the guide's RetrieveAllSinceLastBatch sample)."""
    from datetime import datetime, timezone

    from connector.sandbox.marketing_cloud.soap import CST

    store = mcsb_call.app.store
    start = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    store.generate_events(3, event_types=("SentEvent", "OpenEvent"), start=start, hours=1 / 60)  # 20 s apart
    root = retrieve(mcsb_call, "SentEvent", ["SendID", "SubscriberKey", "EventDate", "BatchID"])
    dates = texts(root, "//p:Results/p:EventDate")
    assert len(dates) == 3 and all("." in d and len(d.split(".")[1]) <= 3 for d in dates)
    assert texts(root, "//p:Results/p:BatchID") == ["1", "1", "1"]  # one batch; opens of a recipient share it
    exact = datetime.fromisoformat(dates[1]).replace(tzinfo=CST)
    for op, value, expected in (("greaterThan", exact.replace(microsecond=0), 2), ("greaterThan", exact, 1),
                                ("lessThanOrEqual", exact.replace(microsecond=0), 1),
                                ("lessThanOrEqual", exact, 2)):
        flt = (f'<Filter xsi:type="SimpleFilterPart"><Property>EventDate</Property><SimpleOperator>{op}'
               f"</SimpleOperator><DateValue>{value.isoformat(timespec='milliseconds')}</DateValue></Filter>")
        got = texts(retrieve(mcsb_call, "SentEvent", ["EventDate"], flt), "//p:Results/p:EventDate")
        assert len(got) == expected, (op, value, got)


def test_a_filter_operand_without_its_xsi_type_is_refused(mcsb_call):
    untyped = ('<Filter xsi:type="ComplexFilterPart"><LeftOperand><Property>SubscriberKey</Property>'
               "<SimpleOperator>equals</SimpleOperator><Value>a</Value></LeftOperand><LogicalOperator>OR"
               '</LogicalOperator><RightOperand xsi:type="SimpleFilterPart"><Property>SubscriberKey</Property>'
               "<SimpleOperator>equals</SimpleOperator><Value>b</Value></RightOperand></Filter>")
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey"], untyped)
    assert texts(root, "//p:OverallStatus") == ["Error: Unknown filter of type FilterPart encountered"]
    typed = untyped.replace("<LeftOperand>", '<LeftOperand xsi:type="SimpleFilterPart">')
    assert texts(retrieve(mcsb_call, "Subscriber", ["SubscriberKey"], typed), "//p:OverallStatus") == ["OK"]


def test_millisecond_bounds_match_a_row_by_row_check():
    import random

    from connector.sandbox.marketing_cloud import events as ev
    from connector.sandbox.marketing_cloud.filters import Bounds

    block = ev.EventBlock("OpenEvent", 7, 1, [f"k{i}" for i in range(300)],
                          [(1_000 + i // 30, i, 0) for i in range(300)])  # 30 events a second for 10 s
    rng = random.Random(5)
    for _ in range(300):
        lo, hi, now = (round(1_000 + rng.random() * 11, 3) for _ in range(3))
        bounds = Bounds(lo=lo if rng.random() < 0.8 else None, lo_incl=rng.random() < 0.5,
                        hi=hi if rng.random() < 0.8 else None, hi_incl=rng.random() < 0.5)

        def naive(i: int) -> bool:
            t = block.ts[i] + ev.millis(block, i) / 1000
            return (t <= now and (bounds.lo is None or t > bounds.lo or (t == bounds.lo and bounds.lo_incl))
                    and (bounds.hi is None or t < bounds.hi or (t == bounds.hi and bounds.hi_incl)))

        assert list(block.indexes(bounds, now)) == [i for i in range(len(block)) if naive(i)], (bounds, now)


def test_a_value_the_attributes_type_refuses_fails_that_subscriber(mcsb_call):
    """SF 12000_12099: 12004 InvalidDPV, e.g. a date of birth attribute given a street address."""
    list_id = create_list(mcsb_call)
    objects = (subscriber_with("d1", {"Birthday": "1990-05-17"}, list_id)
               + subscriber_with("d2", {"Birthday": "12 Main Street"}, list_id)
               + subscriber_with("d3", {"Birthday": "5/17/1990", "First Name": "12 Main Street"}, list_id))
    _s, body = mcsb_call.soap("Create", f"<CreateRequest {P}>{UPSERT}{objects}</CreateRequest>")
    root = xml(body)
    assert texts(root, "//p:Results/p:StatusCode") == ["OK", "Error", "OK"]
    assert texts(root, "//p:Results/p:ErrorCode") == ["12004"]
    assert "'Birthday'" in texts(root, "//p:Results/p:StatusMessage")[1]
    assert mcsb_call.app.store.subscriber("d2") is None


def test_an_import_row_with_a_value_its_attribute_refuses_is_a_row_error(mcsb_call):
    store = mcsb_call.app.store
    run = import_file(mcsb_call, "typed.csv", "imp-typed", "SubscriberKey,EmailAddress,Birthday\n"
                      "t1,a@example.com,1990-05-17\nt2,b@example.com,soon\nt3,c@example.com,\n")
    assert (run.ok, run.errors) == (2, 1) and run.row_errors[0].subscriber_key == "t2"
    assert store.subscriber("t2") is None and store.subscriber("t1").attributes["Birthday"] == "1990-05-17"


def test_subscriber_modified_date_is_refused_and_list_subscriber_answers_it(mcsb_call):
    store = mcsb_call.app.store
    store.add_subscriber("m1", "m1@example.com")
    store.add_subscriber("m2", "m2@example.com")
    since = store.now()
    store.clock.advance(0.01)
    edited = store.edit_subscriber("m2", attributes={"City": "Linz"})
    assert edited.modified > since
    flt = ('<Filter xsi:type="SimpleFilterPart"><Property>ModifiedDate</Property>'
           f"<SimpleOperator>greaterThan</SimpleOperator><DateValue>{since.isoformat()}</DateValue></Filter>")
    # Subscriber refuses ModifiedDate as a filter (and as a property: the test above) ...
    assert texts(retrieve(mcsb_call, "Subscriber", ["SubscriberKey"], flt), "//p:OverallStatus")[0].startswith(
        "Error: The Filter Property 'ModifiedDate'")
    # ... ListSubscriber of All Subscribers answers it, moved by the edit
    root = retrieve(mcsb_call, "ListSubscriber", ["SubscriberKey", "ModifiedDate", "ListID"], flt)
    assert texts(root, "//p:OverallStatus") == ["OK"]
    assert texts(root, "//p:Results/p:SubscriberKey") == ["m2"]
    assert texts(root, "//p:Results/p:ListID") == [str(ALL_SUBSCRIBERS_ID)]


def _list_entry(key: str, list_id: int, action: str) -> str:
    return (f'<Objects xsi:type="Subscriber"><SubscriberKey>{key}</SubscriberKey>'
            f"<Lists><ID>{list_id}</ID><Action>{action}</Action></Lists></Objects>")


def test_a_lists_entry_with_action_delete_takes_the_subscriber_off_that_list_only(mcsb_call):
    list_id = create_list(mcsb_call)
    _s, body = mcsb_call.soap("Create", f"<CreateRequest {P}>{UPSERT}{subscriber_with('d1', {}, list_id)}"
                              "</CreateRequest>")
    assert texts(xml(body), "//p:OverallStatus") == ["OK"]
    store = mcsb_call.app.store
    _s, body = mcsb_call.soap("Update", f"<UpdateRequest {P}>{_list_entry('d1', list_id, 'Delete')}"
                              f"{_list_entry('d1', ALL_SUBSCRIBERS_ID, 'delete')}"
                              f"{_list_entry('d1', list_id, 'remove')}</UpdateRequest>")
    root = xml(body)
    assert texts(root, "//p:Results/p:StatusCode") == ["OK", "Error", "Error"]
    messages = texts(root, "//p:Results/p:StatusMessage")
    assert "All Subscribers" in messages[1] and "'remove'" in messages[2]
    assert "d1" not in store.lists[list_id].members
    assert store.subscriber("d1") is not None and store.subscriber("d1").status == "Active"
