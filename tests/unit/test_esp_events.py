"""Central Standard Time conversion and event-row parsing of the Marketing Cloud adapter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from connector.esp.events import (
    EVENT_OBJECTS,
    event_from_row,
    events_from_rows,
    flatten,
    parse_esp_datetime,
    to_esp_datetime,
)
from connector.models import EventType

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # late evening CST is the next day in UTC
        ("2026-03-31T23:59:59", datetime(2026, 4, 1, 5, 59, 59, tzinfo=UTC)),
        ("2026-12-31T18:00:00", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
        ("2026-01-01T00:00:00", datetime(2026, 1, 1, 6, 0, tzinfo=UTC)),
        # summer: still UTC-6 (no daylight saving at Marketing Cloud)
        ("2026-07-04T12:00:00", datetime(2026, 7, 4, 18, 0, tzinfo=UTC)),
        ("2017-02-16T01:59:27.29", datetime(2017, 2, 16, 7, 59, 27, 290000, tzinfo=UTC)),
        ("2017-02-16T01:59:27.1234567", datetime(2017, 2, 16, 7, 59, 27, 123456, tzinfo=UTC)),
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, 0, 0, tzinfo=UTC)),
        ("2026-01-01T00:00:00-05:00", datetime(2026, 1, 1, 5, 0, tzinfo=UTC)),
    ],
)
def test_esp_dates_are_cst_without_offset(text: str, expected: datetime) -> None:
    parsed = parse_esp_datetime(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_filter_dates_go_out_as_cst_whole_seconds() -> None:
    value = to_esp_datetime(datetime(2026, 1, 1, 3, 30, 15, 999999, tzinfo=UTC))
    assert value.isoformat() == "2025-12-31T21:30:15-06:00"
    assert parse_esp_datetime(value.isoformat()) == datetime(2026, 1, 1, 3, 30, 15, tzinfo=UTC)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_esp_datetime(datetime(2026, 1, 1))


def test_flatten_reads_nested_fields_and_skips_nil() -> None:
    xml = (
        '<Results xmlns="http://exacttarget.com/wsdl/partnerAPI" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xsi:type="ClickEvent"><PartnerKey xsi:nil="true"/><ObjectID xsi:nil="true"/>'
        "<SendID>42</SendID><SubscriberKey>abc</SubscriberKey><EventDate>2026-05-01T20:00:00</EventDate>"
        "<EventType>Click</EventType><List><ID>7</ID></List><URLID>3</URLID><URL>https://x.test/a?b=1&amp;c=2</URL>"
        "</Results>"
    )
    row = flatten(etree.fromstring(xml))
    assert row == {
        "SendID": "42", "SubscriberKey": "abc", "EventDate": "2026-05-01T20:00:00", "EventType": "Click",
        "List.ID": "7", "URLID": "3", "URL": "https://x.test/a?b=1&c=2",
    }
    event = event_from_row(EventType.CLICK, row)
    assert event is not None
    assert event.event_time == datetime(2026, 5, 2, 2, 0, tzinfo=UTC)
    assert (event.job_id, event.subscriber_key, event.url, event.url_id) == ("42", "abc", "https://x.test/a?b=1&c=2", "3")


def test_rows_without_key_fields_are_reported_not_dropped_silently() -> None:
    rows = [
        {"SendID": "1", "SubscriberKey": "a", "EventDate": "2026-01-01T00:00:00"},
        {"SendID": "1", "EventDate": "2026-01-01T00:00:00"},
    ]
    skipped: list = []
    events = list(events_from_rows(EventType.SENT, rows, skipped))
    assert [e.subscriber_key for e in events] == ["a"]
    assert skipped == [rows[1]]


def test_every_event_type_has_an_esp_object() -> None:
    assert set(EVENT_OBJECTS) == set(EventType)


def test_a_malformed_event_date_skips_that_row_only() -> None:
    rows = [
        {"SendID": "1", "SubscriberKey": "a", "EventDate": "yesterday-ish"},
        {"SendID": "1", "SubscriberKey": "b", "EventDate": "2026-01-01T00:00:00"},
    ]
    skipped: list = []
    assert [e.subscriber_key for e in events_from_rows(EventType.OPEN, rows, skipped)] == ["b"]
    assert skipped == [rows[0]]
