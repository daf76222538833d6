"""Filters, CST dates and the compact event store of the Marketing Cloud sandbox."""

from __future__ import annotations

from datetime import datetime, timezone

from connector.sandbox.marketing_cloud import events as ev
from connector.sandbox.marketing_cloud.filters import compile_filter, date_bounds
from connector.sandbox.marketing_cloud.soap import Obj, epoch_to_cst_text, parse_date, to_cst_text

ALLOWED = frozenset({"EventDate", "SendID", "SubscriberKey"})


def simple(prop: str, op: str, *values: str, date: bool = False) -> Obj:
    return Obj("SimpleFilterPart", {"Property": [prop], "SimpleOperator": [op],
                                    ("DateValue" if date else "Value"): list(values)})


def complex_(left: Obj, op: str, right: Obj) -> Obj:
    return Obj("ComplexFilterPart", {"LeftOperand": [left], "LogicalOperator": [op], "RightOperand": [right]})


def test_dates_without_offset_are_cst_and_offsets_are_honoured():
    assert parse_date("2026-01-01T00:00:00") == datetime(2026, 1, 1, 6, 0, tzinfo=timezone.utc)
    assert parse_date("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
    assert parse_date("2026-07-01T00:00:00-05:00") == datetime(2026, 7, 1, 5, 0, tzinfo=timezone.utc)
    # no daylight saving: July is still UTC-6
    assert to_cst_text(datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)) == "2026-07-01T06:00:00.000"
    assert epoch_to_cst_text(int(datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc).timestamp())) == "2025-12-31T21:00:00"


def test_compiled_filters_coerce_types():
    row = {"EventDate": datetime(2026, 1, 1, tzinfo=timezone.utc), "SendID": 42, "SubscriberKey": "ABC"}
    assert compile_filter(simple("SendID", "equals", "42"), ALLOWED)(row)
    assert compile_filter(simple("SubscriberKey", "equals", "abc"), ALLOWED)(row)  # case-insensitive
    assert compile_filter(simple("SendID", "IN", "1", "42"), ALLOWED)(row)
    assert not compile_filter(simple("SendID", "between", "1", "41"), ALLOWED)(row)
    assert compile_filter(simple("EventDate", "lessThan", "2025-12-31T18:00:01", date=True), ALLOWED)(row)
    both = complex_(simple("SendID", "equals", "42"), "AND", simple("SubscriberKey", "like", "a%"))
    assert compile_filter(both, ALLOWED)(row)
    either = complex_(simple("SendID", "equals", "1"), "OR", simple("SubscriberKey", "isNotNull"))
    assert compile_filter(either, ALLOWED)(row)


def test_date_bounds_of_and_trees_are_exact():
    f = complex_(simple("EventDate", "greaterThan", "2026-01-01T00:00:00Z", date=True), "AND",
                 simple("EventDate", "lessThanOrEqual", "2026-01-02T00:00:00Z", date=True))
    bounds = date_bounds(f)
    assert bounds.exact and not bounds.lo_incl and bounds.hi_incl
    assert bounds.hi - bounds.lo == 86400
    mixed = complex_(simple("EventDate", "greaterThan", "2026-01-01T00:00:00Z", date=True), "AND",
                     simple("SendID", "equals", "3"))
    assert not date_bounds(mixed).exact and date_bounds(mixed).lo is not None
    assert date_bounds(complex_(simple("SendID", "equals", "1"), "OR", simple("SendID", "equals", "2"))).lo is None


def test_simulation_is_deterministic_and_follows_the_rates():
    keys = [f"k{i}" for i in range(20_000)]
    rates = ev.EventRates(open=0.5, click=0.2)
    one = ev.simulate_send(1, 9, keys, [], 1_700_000_000, rates, seed=5)
    two = ev.simulate_send(1, 9, keys, [], 1_700_000_000, rates, seed=5)
    sizes = {b.obj_type: len(b) for b in one.blocks}
    assert sizes == {b.obj_type: len(b) for b in two.blocks}
    assert sizes["SentEvent"] == 20_000
    delivered = 20_000 - sizes["BounceEvent"]
    assert abs(sizes["OpenEvent"] / delivered - 0.5) < 0.03
    assert abs(sizes["ClickEvent"] / sizes["OpenEvent"] - 0.2) < 0.03
    assert 0 < sizes["BounceEvent"] < 1000
    for block in one.blocks:
        assert list(block.ts) == sorted(block.ts)


def test_blocks_only_show_events_the_clock_has_passed():
    block = ev.EventBlock("OpenEvent", 1, 2, ["a", "b", "c"], [(300, 2, 0), (100, 0, 0), (200, 1, 0)])
    assert block.visible(199) == 1
    rows = list(ev.iter_event_rows([block], "OpenEvent", None, lambda r: True, ["SubscriberKey", "EventDate"], 250))
    assert len(rows) == 2 and "<SubscriberKey>a</SubscriberKey>" in rows[0]
    assert rows[0].index("<SubscriberKey>") < rows[0].index("<EventDate>")


def test_synthetic_blocks_spread_events_evenly():
    blocks = ev.synthetic_blocks(7, 1, 1000, ("SentEvent", "BounceEvent"), 1_000_000, 3600, seed=1)
    assert [len(b) for b in blocks] == [1000, 1000]
    assert blocks[0].ts[0] == 1_000_000 and blocks[0].ts[-1] < 1_003_600
    row = blocks[1].row(3)
    assert row["BounceCategory"] == "Technical/Other bounce" and row["EventType"] == "OtherBounce"


def test_arrival_lag_makes_older_events_appear_after_newer_ones():
    block = ev.synthetic_blocks(1, 1, 600, ("OpenEvent",), 1_000_000, 600, seed=2, lag_seconds=300)[0]
    now = 1_000_600
    arrived = list(block.arrived_indexes(now))
    assert block.visible(now) == len(arrived) < 600
    newest_seen = max(block.ts[i] for i in arrived)
    later = [i for i in block.arrived_indexes(now + 300) if i not in set(arrived)]
    assert any(block.ts[i] < newest_seen for i in later)  # late arrivals behind the watermark
    assert block.visible(now + 300) == 600
    rows = list(ev.iter_event_rows([block], "OpenEvent", None, lambda r: True, ["SubscriberKey"], now))
    assert len(rows) == len(arrived)


def test_send_id_filters_skip_other_sends():
    a = ev.synthetic_blocks(1, 1, 50, ("OpenEvent",), 1_700_000_000, 60, seed=1)[0]
    b = ev.synthetic_blocks(2, 1, 70, ("OpenEvent",), 1_700_000_000, 60, seed=2)[0]
    flt = complex_(simple("SendID", "IN", "2", "3"), "AND",
                   simple("EventDate", "greaterThanOrEqual", "2001-01-01T00:00:00Z", date=True))
    pred = compile_filter(flt, ALLOWED)
    rows = list(ev.iter_event_rows([a, b], "OpenEvent", flt, pred, ["SendID"], 1_800_000_000))
    assert len(rows) == 70 and all("<SendID>2</SendID>" in r for r in rows)
