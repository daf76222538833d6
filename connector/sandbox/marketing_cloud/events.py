"""Tracking events of the Marketing Cloud sandbox, stored compactly and served fast.

A started send becomes one ``EventBlock`` per event object type: parallel arrays of
epoch seconds (sorted) and indexes into the send's recipient keys, plus one small
code per row for clicks (which link) and bounces (which category). A million-recipient
send therefore costs a few arrays, not millions of objects. A Retrieve bisects each
block on the EventDate range of its filter and the simulated clock ("now"), and
renders rows straight to XML text.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import time
import uuid
from array import array
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator, Sequence
from xml.sax.saxutils import escape

from connector.sandbox.marketing_cloud.filters import Bounds, date_bounds, key_hint
from connector.sandbox.marketing_cloud.latency import TABLE_BITS, Latency, arrival_table
from connector.sandbox.marketing_cloud.wsdl import fields_of

EVENT_OBJECTS = ("SentEvent", "OpenEvent", "ClickEvent", "BounceEvent", "UnsubEvent", "NotSentEvent")
EVENT_TYPE_OF = {
    "SentEvent": "Sent", "OpenEvent": "Open", "ClickEvent": "Click", "UnsubEvent": "Unsubscribe",
    "NotSentEvent": "NotSent",
}
# BounceCategory, EventType, BounceType, SMTPCode, SMTPReason
BOUNCES = (
    ("Hard bounce", "HardBounce", "immediate", "550", "550 5.1.1 Recipient address rejected: User unknown"),
    ("Soft bounce", "SoftBounce", "delayed", "452", "452 4.2.2 Mailbox full"),
    ("Block bounce", "OtherBounce", "immediate", "554", "554 5.7.1 Message rejected as spam by content filter"),
    ("Technical/Other bounce", "OtherBounce", "delayed", "421", "421 4.4.2 Connection timed out"),
    ("Unknown bounce", "OtherBounce", "immediate", "500", "500 Unknown delivery failure"),
)
LINKS = (
    (101, "https://www.example.com/offer"),
    (102, "https://www.example.com/news?utm_source=email&utm_medium=cesp"),
    (103, "https://www.example.com/events/annual-conference"),
    (104, "https://www.example.com/unsubscribe-preferences"),
)


@dataclass(frozen=True)
class EventRates:
    """How recipients of a simulated send behave (shares between 0 and 1)."""

    hard_bounce: float = 0.01
    soft_bounce: float = 0.01
    block_bounce: float = 0.005
    technical_bounce: float = 0.003
    unknown_bounce: float = 0.002
    open: float = 0.30  # of delivered recipients
    click: float = 0.30  # of openers
    unsubscribe: float = 0.03  # of openers
    send_per_second: int = 2000  # how fast SentEvents are stamped
    open_within_hours: float = 48.0  # opens spread over this window after the send
    # how long after its EventDate an event becomes retrievable: None = the published figures
    # (the store's ``Latency.event_arrival``), 0 = at once, N = uniformly 0..N minutes
    arrival_lag_minutes: float | None = None

    def bounce_thresholds(self) -> list[float]:
        total, out = 0.0, []
        for share in (self.hard_bounce, self.soft_bounce, self.block_bounce, self.technical_bounce,
                      self.unknown_bounce):
            total += share
            out.append(total)
        return out


class EventBlock:
    """The events of one object type for one send, sorted by time."""

    __slots__ = ("obj_type", "send_id", "list_id", "keys", "ts", "idx", "code", "lag", "max_lag")

    def __init__(self, obj_type: str, send_id: int, list_id: int, keys: Sequence[str],
                 rows: list[tuple[int, int, int]]) -> None:
        rows.sort()
        self.obj_type = obj_type
        self.send_id = send_id
        self.list_id = list_id
        self.keys = keys
        self.ts = array("q", (r[0] for r in rows))
        self.idx = array("q", (r[1] for r in rows))
        self.code = array("b", (r[2] for r in rows))
        self.lag: array | None = None
        self.max_lag = 0

    def with_arrival_lag(self, max_seconds: int, seed: int, latency: Latency | None = None) -> "EventBlock":
        """Give each event a random delay between its EventDate and its arrival.

        Uniform in 0..max_seconds, or drawn from ``latency.event_arrival`` (the published
        figures) when a ``Latency`` is given. The real service makes events retrievable
        some time after their EventDate; a reader that trusts "nothing older than my last
        EventDate can still come" misses them.
        """
        if latency is not None:
            max_seconds = latency.max_event_lag
        max_seconds = max(0, min(int(max_seconds), 65_535))
        if max_seconds and len(self.ts):
            rng = random.Random(seed * 7919 + self.send_id * 31 + EVENT_OBJECTS.index(self.obj_type))
            if latency is not None:
                table, bits = arrival_table(latency), rng.getrandbits
                self.lag = array("H", (table[bits(TABLE_BITS)] for _ in range(len(self.ts))))
            else:
                self.lag = array("H", (int(rng.random() * (max_seconds + 1)) for _ in range(len(self.ts))))
            self.max_lag = max_seconds
        return self

    def arrived(self, i: int, now_ts: float) -> bool:
        return self.lag is None or self.ts[i] + self.lag[i] <= now_ts

    @classmethod
    def from_arrays(cls, obj_type: str, send_id: int, list_id: int, keys: Sequence[str],
                    ts: array, idx: array, code: array) -> "EventBlock":
        block = cls.__new__(cls)
        block.obj_type, block.send_id, block.list_id, block.keys = obj_type, send_id, list_id, keys
        block.ts, block.idx, block.code = ts, idx, code
        block.lag, block.max_lag = None, 0
        return block

    def __len__(self) -> int:
        return len(self.ts)

    def visible(self, now_ts: float) -> int:
        """How many events have arrived by ``now_ts``."""
        hi = bisect.bisect_right(self.ts, now_ts)
        if self.lag is None:
            return hi
        sure = bisect.bisect_right(self.ts, now_ts - self.max_lag)
        return sure + sum(1 for i in range(sure, hi) if self.ts[i] + self.lag[i] <= now_ts)

    def arrived_indexes(self, now_ts: float) -> Iterator[int]:
        """Indexes of the events that have arrived by ``now_ts``."""
        hi = bisect.bisect_right(self.ts, now_ts)
        if self.lag is None:
            return iter(range(hi))
        return (i for i in range(hi) if self.ts[i] + self.lag[i] <= now_ts)

    def span(self, bounds: Bounds, now_ts: float) -> tuple[int, int]:
        """Index range of the rows whose second lies inside the bounds and not after ``now_ts``.

        Event times carry milliseconds (``millis``) on top of the stored whole seconds, so
        rows in a boundary second may still fall outside: ``edges`` and ``inside`` tell.
        """
        lo = 0 if bounds.lo is None else bisect.bisect_left(self.ts, math.floor(bounds.lo))
        hi = bisect.bisect_right(self.ts, math.floor(now_ts))
        if bounds.hi is not None:
            hi = min(hi, bisect.bisect_right(self.ts, math.floor(bounds.hi)))
        return lo, max(lo, hi)

    def indexes(self, bounds: Bounds, now_ts: float) -> Iterator[int]:
        """Indexes of the rows inside the bounds and not after ``now_ts``, at the millisecond.

        Only the rows in the boundary seconds at either end of ``span`` are checked one by one.
        """
        lo, hi = self.span(bounds, now_ts)
        inner_lo = lo if bounds.lo is None else bisect.bisect_right(self.ts, math.floor(bounds.lo), lo, hi)
        top = math.floor(now_ts) if bounds.hi is None else min(math.floor(now_ts), math.floor(bounds.hi))
        inner_hi = bisect.bisect_left(self.ts, top, lo, hi)
        if inner_lo >= inner_hi:
            return (i for i in range(lo, hi) if self.inside(i, bounds, now_ts))
        return itertools.chain((i for i in range(lo, inner_lo) if self.inside(i, bounds, now_ts)),
                               range(inner_lo, inner_hi),
                               (i for i in range(inner_hi, hi) if self.inside(i, bounds, now_ts)))

    def inside(self, i: int, bounds: Bounds, now_ts: float) -> bool:
        """Whether row ``i``, at its exact millisecond, lies inside the bounds and not after ``now_ts``."""
        t = self.ts[i] + millis(self, i) / 1000
        if t > now_ts:
            return False
        if bounds.lo is not None and (t < bounds.lo or (t == bounds.lo and not bounds.lo_incl)):
            return False
        return bounds.hi is None or t < bounds.hi or (t == bounds.hi and bounds.hi_incl)

    def row(self, i: int) -> dict:
        """The row as filterable values (used only for filters beyond the date range)."""
        when = datetime.fromtimestamp(self.ts[i] + millis(self, i) / 1000, timezone.utc)
        row = {
            "SendID": self.send_id, "SubscriberKey": self.keys[self.idx[i]], "BatchID": batch_id(self, i),
            "EventDate": when, "CreatedDate": when,
            "EventType": event_type_of(self.obj_type, self.code[i]), "TriggeredSendDefinitionObjectID": None,
            "ListID": self.list_id,
        }
        if self.obj_type == "ClickEvent":
            row["URLID"], row["URL"] = LINKS[self.code[i]]
            row["URLIDLong"] = row["URLID"]
        elif self.obj_type == "BounceEvent":
            cat, _et, btype, code, reason = BOUNCES[self.code[i]]
            row.update(BounceCategory=cat, BounceType=btype, SMTPCode=code, SMTPReason=reason)
        elif self.obj_type == "UnsubEvent":
            row["IsMasterUnsubscribed"] = False
        return row


def event_type_of(obj_type: str, code: int) -> str:
    if obj_type == "BounceEvent":
        return BOUNCES[code][1]
    return EVENT_TYPE_OF[obj_type]


BATCH_RECIPIENTS = 2500
"""Recipients per send batch: a recipient's sent, open and click events share one BatchID."""


def millis(block: "EventBlock", i: int) -> int:
    """The event's milliseconds (0..999), fixed per event: real EventDates carry them ("10:02:01.987")."""
    return (block.send_id * 7919 + block.idx[i] * 104_729 + len(block.obj_type) * 31) % 1000


def batch_id(block: "EventBlock", i: int) -> int:
    return 1 + block.idx[i] // BATCH_RECIPIENTS


# ------------------------------------------------------------------ rendering

_date_cache: dict[int, str] = {}


def _date(ts: int) -> str:
    text = _date_cache.get(ts)
    if text is None:
        if len(_date_cache) > 200_000:
            _date_cache.clear()
        tm = time.gmtime(ts - 21600)
        text = _date_cache[ts] = "%04d-%02d-%02dT%02d:%02d:%02d" % tm[:6]
    return text


def _fraction(ms: int) -> str:
    """Milliseconds as .NET writes them: trailing zeros dropped, none at all for a whole second."""
    return f".{ms:03d}".rstrip("0").rstrip(".")


_FRACTIONS = tuple(_fraction(ms) for ms in range(1000))


Getter = Callable[[EventBlock, int], "str | None"]

_GETTERS: dict[str, Getter] = {
    "SendID": lambda b, i: str(b.send_id),
    "SubscriberKey": lambda b, i: escape(b.keys[b.idx[i]]),
    "EventDate": lambda b, i: _date(b.ts[i]) + _FRACTIONS[millis(b, i)],
    "CreatedDate": lambda b, i: _date(b.ts[i]) + _FRACTIONS[millis(b, i)],
    "EventType": lambda b, i: event_type_of(b.obj_type, b.code[i]),
    "BatchID": lambda b, i: str(batch_id(b, i)),
    "URLID": lambda b, i: str(LINKS[b.code[i]][0]),
    "URLIDLong": lambda b, i: str(LINKS[b.code[i]][0]),
    "URL": lambda b, i: escape(LINKS[b.code[i]][1]),
    "BounceCategory": lambda b, i: escape(BOUNCES[b.code[i]][0]),
    "BounceType": lambda b, i: BOUNCES[b.code[i]][2],
    "SMTPCode": lambda b, i: BOUNCES[b.code[i]][3],
    "SMTPReason": lambda b, i: escape(BOUNCES[b.code[i]][4]),
    "IsMasterUnsubscribed": lambda b, i: "false",
    # ListID is outside the WSDL, yet the real service returns it (strict clients choke on it)
    "ListID": lambda b, i: str(b.list_id),
}


def row_renderer(obj_type: str, properties: Sequence[str]) -> Callable[[EventBlock, int], str]:
    """A function rendering one event row as a <Results> element with the requested properties."""
    wanted = set(properties)
    steps: list[tuple[str, object]] = []
    for f in fields_of(obj_type):
        name = f[0]
        if name in ("PartnerKey", "ObjectID"):
            steps.append((f'<{name} xsi:nil="true" />', None))
        elif name in wanted and name == "List":
            steps.append(("List", None))
        elif name in wanted and name in _GETTERS:
            steps.append((name, _GETTERS[name]))
    if "ListID" in wanted:  # answered by the real service although the WSDL lacks it (see docs)
        steps.append(("ListID", _GETTERS["ListID"]))
    head = f'<Results xsi:type="{obj_type}">'

    def render(block: EventBlock, i: int) -> str:
        out = [head]
        for name, getter in steps:
            if getter is None:
                if name == "List":
                    out.append(f'<List><PartnerKey xsi:nil="true" /><ID>{block.list_id}</ID>'
                               '<ObjectID xsi:nil="true" /></List>')
                else:
                    out.append(name)
                continue
            value = getter(block, i)  # type: ignore[operator]
            if value is not None:
                out.append(f"<{name}>{value}</{name}>")
        out.append("</Results>")
        return "".join(out)

    return render


def iter_event_rows(blocks: Sequence[EventBlock], obj_type: str, filter_part: object, predicate: Callable[[dict], bool],
                    properties: Sequence[str], now_ts: float) -> Iterator[str]:
    """Rendered rows of every visible event of ``obj_type`` matching the filter."""
    bounds = date_bounds(filter_part)
    render = row_renderer(obj_type, properties)
    send_ids = _send_ids(filter_part)
    for block in blocks:
        if block.obj_type != obj_type or (send_ids is not None and block.send_id not in send_ids):
            continue
        if bounds.exact and block.lag is None:
            for i in block.indexes(bounds, now_ts):
                yield render(block, i)
        else:
            for i in block.indexes(bounds, now_ts):
                if block.arrived(i, now_ts) and (bounds.exact or predicate(block.row(i))):
                    yield render(block, i)


def _send_ids(filter_part: object) -> set[int] | None:
    """The SendIDs a filter pins down (equals / IN inside ANDs), to skip other sends' blocks."""
    values = key_hint(filter_part, "SendID")
    if values is None:
        return None
    out = set()
    for value in values:
        try:
            out.add(int(value))
        except ValueError:
            pass
    return out


# ------------------------------------------------------------------ simulation

@dataclass
class SimulatedSend:
    blocks: list[EventBlock]
    status_changes: list[tuple[int, str, str]]  # (epoch, subscriber key, new status)
    counts: dict[str, int]


def simulate_send(send_id: int, list_id: int, recipients: Sequence[str], excluded: Sequence[str],
                  start_ts: int, rates: EventRates, seed: int, latency: Latency | None = None) -> SimulatedSend:
    """Events for one send: a SentEvent per recipient, then bounces, opens, clicks, unsubscribes.

    Each event arrives after its EventDate as ``rates.arrival_lag_minutes`` says, or by
    ``latency.event_arrival`` when that is None.
    """
    rng = random.Random(seed * 1_000_003 + send_id)
    thresholds = rates.bounce_thresholds()
    per_second = max(1, rates.send_per_second)
    window = max(60, int(rates.open_within_hours * 3600))
    n = len(recipients)
    sent_ts = array("q", (start_ts + i // per_second for i in range(n)))
    opens: list[tuple[int, int, int]] = []
    clicks: list[tuple[int, int, int]] = []
    bounces: list[tuple[int, int, int]] = []
    unsubs: list[tuple[int, int, int]] = []
    changes: list[tuple[int, str, str]] = []
    rnd = rng.random
    for i in range(n):
        ts = sent_ts[i]
        r = rnd()
        if r < thresholds[-1]:
            category = next(c for c, limit in enumerate(thresholds) if r < limit)
            bounced = ts + 1 + int(rnd() * 600)
            bounces.append((bounced, i, category))
            changes.append((bounced, recipients[i], "Bounced"))
            continue
        if rnd() >= rates.open:
            continue
        opened = ts + 30 + int(rnd() * rnd() * window)
        opens.append((opened, i, 0))
        if rnd() < rates.click:
            clicks.append((opened + 5 + int(rnd() * 900), i, int(rnd() * len(LINKS))))
        if rnd() < rates.unsubscribe:
            when = opened + 10 + int(rnd() * 600)
            unsubs.append((when, i, 0))
            changes.append((when, recipients[i], "Unsubscribed"))
    keys = list(recipients)
    blocks = [
        EventBlock.from_arrays("SentEvent", send_id, list_id, keys, sent_ts, array("q", range(n)), array("b", bytes(n))),
        EventBlock("BounceEvent", send_id, list_id, keys, bounces),
        EventBlock("OpenEvent", send_id, list_id, keys, opens),
        EventBlock("ClickEvent", send_id, list_id, keys, clicks),
        EventBlock("UnsubEvent", send_id, list_id, keys, unsubs),
    ]
    if excluded:
        blocks.append(EventBlock("NotSentEvent", send_id, list_id, list(excluded),
                                 [(start_ts, i, 0) for i in range(len(excluded))]))
    for block in blocks:
        if rates.arrival_lag_minutes is None:
            block.with_arrival_lag(0, seed, latency or Latency())
        else:
            block.with_arrival_lag(int(rates.arrival_lag_minutes * 60), seed)
    return SimulatedSend(blocks, changes, {"NumberTargeted": len(recipients) + len(excluded)})


def synthetic_keys(n: int, seed: int) -> list[str]:
    """``n`` deterministic GUID-shaped subscriber keys (CRM record ids look like these)."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def synthetic_blocks(send_id: int, list_id: int, n: int, event_objects: Sequence[str], start_ts: int,
                     seconds: int, seed: int, lag_seconds: int = 0, latency: Latency | None = None) -> list[EventBlock]:
    """``n`` events of each object type spread evenly over ``seconds`` from ``start_ts`` (benchmarks)."""
    keys = synthetic_keys(n, seed)
    span = max(1, seconds)
    blocks = []
    for obj_type in event_objects:
        if obj_type not in EVENT_OBJECTS:
            raise ValueError(f"unknown event object type {obj_type!r}; use one of {', '.join(EVENT_OBJECTS)}")
        ts = array("q", (start_ts + (i * span) // n for i in range(n)))
        idx = array("q", range(n))
        modulo = len(LINKS) if obj_type == "ClickEvent" else len(BOUNCES) if obj_type == "BounceEvent" else 1
        code = array("b", (i % modulo for i in range(n)))
        block = EventBlock.from_arrays(obj_type, send_id, list_id, keys, ts, idx, code)
        blocks.append(block.with_arrival_lag(lag_seconds, seed, latency))
    return blocks
