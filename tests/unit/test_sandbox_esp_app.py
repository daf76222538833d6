"""The Marketing Cloud sandbox app, called in-process with raw SOAP envelopes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from lxml import etree

from connector.sandbox.marketing_cloud.soap import CST

NS = {"p": "http://exacttarget.com/wsdl/partnerAPI", "s": "http://schemas.xmlsoap.org/soap/envelope/",
      "f": "urn:fault.partner.exacttarget.com"}
UPSERT = ('<Options><SaveOptions><SaveOption><PropertyName>*</PropertyName><SaveAction>UpdateAdd</SaveAction>'
          "</SaveOption></SaveOptions></Options>")
P = 'xmlns="http://exacttarget.com/wsdl/partnerAPI"'


def xml(body: bytes) -> etree._Element:
    return etree.fromstring(body)


def texts(root: etree._Element, path: str) -> list[str]:
    return [e.text or "" for e in root.xpath(path, namespaces=NS)]


def create_list(call, key: str = "cesp-list-1") -> int:
    status, body = call.soap("Create", f'<CreateRequest {P}><Options/><Objects xsi:type="List">'
                             f"<CustomerKey>{key}</CustomerKey><ListName>List {key}</ListName></Objects></CreateRequest>")
    assert status == 200, body
    return int(texts(xml(body), "//p:Results/p:NewID")[0])


def subscriber(key: str, email: str, list_id: int | None = None) -> str:
    lists = f"<Lists><ID>{list_id}</ID><Status>Active</Status><Action>create</Action></Lists>" if list_id else ""
    return (f'<Objects xsi:type="Subscriber"><EmailAddress>{email}</EmailAddress><SubscriberKey>{key}</SubscriberKey>'
            f"{lists}</Objects>")


def retrieve(call, obj_type: str, props: list[str], filter_xml: str = "", extra: str = "") -> etree._Element:
    properties = "".join(f"<Properties>{p}</Properties>" for p in props)
    status, body = call.soap("Retrieve", f"<RetrieveRequestMsg {P}><RetrieveRequest><ObjectType>{obj_type}</ObjectType>"
                             f"{properties}{filter_xml}{extra}</RetrieveRequest></RetrieveRequestMsg>")
    assert status == 200, body
    return xml(body)


def test_wsdl_is_served_case_insensitively_with_the_request_address(mcsb_call):
    status, headers, body = mcsb_call.request("GET", "/service.ASMX", query="WSDL")
    assert status == 200 and headers["Content-Type"].startswith("text/xml")
    root = xml(body)
    address = root.xpath("//soap:address/@location", namespaces={"soap": "http://schemas.xmlsoap.org/wsdl/soap/"})
    assert address == ["https://127.0.0.1:9443/Service.asmx"]


def test_unknown_soap_action_is_a_client_fault(mcsb_call):
    status, body = mcsb_call.soap("Test", f"<CreateRequest {P}/>")
    root = xml(body)
    assert status == 500
    assert texts(root, "//faultcode") == ["soap:Client"]
    assert "SOAPAction: Test" in texts(root, "//faultstring")[0]


def test_missing_or_wrong_credentials_give_the_security_fault(mcsb_call):
    status, body = mcsb_call.soap("Retrieve", f"<RetrieveRequestMsg {P}/>", auth="none")
    assert status == 500 and "security header is not present" in body.decode()
    status, body = mcsb_call.soap("Retrieve", f"<RetrieveRequestMsg {P}/>", password="wrong")
    root = xml(body)
    assert texts(root, "//faultstring") == ["Login failed"]
    assert texts(root, "//faultcode")[0].endswith(":Security")


def test_oauth_token_and_fueloauth_header(mcsb_call):
    status, reply = mcsb_call.token(grant_type="client_credentials", client_id="cid-123", client_secret="secret-456",
                                    account_id="7281698")
    assert status == 200
    assert reply["token_type"] == "Bearer" and reply["expires_in"] == 1200
    assert reply["soap_instance_url"] == "https://127.0.0.1:9443/"
    root = retrieve_oauth(mcsb_call, reply["access_token"])
    assert texts(root, "//p:OverallStatus") == ["OK"]


def retrieve_oauth(call, token: str) -> etree._Element:
    status, body = call.soap("Retrieve", f"<RetrieveRequestMsg {P}><RetrieveRequest><ObjectType>Email</ObjectType>"
                             "<Properties>CustomerKey</Properties></RetrieveRequest></RetrieveRequestMsg>",
                             auth="oauth", token=token)
    return xml(body)


def test_bad_client_secret_gets_the_401_json_error(mcsb_call):
    status, reply = mcsb_call.token(grant_type="client_credentials", client_id="cid-123", client_secret="nope")
    assert status == 401 and reply["error"] == "invalid_client"


def test_expired_token_gets_token_expired_fault(mcsb_call):
    _status, reply = mcsb_call.token(grant_type="client_credentials", client_id="cid-123", client_secret="secret-456")
    mcsb_call.app.credentials.expire_all()
    root = retrieve_oauth(mcsb_call, reply["access_token"])
    assert texts(root, "//faultstring") == ["Token Expired"]
    root = retrieve_oauth(mcsb_call, "made-up-token")
    assert texts(root, "//faultstring") == ["Login failed"]


def test_create_subscribers_has_errors_for_bad_address_and_duplicate_key(mcsb_call):
    list_id = create_list(mcsb_call)
    objects = subscriber("k1", "a@example.com", list_id) + subscriber("k2", "not-an-address", list_id)
    status, body = mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{objects}</CreateRequest>")
    root = xml(body)
    assert texts(root, "//p:OverallStatus") == ["Has Errors"]
    assert texts(root, "//p:Results/p:StatusCode") == ["OK", "Error"]
    assert texts(root, "//p:Results/p:OrdinalID") == ["0", "1"]
    assert texts(root, "//p:Results/p:ErrorCode") == ["12000"]
    # created again without UpdateAdd: the real duplicate error
    status, body = mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{subscriber('k1', 'a@example.com')}</CreateRequest>")
    root = xml(body)
    assert texts(root, "//p:OverallStatus") == ["Error"]
    assert texts(root, "//p:Results/p:ErrorCode") == ["12014"]
    assert texts(root, "//p:Results/p:StatusMessage") == ["The subscriber is already on the list"]
    # with UpdateAdd it is an upsert
    status, body = mcsb_call.soap("Create", f"<CreateRequest {P}>{UPSERT}{subscriber('k1', 'b@example.com', list_id)}</CreateRequest>")
    assert texts(xml(body), "//p:OverallStatus") == ["OK"]
    assert mcsb_call.app.store.subscriber("k1").email == "b@example.com"
    assert "k1" in mcsb_call.app.store.lists[list_id].members


def test_has_errors_fault_knob_fails_some_objects(mcsb_call):
    mcsb_call.app.faults.set("has_errors", next_n=1)
    objects = "".join(subscriber(f"k{i}", f"a{i}@example.com") for i in range(4))
    _status, body = mcsb_call.soap("Create", f"<CreateRequest {P}>{UPSERT}{objects}</CreateRequest>")
    root = xml(body)
    assert texts(root, "//p:OverallStatus") == ["Has Errors"]
    assert texts(root, "//p:Results/p:StatusCode") == ["OK", "Error", "OK", "Error"]


def test_retrieve_pages_of_2500_with_continue_request(mcsb_call):
    store = mcsb_call.app.store
    for i in range(5100):
        store.add_subscriber(f"key-{i:05d}", f"user{i}@example.com")
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey", "EmailAddress"])
    seen = texts(root, "//p:Results/p:SubscriberKey")
    statuses = texts(root, "//p:OverallStatus")
    request_id = texts(root, "//p:RequestID")[0]
    pages = [len(seen)]
    while statuses[-1] == "MoreDataAvailable":
        status, body = mcsb_call.soap("Retrieve", f"<RetrieveRequestMsg {P}><RetrieveRequest>"
                                      f"<ContinueRequest>{request_id}</ContinueRequest></RetrieveRequest></RetrieveRequestMsg>")
        page = xml(body)
        statuses += texts(page, "//p:OverallStatus")
        keys = texts(page, "//p:Results/p:SubscriberKey")
        pages.append(len(keys))
        seen += keys
        request_id = texts(page, "//p:RequestID")[0]
    assert pages == [2500, 2500, 100]
    assert statuses == ["MoreDataAvailable", "MoreDataAvailable", "OK"]
    assert len(set(seen)) == 5100


def test_one_request_id_for_the_whole_result_set_and_each_continuation_moves_on(mcsb_call):
    for i in range(30):
        mcsb_call.app.store.add_subscriber(f"key-{i:02d}", f"u{i}@example.com")
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey"], extra="<Options><BatchSize>10</BatchSize></Options>")
    request_id = texts(root, "//p:RequestID")[0]
    body = f"<RetrieveRequestMsg {P}><RetrieveRequest><ObjectType>Subscriber</ObjectType><ContinueRequest>{request_id}</ContinueRequest></RetrieveRequest></RetrieveRequestMsg>"
    second, third = (xml(mcsb_call.soap("Retrieve", body)[1]) for _ in range(2))
    assert texts(second, "//p:RequestID") == texts(third, "//p:RequestID") == [request_id]
    assert texts(second, "//p:OverallStatus") == ["MoreDataAvailable"] and texts(third, "//p:OverallStatus") == ["OK"]
    pages = [texts(page, "//p:Results/p:SubscriberKey") for page in (root, second, third)]
    assert [len(p) for p in pages] == [10, 10, 10]
    assert len({k for p in pages for k in p}) == 30  # the same continuation asked again got the NEXT page
    gone = xml(mcsb_call.soap("Retrieve", body)[1])
    assert texts(gone, "//p:OverallStatus")[0].startswith("Error: ContinueRequest")


def test_filters_simple_and_complex(mcsb_call):
    store = mcsb_call.app.store
    for i in range(10):
        store.add_subscriber(f"k{i}", f"user{i}@example.com", status="Unsubscribed" if i % 3 == 0 else "Active")
    flt = ('<Filter xsi:type="ComplexFilterPart"><LeftOperand xsi:type="SimpleFilterPart"><Property>SubscriberKey'
           "</Property><SimpleOperator>IN</SimpleOperator><Value>k1</Value><Value>k3</Value><Value>k4</Value>"
           '</LeftOperand><LogicalOperator>AND</LogicalOperator><RightOperand xsi:type="SimpleFilterPart">'
           "<Property>Status</Property><SimpleOperator>equals</SimpleOperator><Value>Active</Value></RightOperand></Filter>")
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey", "Status"], flt)
    assert sorted(texts(root, "//p:Results/p:SubscriberKey")) == ["k1", "k4"]
    like = ('<Filter xsi:type="SimpleFilterPart"><Property>EmailAddress</Property><SimpleOperator>like</SimpleOperator>'
            "<Value>USER1%</Value></Filter>")
    assert texts(retrieve(mcsb_call, "Subscriber", ["SubscriberKey"], like), "//p:Results/p:SubscriberKey") == ["k1"]


def test_unknown_property_is_an_error_status(mcsb_call):
    root = retrieve(mcsb_call, "SentEvent", ["SendID", "NoSuchField"])
    status = texts(root, "//p:OverallStatus")[0]
    assert status.startswith("Error: The Request Property(s) NoSuchField")


def test_events_have_cst_dates_and_respect_the_date_filter(mcsb_call):
    store = mcsb_call.app.store
    start = datetime(2026, 1, 1, 5, 30, tzinfo=timezone.utc)  # 2025-12-31 23:30 CST: across a day boundary
    store.generate_events(120, event_types=("OpenEvent",), start=start, hours=2.0)
    since = (start + timedelta(hours=1)).astimezone(CST).isoformat()
    flt = ('<Filter xsi:type="SimpleFilterPart"><Property>EventDate</Property><SimpleOperator>greaterThan'
           f"</SimpleOperator><DateValue>{since}</DateValue></Filter>")
    root = retrieve(mcsb_call, "OpenEvent", ["SendID", "SubscriberKey", "EventDate", "EventType"], flt)
    dates = texts(root, "//p:Results/p:EventDate")
    # 120 events in 2 h = 1 per minute; the 61st is at 06:30:00.938 UTC, later than the whole second asked
    assert len(dates) == 60
    assert all("+" not in d and not d.endswith("Z") for d in dates)
    first = datetime.fromisoformat(dates[0]).replace(tzinfo=CST)
    assert first > start + timedelta(hours=1)
    assert set(texts(root, "//p:Results/p:EventType")) == {"Open"}
    utc_naive = ('<Filter xsi:type="SimpleFilterPart"><Property>EventDate</Property><SimpleOperator>lessThan'
                 f"</SimpleOperator><DateValue>{(start + timedelta(minutes=10)).strftime('%Y-%m-%dT%H:%M:%SZ')}</DateValue></Filter>")
    assert len(texts(retrieve(mcsb_call, "OpenEvent", ["EventDate"], utc_naive), "//p:Results/p:EventDate")) == 10


def test_send_definition_start_and_summary(mcsb_call):
    store = mcsb_call.app.store
    list_id = create_list(mcsb_call)
    for i in range(200):
        store.add_subscriber(f"r{i}", f"r{i}@example.com", list_ids=(list_id,))
    store.subscriber("r0").status = "Unsubscribed"
    esd = (f'<Objects xsi:type="EmailSendDefinition"><CustomerKey>cesp-send-9</CustomerKey><Name>Send 9</Name>'
           "<SendClassification><CustomerKey>Default Commercial</CustomerKey></SendClassification>"
           f"<SendDefinitionList><List><ID>{list_id}</ID></List><SendDefinitionListType>SourceList"
           "</SendDefinitionListType></SendDefinitionList><Email><CustomerKey>cesp-demo-email</CustomerKey></Email></Objects>")
    _s, body = mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{esd}</CreateRequest>")
    assert texts(xml(body), "//p:OverallStatus") == ["OK"]
    _s, body = mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{esd}</CreateRequest>")
    assert texts(xml(body), "//p:OverallStatus") == ["Error"]  # customer keys are unique
    _s, body = mcsb_call.soap("Perform", f'<PerformRequestMsg {P}><Action>start</Action><Definitions>'
                              '<Definition xsi:type="EmailSendDefinition"><CustomerKey>cesp-send-9</CustomerKey>'
                              "</Definition></Definitions></PerformRequestMsg>")
    root = xml(body)
    assert texts(root, "//p:OverallStatus") == ["OK"]
    job_id = texts(root, "//p:Result/p:Task/p:ID")[0]
    assert store.wait_idle(10)
    store.clock.advance(24 * 7)
    flt = f'<Filter xsi:type="SimpleFilterPart"><Property>ID</Property><SimpleOperator>equals</SimpleOperator><Value>{job_id}</Value></Filter>'
    root = retrieve(mcsb_call, "Send", ["ID", "NumberSent", "NumberTargeted", "ExistingUnsubscribes", "UniqueOpens",
                                        "Status", "EmailSendDefinition.CustomerKey"], flt)
    assert texts(root, "//p:Results/p:NumberSent") == ["199"]
    assert texts(root, "//p:Results/p:NumberTargeted") == ["200"]
    assert texts(root, "//p:Results/p:ExistingUnsubscribes") == ["1"]
    assert texts(root, "//p:Results/p:Status") == ["Complete"]
    assert texts(root, "//p:Results/p:EmailSendDefinition/p:CustomerKey") == ["cesp-send-9"]
    assert int(texts(root, "//p:Results/p:UniqueOpens")[0]) > 20
    not_sent = retrieve(mcsb_call, "NotSentEvent", ["SubscriberKey"])
    assert texts(not_sent, "//p:Results/p:SubscriberKey") == ["r0"]


def test_import_definition_reads_the_csv_and_reports_row_errors(mcsb_call, tmp_path):
    store = mcsb_call.app.store
    list_id = create_list(mcsb_call)
    (store.import_root / "Import" / "cesp_7_1.csv").write_text(
        'SubscriberKey,EmailAddress,First Name\nk1,a@example.com,Ann\nk2,bad address,Bob\nk3,c@example.com,"Zoë, Jr."\n',
        encoding="utf-8")
    definition = (f'<Objects xsi:type="ImportDefinition"><CustomerKey>cesp-import-7-1</CustomerKey><Name>i</Name>'
                  f'<DestinationObject xsi:type="List"><ID>{list_id}</ID></DestinationObject>'
                  "<FieldMappingType>InferFromColumnHeadings</FieldMappingType><FileSpec>cesp_7_1.csv</FileSpec>"
                  "<FileType>CSV</FileType><RetrieveFileTransferLocation><CustomerKey>ExactTarget Enhanced FTP"
                  "</CustomerKey></RetrieveFileTransferLocation><UpdateType>AddAndUpdate</UpdateType></Objects>")
    _s, body = mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{definition}</CreateRequest>")
    assert texts(xml(body), "//p:OverallStatus") == ["OK"]
    _s, body = mcsb_call.soap("Perform", f'<PerformRequestMsg {P}><Action>start</Action><Definitions>'
                              '<Definition xsi:type="ImportDefinition"><CustomerKey>cesp-import-7-1</CustomerKey>'
                              "</Definition></Definitions></PerformRequestMsg>")
    assert texts(xml(body), "//p:Result/p:Task/p:ID")
    flt = ('<Filter xsi:type="SimpleFilterPart"><Property>ImportDefinitionCustomerKey</Property>'
           "<SimpleOperator>equals</SimpleOperator><Value>cesp-import-7-1</Value></Filter>")
    props = ["ImportDefinitionCustomerKey", "ImportStatus", "NumberSuccessful", "NumberErrors", "TotalRows"]
    store.wait_idle()
    # the results of a recently started import are not readily available (Latency.import_summary_seconds)
    assert texts(retrieve(mcsb_call, "ImportResultsSummary", props, flt), "//p:Results/p:ImportStatus") == []
    store.clock.advance(store.latency.import_delay / 3600)
    deadline = time.monotonic() + 10
    while True:
        root = retrieve(mcsb_call, "ImportResultsSummary", props, flt)
        if texts(root, "//p:Results/p:ImportStatus") == ["Completed"] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert texts(root, "//p:Results/p:ImportStatus") == ["Completed"]
    assert texts(root, "//p:Results/p:NumberSuccessful") == ["2"]
    assert texts(root, "//p:Results/p:NumberErrors") == ["1"]
    assert texts(root, "//p:Results/p:TotalRows") == ["3"]
    assert store.subscriber("k3").attributes["First Name"] == "Zoë, Jr."
    assert set(store.lists[list_id].members) == {"k1", "k3"}
    assert store.runs_for("cesp-import-7-1")[0].row_errors[0].subscriber_key == "k2"


def test_import_of_a_missing_file_ends_in_error(mcsb_call):
    list_id = create_list(mcsb_call)
    definition = (f'<Objects xsi:type="ImportDefinition"><CustomerKey>imp-x</CustomerKey>'
                  f'<DestinationObject xsi:type="List"><ID>{list_id}</ID></DestinationObject>'
                  "<FileSpec>missing.csv</FileSpec></Objects>")
    mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{definition}</CreateRequest>")
    mcsb_call.soap("Perform", f'<PerformRequestMsg {P}><Action>start</Action><Definitions><Definition xsi:type="ImportDefinition">'
                   "<CustomerKey>imp-x</CustomerKey></Definition></Definitions></PerformRequestMsg>")
    assert mcsb_call.app.store.wait_idle(10)
    assert mcsb_call.app.store.runs_for("imp-x")[0].status == "Error"


EMAIL_NAMES = (f"<RetrieveRequestMsg {P}><RetrieveRequest><ObjectType>Email</ObjectType>"
               "<Properties>Name</Properties></RetrieveRequest></RetrieveRequestMsg>")


def test_throttle_fault_is_http_500_rate_limited(mcsb_call):
    """The guide's "Rate Limiting" page: HTTP 500, soap:Server "Rate Limited", apifault Code 17."""
    mcsb_call.app.faults.set("throttle", next_n=1)
    status, body = mcsb_call.soap("Retrieve", EMAIL_NAMES)
    assert status == 500
    root = xml(body)
    assert texts(root, "//faultcode") == ["soap:Server"] and texts(root, "//faultstring") == ["Rate Limited"]
    assert texts(root, "//f:apifault/f:Code") == ["17"] and texts(root, "//f:apifault/f:Message") == ["Rate Limited"]


def test_calls_over_the_rate_knob_are_throttled(mcsb_call):
    mcsb_call.app.rate.per_minute = 3
    statuses = [mcsb_call.soap("Retrieve", EMAIL_NAMES)[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 500, 500]
    mcsb_call.app.rate.per_minute = None
    assert mcsb_call.soap("Retrieve", EMAIL_NAMES)[0] == 200


def test_list_subscriber_and_keyed_subscriber_lookup(mcsb_call):
    store = mcsb_call.app.store
    list_id = create_list(mcsb_call)
    for i in range(50):
        store.add_subscriber(f"m{i}", f"m{i}@example.com", list_ids=(list_id,) if i < 5 else ())
    flt = (f'<Filter xsi:type="SimpleFilterPart"><Property>ListID</Property><SimpleOperator>equals</SimpleOperator>'
           f"<Value>{list_id}</Value></Filter>")
    root = retrieve(mcsb_call, "ListSubscriber", ["ListID", "SubscriberKey", "Status"], flt)
    assert sorted(texts(root, "//p:Results/p:SubscriberKey")) == [f"m{i}" for i in range(5)]
    keyed = ('<Filter xsi:type="ComplexFilterPart"><LeftOperand xsi:type="SimpleFilterPart"><Property>SubscriberKey'
             "</Property><SimpleOperator>IN</SimpleOperator><Value>m3</Value><Value>m30</Value><Value>nobody</Value>"
             '</LeftOperand><LogicalOperator>AND</LogicalOperator><RightOperand xsi:type="SimpleFilterPart">'
             "<Property>Status</Property><SimpleOperator>equals</SimpleOperator><Value>Active</Value></RightOperand></Filter>")
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey"], keyed)
    assert sorted(texts(root, "//p:Results/p:SubscriberKey")) == ["m3", "m30"]
    root = retrieve(mcsb_call, "ListSubscriber", ["ListID", "SubscriberKey"], keyed)
    assert sorted(texts(root, "//p:Results/p:ListID")) == sorted([str(list_id), "1000", "1000"])


def test_unsubscribe_events_change_subscriber_status_when_visible(mcsb_call):
    from connector.sandbox.marketing_cloud.events import EventRates

    store = mcsb_call.app.store
    store.rates = EventRates(open=1.0, unsubscribe=1.0, hard_bounce=0, soft_bounce=0, block_bounce=0,
                             technical_bounce=0, unknown_bounce=0)
    list_id = create_list(mcsb_call)
    store.add_subscriber("u1", "u1@example.com", list_ids=(list_id,))
    esd = (f'<Objects xsi:type="EmailSendDefinition"><CustomerKey>s-u</CustomerKey>'
           f"<SendDefinitionList><List><ID>{list_id}</ID></List></SendDefinitionList>"
           "<Email><CustomerKey>welcome</CustomerKey></Email></Objects>")
    mcsb_call.soap("Create", f"<CreateRequest {P}><Options/>{esd}</CreateRequest>")
    mcsb_call.soap("Perform", f'<PerformRequestMsg {P}><Action>start</Action><Definitions><Definition xsi:type='
                   '"EmailSendDefinition"><CustomerKey>s-u</CustomerKey></Definition></Definitions></PerformRequestMsg>')
    assert store.wait_idle(10)
    assert store.subscriber("u1").status == "Active"
    store.clock.advance(24 * 10)
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey", "Status"])
    assert texts(root, "//p:Results/p:Status") == ["Unsubscribed"]
    root = retrieve(mcsb_call, "UnsubEvent", ["SubscriberKey", "EventType", "List"])
    assert texts(root, "//p:Results/p:List/p:ID") == [str(list_id)]
    assert texts(root, "//p:Results/p:EventType") == ["Unsubscribe"]


def test_soap_12_with_ws_addressing_action(mcsb_call):
    creds = mcsb_call.app.credentials
    envelope = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing">'
        '<s:Header><a:Action s:mustUnderstand="1">Retrieve</a:Action>'
        '<o:Security xmlns:o="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">'
        f"<o:UsernameToken><o:Username>{creds.username}</o:Username><o:Password>{creds.password}</o:Password>"
        "</o:UsernameToken></o:Security></s:Header><s:Body>"
        f"<RetrieveRequestMsg {P}><RetrieveRequest><ObjectType>SendClassification</ObjectType>"
        "<Properties>CustomerKey</Properties></RetrieveRequest></RetrieveRequestMsg></s:Body></s:Envelope>")
    status, headers, body = mcsb_call.request("POST", "/Service.asmx", envelope.encode(),
                                              {"Content-Type": "application/soap+xml; charset=utf-8"})
    assert status == 200 and headers["Content-Type"].startswith("application/soap+xml")
    root = xml(body)
    assert root.nsmap["soap"] == "http://www.w3.org/2003/05/soap-envelope"
    assert sorted(texts(root, "//p:Results/p:CustomerKey")) == ["Default Commercial", "Default Transactional"]


def test_real_operations_the_sandbox_lacks_get_a_clear_client_fault(mcsb_call):
    status, body = mcsb_call.soap("Extract", f"<ExtractRequestMsg {P}/>")
    assert status == 500
    assert "not available in the connector's sandbox" in texts(xml(body), "//faultstring")[0]


def test_repeated_bounces_over_two_weeks_make_a_subscriber_held(mcsb_call):
    store = mcsb_call.app.store
    store.add_subscriber("b1", "b1@example.com")
    start = store.clock.now()
    for days in (1, 8, 16):
        store.add_status_change(start + timedelta(days=days), "b1", "Bounced")
    store.clock.advance(24 * 9)
    store.apply_due_changes()
    assert store.subscriber("b1").status == "Bounced"
    store.clock.advance(24 * 8)
    root = retrieve(mcsb_call, "Subscriber", ["SubscriberKey", "Status"])
    assert texts(root, "//p:Results/p:Status") == ["Held"]


def test_events_answer_list_id_after_the_wsdl_fields(mcsb_call):
    mcsb_call.app.store.generate_events(1, event_types=("OpenEvent",), list_id=77)
    root = retrieve(mcsb_call, "OpenEvent", ["ListID", "SendID", "EventDate"])
    row = root.xpath("//p:Results", namespaces=NS)[0]
    assert [etree.QName(c).localname for c in row] == ["PartnerKey", "ObjectID", "SendID", "EventDate", "ListID"]
    assert texts(root, "//p:Results/p:ListID") == ["77"]
