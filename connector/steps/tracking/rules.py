"""Pure rules of the tracking step: keys, counters, bounce types, response codes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, timedelta
from functools import lru_cache

from connector.crm import keys
from connector.models import BounceType, EventType, TrackingEvent

RESPONSE_CODES = {  # Dataverse campaignresponse.responsecode
    EventType.OPEN: (1, "Opened"),  # Interested
    EventType.CLICK: (1, "Clicked"),  # Interested
    EventType.BOUNCE: (4, "Bounced"),  # Error
    EventType.UNSUB: (3, "Unsubscribed"),  # Do Not Send Marketing Materials
    EventType.SENT: (1, "Sent"),
}
CHANNEL_EMAIL = 1  # campaignresponse.channeltypecode Email
RESPONDER_TYPES = frozenset({EventType.OPEN, EventType.CLICK, EventType.BOUNCE, EventType.UNSUB})
PERMANENT_CODES = frozenset({"not_found", "unsupported_table", "unaddressable_key", "0x80040217", "404", "400", "403"})
"""WriteResult codes that repeating the write will not fix (record gone, wrong table, refused)."""

COUNTER_OF_TYPE = {
    EventType.SENT: "sent",
    EventType.OPEN: "opens",
    EventType.CLICK: "clicks",
    EventType.UNSUB: "unsubscribes",
    EventType.NOT_SENT: "notsent",
}
BOUNCE_COUNTERS = {b: f"{b.value}_bounces" for b in BounceType}
ONE_TICK = timedelta(microseconds=1)
MAX_ATTEMPTS = 24
"""Runs an event's failing CRM write is retried (a day at the default hourly pull) before it
is parked in the quarantine, so one bad record cannot hold the watermark back for ever."""
MAX_RETRY_ENTRIES = 10_000
MAX_FAILED_CALLS = 3
"""CRM calls in a row that failed after their retries (a page's look-up, a slice of writes)
before the event type stops for this run: by then the CRM looks down, not unlucky."""
LOOKUP_SLICE = 100
"""Subscriber keys per CRM record look-up call (Dataverse's In filter, as the adapter asks)."""
TRANSIENT_CODE = "transient"
"""WriteResult code of records whose whole CRM call failed after its retries (not their own fault)."""
RECORD_CACHE_SIZE = 100_000
"""Subscriber-to-CRM-record answers kept for one run (about 15 MB when full)."""
SEEN_RETENTION_DAYS = 180
"""Seen-event keys (and first-open/first-click keys) older than this are pruned. Only the
overlap behind the watermark is ever re-read, so this is a wide margin; a subscriber who
first opens a send again after it would count as a unique opener a second time."""


# -- pure helpers ------------------------------------------------------------------------


def bounce_type(category: str, kind: str = "") -> BounceType:
    """Normalize Marketing Cloud's BounceCategory / BounceType to the CRM's five types."""
    text = f"{category} {kind}".lower()
    for word, result in (
        ("hard", BounceType.HARD),
        ("soft", BounceType.SOFT),
        ("block", BounceType.BLOCK),
        ("technical", BounceType.TECHNICAL),
        ("other", BounceType.TECHNICAL),
    ):
        if word in text:
            return result
    return BounceType.UNKNOWN


def seen_key(account: str, event: TrackingEvent) -> str:
    """The natural key of an event, as marked seen in the state database."""
    when = event.event_time
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    return "\x1f".join(("ev", account, event.job_id, event.subscriber_key, event.event_type.value,
                         when.isoformat(timespec="microseconds"), event.url))


def unique_key(account: str, event: TrackingEvent) -> str:
    """Key of 'this subscriber did this at least once' (unique opens and clicks)."""
    return f"uq\x1f{account}\x1f{event.job_id}\x1f{event.subscriber_key}\x1f{event.event_type.value}"


TRACKING_KEY_JOB_CHARS = 40
"""Characters of the ESP job id kept (readable) at the front of a tracking key."""


def tracking_key(event: TrackingEvent) -> str:
    """Campaign-response key: one response per recipient per kind, at most 100 characters.

    ``<job>.<event type>.<digest>`` (docs/contracts.md): only ``[a-z0-9._-]``, because
    Dataverse cannot address a record by a key holding ``:`` ``/`` ``&`` ... and matches
    keys case-insensitively; the digest of the exact job id, subscriber key and type
    keeps two recipients apart whatever their keys hold.
    """
    kind = event.event_type.value
    return f"{tracking_key_prefix(event.job_id)}{kind}.{keys.digest(event.job_id, event.subscriber_key, kind)}"


def tracking_key_from_legacy(old: str) -> str | None:
    """The current key for a pre-issue-21 key ``<job>:<subscriber key>:<type>``; None if it is not one.

    Split at the first and the last ``:`` (a subscriber key may hold ``:`` itself). An old key
    that was over 100 characters held a digest instead of the subscriber key: its result
    never matches a new event's key (docs/contracts.md, migration).
    """
    job, sep, rest = old.partition(":")
    subscriber, sep2, kind = rest.rpartition(":")
    if not (sep and sep2 and job and subscriber) or kind not in {t.value for t in EventType}:
        return None
    return f"{tracking_key_prefix(job)}{kind}.{keys.digest(job, subscriber, kind)}"


@lru_cache(maxsize=1024)
def tracking_key_prefix(job_id: str) -> str:
    """What every tracking key of one ESP job starts with (for counting a send's responses)."""
    return keys.key_part(job_id, TRACKING_KEY_JOB_CHARS) + "."


def count_events(events: Iterable[TrackingEvent]) -> dict[str, int]:
    """Counter deltas for a set of new events (unique counts are added by the caller)."""
    counts: Counter[str] = Counter()
    for event in events:
        if event.event_type is EventType.BOUNCE:
            counts[BOUNCE_COUNTERS[bounce_type(event.bounce_category, event.bounce_type)]] += 1
        else:
            counts[COUNTER_OF_TYPE[event.event_type]] += 1
    return dict(counts)


def crm_counts(totals: dict[str, int]) -> dict[str, int]:
    """What goes on the CRM send request; delivered = sent - bounces."""
    out = {name: int(totals.get(name, 0)) for name in _CRM_COUNTERS}
    bounces = sum(out[name] for name in BOUNCE_COUNTERS.values())
    out["delivered"] = max(0, out["sent"] - bounces)
    return out


_CRM_COUNTERS = (
    "sent", "opens", "unique_opens", "clicks", "unique_clicks", "unsubscribes", "notsent",
    *BOUNCE_COUNTERS.values(),
)
