"""Marketing Cloud tracking events: object names, properties, time zone, row parsing.

Marketing Cloud writes every date as US Central *Standard* Time (UTC-6 all year,
no daylight saving) and puts no offset on the wire. The connector works in
timezone-aware UTC only; this module is the one place that converts.

Retrieve replies are read with lxml rather than zeep's object builder: on a
2,500-row page lxml is many times faster (figures in docs/esp.md), and it does not
choke on properties newer than the pinned WSDL.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, Mapping

from lxml import etree

from connector.models import EventType, TrackingEvent

PARTNER_NS = "http://exacttarget.com/wsdl/partnerAPI"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"

CST = timezone(timedelta(hours=-6), "CST")
"""Marketing Cloud server time: UTC-6 all year round (no DST)."""

EVENT_OBJECTS: Mapping[EventType, str] = {
    EventType.SENT: "SentEvent",
    EventType.OPEN: "OpenEvent",
    EventType.CLICK: "ClickEvent",
    EventType.BOUNCE: "BounceEvent",
    EventType.UNSUB: "UnsubEvent",
    EventType.NOT_SENT: "NotSentEvent",
}

_COMMON = ("SendID", "SubscriberKey", "EventDate", "EventType", "BatchID", "TriggeredSendDefinitionObjectID")
EVENT_PROPERTIES: Mapping[EventType, tuple[str, ...]] = {
    EventType.SENT: _COMMON,
    EventType.OPEN: _COMMON,
    EventType.CLICK: _COMMON + ("URLID", "URL"),
    EventType.BOUNCE: _COMMON + ("SMTPCode", "BounceCategory", "SMTPReason", "BounceType"),
    EventType.UNSUB: _COMMON,
    EventType.NOT_SENT: _COMMON,
}
"""Properties asked for per event object; every one is a retrievable field of the PartnerAPI WSDL."""

_FRACTION = re.compile(r"\.(\d{7,})")


def parse_esp_datetime(text: str) -> datetime:
    """An ESP date string as aware UTC. No offset means Central Standard Time."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    # .NET writes 1 to 7 fraction digits; Python wants at most 6
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6], value, count=1)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=CST)
    return parsed.astimezone(timezone.utc)


def to_esp_datetime(value: datetime) -> datetime:
    """An aware datetime as CST, whole seconds (filters cannot carry milliseconds).

    Rounds *down*, so a ``greaterThan`` filter never skips an event; the event
    de-duplication downstream absorbs the re-read second.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the ESP adapter takes timezone-aware datetimes only")
    return value.astimezone(CST).replace(microsecond=0)


def flatten(element: etree._Element, prefix: str = "") -> dict[str, str]:
    """One reply object as {"Field": text, "Nested.Field": text}; nil and empty fields are left out."""
    row: dict[str, str] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = prefix + etree.QName(child).localname
        if len(child):
            row.update(flatten(child, name + "."))
        elif child.text is not None and child.get(XSI_NIL) != "true":
            row[name] = child.text
    return row


def event_from_row(event_type: EventType, row: Mapping[str, str]) -> TrackingEvent | None:
    """A TrackingEvent from a flattened reply row; None when a key field is missing or malformed."""
    job_id = row.get("SendID", "")
    subscriber_key = row.get("SubscriberKey", "")
    event_date = row.get("EventDate", "")
    if not (job_id and subscriber_key and event_date):
        return None
    try:
        event_time = parse_esp_datetime(event_date)
    except ValueError:
        return None  # a malformed date: reported with the skipped rows
    return TrackingEvent(
        event_type=event_type,
        job_id=job_id,
        subscriber_key=subscriber_key,
        event_time=event_time,
        batch_id=row.get("BatchID", ""),
        url=row.get("URL", ""),
        url_id=row.get("URLID", ""),
        bounce_category=row.get("BounceCategory", ""),
        bounce_type=row.get("BounceType", ""),
        smtp_code=row.get("SMTPCode", ""),
        smtp_reason=row.get("SMTPReason", ""),
    )


def events_from_rows(
    event_type: EventType, rows: Iterable[Mapping[str, str]], skipped: list[Mapping[str, str]] | None = None
) -> Iterator[TrackingEvent]:
    """Events from rows; rows without a usable SendID, SubscriberKey or EventDate go to ``skipped``."""
    for row in rows:
        event = event_from_row(event_type, row)
        if event is None:
            if skipped is not None:
                skipped.append(row)
            continue
        yield event
