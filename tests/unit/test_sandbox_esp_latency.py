"""The Marketing Cloud sandbox is as late as the real service: sends, import results, events."""

from __future__ import annotations

from collections import Counter

from connector.sandbox.marketing_cloud import events as ev
from connector.sandbox.marketing_cloud.latency import EVENT_ARRIVAL, Latency
from tests.unit.test_sandbox_esp_app import P, create_list, retrieve, texts, xml


def _start_send(call, key: str, n: int = 50) -> str:
    store = call.app.store
    list_id = create_list(call, f"list-{key}")
    for i in range(n):
        store.add_subscriber(f"{key}-{i}", f"{key}{i}@example.com", list_ids=(list_id,))
    esd = (f'<Objects xsi:type="EmailSendDefinition"><CustomerKey>{key}</CustomerKey><Name>{key}</Name>'
           f"<SendDefinitionList><List><ID>{list_id}</ID></List></SendDefinitionList>"
           "<Email><CustomerKey>cesp-demo-email</CustomerKey></Email></Objects>")
    call.soap("Create", f"<CreateRequest {P}><Options/>{esd}</CreateRequest>")
    _s, body = call.soap("Perform", f'<PerformRequestMsg {P}><Action>start</Action><Definitions>'
                         f'<Definition xsi:type="EmailSendDefinition"><CustomerKey>{key}</CustomerKey>'
                         "</Definition></Definitions></PerformRequestMsg>")
    assert store.wait_idle(10)
    return texts(xml(body), "//p:Result/p:Task/p:ID")[0]


def _equals(prop: str, value: str) -> str:
    return (f'<Filter xsi:type="SimpleFilterPart"><Property>{prop}</Property><SimpleOperator>equals'
            f"</SimpleOperator><Value>{value}</Value></Filter>")


def test_a_started_send_is_retrievable_by_id_and_key_only_after_the_delay(mcsb_call):
    store = mcsb_call.app.store
    store.clock.speed = 0.0  # the sandbox clock moves only with advance(): no wall-time race
    job_id = _start_send(mcsb_call, "cesp-send-late")
    by_id, by_key = _equals("ID", job_id), _equals("EmailSendDefinition.CustomerKey", "cesp-send-late")
    assert store.latency.send_delay == 60
    for flt in (by_id, by_key):
        assert texts(retrieve(mcsb_call, "Send", ["ID"], flt), "//p:Results/p:ID") == []
    store.clock.advance(59 / 3600)
    assert texts(retrieve(mcsb_call, "Send", ["ID"], by_key), "//p:Results/p:ID") == []
    store.clock.advance(2 / 3600)
    for flt in (by_id, by_key):
        assert texts(retrieve(mcsb_call, "Send", ["ID"], flt), "//p:Results/p:ID") == [job_id]
    assert len(store.sends_for("cesp-send-late")) == 1  # the store itself always knows


def test_the_time_scale_shortens_every_delay():
    latency = Latency(scale=0.01)
    assert (latency.send_delay, latency.import_delay, latency.max_event_lag) == (0.6, 0.3, 72)
    assert Latency.none().max_event_lag == 0 and Latency.none().send_delay == 0


def test_event_arrival_follows_the_published_figures():
    """About 84% of events retrievable within 1 minute of their EventDate, 96% within 15, 99% within 60."""
    keys = [f"k{i}" for i in range(40_000)]
    sent = ev.simulate_send(1, 1, keys, [], 1_700_000_000, ev.EventRates(), seed=5).blocks[0]
    assert sent.obj_type == "SentEvent" and sent.lag is not None
    lags = list(sent.lag)
    within = Counter()
    for lag in lags:
        for _share, seconds in EVENT_ARRIVAL:
            if lag <= seconds:
                within[seconds] += 1
    n = len(lags)
    assert abs(within[60] / n - 0.84) < 0.01
    assert abs(within[900] / n - 0.96) < 0.01
    assert abs(within[3600] / n - 0.99) < 0.005
    assert within[7200] == n and max(lags) > 3600


def test_events_arrive_late_and_the_send_counters_follow_the_visible_events(mcsb_call):
    store = mcsb_call.app.store
    job_id = _start_send(mcsb_call, "cesp-send-counts", n=400)
    store.clock.advance(61 / 3600)  # the Send is retrievable; most, not all, of its sent events are
    flt = _equals("ID", job_id)
    props = ["NumberSent", "NumberDelivered", "HardBounces", "SoftBounces", "OtherBounces", "UniqueOpens",
             "UniqueClicks", "Unsubscribes"]

    def counters() -> dict[str, int]:
        root = retrieve(mcsb_call, "Send", props, flt)
        return {p: int(texts(root, f"//p:Results/p:{p}")[0]) for p in props}

    def visible(obj_type: str) -> list[str]:
        return texts(retrieve(mcsb_call, obj_type, ["SubscriberKey", "EventType"], _equals("SendID", job_id)),
                     "//p:Results/p:SubscriberKey")

    early = counters()
    assert 0 < early["NumberSent"] < 400 and early["NumberSent"] == len(visible("SentEvent"))
    store.clock.advance(24 * 7)
    late = counters()
    bounces = texts(retrieve(mcsb_call, "BounceEvent", ["EventType"], _equals("SendID", job_id)),
                    "//p:Results/p:EventType")
    assert late["NumberSent"] == len(visible("SentEvent")) == 400
    assert late["UniqueOpens"] == len(set(visible("OpenEvent"))) > 0
    assert late["UniqueClicks"] == len(set(visible("ClickEvent")))
    assert late["Unsubscribes"] == len(visible("UnsubEvent"))
    assert (late["HardBounces"], late["SoftBounces"]) == (bounces.count("HardBounce"), bounces.count("SoftBounce"))
    assert late["NumberDelivered"] == 400 - len(bounces)
