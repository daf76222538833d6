"""The tracking step against in-process ESP/CRM doubles, a real state DB and staging table.

The doubles (``tests.doubles``: FakeEsp, FakeCrm) are kept because test_esp_contract and
test_crm_contract run over them as over the real adapters against the sandboxes; the tests
here need their knobs (page size, shuffled pages, per-key CRM failures, 429 storms, counted
calls) and their speed. See docs/architecture.md, "Test doubles".

Each invariant test names the mechanism it proves; removing the mechanism fails it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from connector.models import BounceType
from connector.models import EventType as E
from connector.steps.tracking import (
    bounce_type,
    crm_counts,
    run_tracking,
    tracking_key,
    with_lookahead,
)
from tests.fixtures.tracking import CAMPAIGN, JOB, REQUEST, T0, contact_id, make_event, response_key


def track(ctx, job: str = JOB, request: str = REQUEST, campaign: str = CAMPAIGN) -> None:
    ctx.state.add_tracked_send("default", job, request, campaign, "Spring")


def counts(ctx, job: str = JOB) -> dict:
    return ctx.state.send_counts(job)


# -- pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "category,kind,expected",
    [
        ("Hard bounce", "immediate", BounceType.HARD),
        ("Soft bounce", "delayed", BounceType.SOFT),
        ("Block bounce", "", BounceType.BLOCK),
        ("Technical/Other bounce", "", BounceType.TECHNICAL),
        ("", "OtherBounce", BounceType.TECHNICAL),
        ("Unknown bounce", "", BounceType.UNKNOWN),
        ("", "", BounceType.UNKNOWN),
    ],
)
def test_bounce_type_mapping(category: str, kind: str, expected: BounceType) -> None:
    assert bounce_type(category, kind) is expected


def test_delivered_is_sent_minus_bounces() -> None:
    out = crm_counts({"sent": 10, "hard_bounces": 2, "soft_bounces": 1, "opens": 4})
    assert out["delivered"] == 7 and out["opens"] == 4 and out["unique_clicks"] == 0


def test_tracking_key_is_addressable_short_and_one_per_recipient_and_kind() -> None:
    from dataclasses import replace

    from connector.crm.keys import addressable
    from connector.steps.tracking.rules import tracking_key_prefix

    ev = make_event(E.OPEN, 1, T0)
    assert tracking_key(ev) == tracking_key(make_event(E.OPEN, 1, T0 + timedelta(hours=3)))  # stable
    assert tracking_key(ev).startswith(tracking_key_prefix(JOB) + "open.")
    odd = ["x" * 250 + "@example.test", "a<b>c*d%e&f:g/h\\i+j?k#l@example.test", "Ann@Example.test",
           "ann@example.test", "ann@example.test ", "späti@例え.jp", contact_id(1)]
    seen = set()
    for key in odd:
        for kind in (E.OPEN, E.CLICK, E.BOUNCE, E.UNSUB, E.SENT):
            for job in (JOB, "job:7/x", "JOB:7/X"):
                tk = tracking_key(replace(ev, subscriber_key=key, event_type=kind, job_id=job))
                assert len(tk) <= 100 and addressable(tk) and tk == tk.lower(), tk
                seen.add(tk)
    # case-insensitive key matching in Dataverse: keys differing only in case stay apart
    assert len(seen) == len(odd) * 5 * 3


def test_old_form_tracking_keys_map_to_the_new_form() -> None:
    from dataclasses import replace

    from connector.steps.tracking.rules import tracking_key_from_legacy

    ev = replace(make_event(E.CLICK, 1, T0), subscriber_key="urn:crm:ann@example.test")
    assert tracking_key_from_legacy(f"{JOB}:urn:crm:ann@example.test:click") == tracking_key(ev)
    assert tracking_key_from_legacy(tracking_key(ev)) is None
    assert tracking_key_from_legacy(f"{JOB}:someone:opened") is None


def test_lookahead_marks_the_last_item() -> None:
    assert list(with_lookahead([])) == []
    assert list(with_lookahead([1, 2, 3])) == [(1, False), (2, False), (3, True)]


# -- modes ---------------------------------------------------------------------------------


def test_mode_none_pulls_nothing(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="none")
    track(ctx)
    esp.add(make_event(E.OPEN, 1, T0))
    assert run_tracking(ctx).ok
    assert esp.calls == [] and crm.responses == {} and crm.updates == []


def test_mode_aggregate_reads_the_send_counters_and_pulls_only_bounces_and_unsubscribes(tracking_env) -> None:
    """Mechanism: aggregate mode takes sent/delivered/unique opens and clicks/not-sent from one
    send_summary per send, and pulls only the events whose record effects are owed."""
    from connector.models import EspSend

    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="aggregate", event_types=("sent", "open", "click", "bounce", "unsub", "notsent"))
    track(ctx)
    esp.add(*(make_event(E.SENT, i, T0) for i in range(5)))
    esp.add(make_event(E.OPEN, 1, T0 + timedelta(minutes=1)), make_event(E.OPEN, 2, T0 + timedelta(minutes=3)))
    esp.add(make_event(E.BOUNCE, 3, T0 + timedelta(minutes=2), bounce_category="Block bounce"))
    esp.add(make_event(E.UNSUB, 2, T0 + timedelta(minutes=4)))
    esp.summaries[JOB] = EspSend("", JOB, "Complete", counts={
        "sent": 5, "delivered": 4, "unique_opens": 2, "unique_clicks": 1, "excluded": 1, "hard_bounces": 0,
        "other_bounces": 1, "unsubscribes": 1})
    outcome = run_tracking(ctx)
    assert outcome.ok and outcome.processed == 2  # the bounce and the unsubscribe
    assert {etype for etype, _since in esp.calls} == {E.BOUNCE, E.UNSUB}
    assert esp.summary_calls == [JOB]
    assert crm.responses == {} and ctx.staging().count() == 0
    assert crm.opt_outs == {contact_id(2)} and crm.bounces[contact_id(3)].bounce_type is BounceType.BLOCK
    (request_id, update), = crm.updates
    assert request_id == REQUEST
    assert update.counts == {"sent": 5, "delivered": 4, "unique_opens": 2, "unique_clicks": 1, "notsent": 1,
                             "unsubscribes": 1, "hard_bounces": 0, "soft_bounces": 0, "block_bounces": 1,
                             "technical_bounces": 0, "unknown_bounces": 0}
    assert "opens" not in update.counts  # the Send has no total opens: not written, not guessed
    run_tracking(ctx)
    assert len(crm.updates) == 1  # unchanged counters are not written again
    esp.summaries[JOB] = EspSend("", JOB, "Complete", counts={"sent": 5, "delivered": 4, "unique_opens": 3})
    run_tracking(ctx)
    assert len(crm.updates) == 2 and crm.updates[-1][1].counts["unique_opens"] == 3


def test_mode_aggregate_before_the_send_is_retrievable_writes_what_the_events_say(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="aggregate", event_types=("unsub",))
    track(ctx)
    esp.add(make_event(E.UNSUB, 2, T0))
    assert run_tracking(ctx).ok  # no summary: the ESP does not show the send yet
    (_request_id, update), = crm.updates
    assert update.counts["unsubscribes"] == 1 and "sent" not in update.counts


def test_mode_responders_one_response_per_recipient_and_kind(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("sent", "open", "click"), responses_closed=True)
    track(ctx)
    esp.add(*(make_event(E.SENT, i, T0) for i in range(3)))
    esp.add(make_event(E.OPEN, 1, T0 + timedelta(minutes=1)), make_event(E.OPEN, 1, T0 + timedelta(minutes=9)))
    esp.add(make_event(E.CLICK, 1, T0 + timedelta(minutes=2), url="https://a.test/"))
    assert run_tracking(ctx).ok
    assert sorted(crm.responses) == [response_key(1, E.CLICK), response_key(1, E.OPEN)]
    opened = crm.responses[response_key(1, E.OPEN)]
    assert opened.campaign_id == CAMPAIGN and opened.closed and opened.channel_code == 1
    assert opened.received_on == T0 + timedelta(minutes=1)  # the first open
    assert opened.subject == "Opened: Spring" and opened.customer.id == contact_id(1)
    assert ctx.staging().count() == 0


def test_mode_all_adds_sent_responses_and_staging(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("sent", "open", "notsent"))
    track(ctx)
    esp.add(*(make_event(E.SENT, i, T0) for i in range(3)))
    esp.add(make_event(E.OPEN, 1, T0 + timedelta(minutes=1)))
    esp.add(make_event(E.NOT_SENT, 9, T0, reason="held"))
    assert run_tracking(ctx).ok
    assert len([k for k in crm.responses if ".sent." in k]) == 3
    assert len(crm.responses) == 4  # no response for not-sent
    rows = ctx.staging().rows()
    assert len(rows) == 5
    assert {r["crm_table"] for r in rows} == {"contact"}
    assert counts(ctx)["notsent"] == 1


def test_default_campaign_when_the_send_has_none(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("open",), default_campaign="dddddddd-0000-4000-8000-000000000001")
    track(ctx, campaign="")
    esp.add(make_event(E.OPEN, 1, T0))
    run_tracking(ctx)
    assert [r.campaign_id for r in crm.responses.values()] == ["dddddddd-0000-4000-8000-000000000001"]


def test_bounces_set_details_and_never_opt_out(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="aggregate", event_types=("bounce",))
    track(ctx)
    esp.add(make_event(E.BOUNCE, 1, T0, bounce_category="Soft bounce"),
            make_event(E.BOUNCE, 1, T0 + timedelta(hours=1), bounce_category="Hard bounce", smtp_code="550"),
            make_event(E.BOUNCE, 2, T0, bounce_category="Block bounce"))
    assert run_tracking(ctx).ok
    assert crm.bounces[contact_id(1)].bounce_type is BounceType.HARD  # the latest one
    assert crm.bounces[contact_id(1)].bounced_on == T0 + timedelta(hours=1)
    assert crm.bounces[contact_id(2)].bounce_type is BounceType.BLOCK
    assert crm.opt_outs == set()
    assert counts(ctx) == {"hard_bounces": 1, "soft_bounces": 1, "block_bounces": 1}


def test_the_newest_bounce_wins_in_any_order_and_a_failed_write_retries_all_its_events(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="aggregate", event_types=("bounce",))
    track(ctx)
    esp.add(make_event(E.BOUNCE, 1, T0 + timedelta(hours=1), bounce_category="Hard bounce"),
            make_event(E.BOUNCE, 1, T0, bounce_category="Soft bounce"),
            make_event(E.BOUNCE, 2, T0, bounce_category="Soft bounce", smtp_code="421"),
            make_event(E.BOUNCE, 2, T0 + timedelta(minutes=5), bounce_category="Soft bounce", smtp_code="452"))
    crm.fail_keys.add(contact_id(2))
    outcome = run_tracking(ctx)
    assert crm.bounces[contact_id(1)].bounce_type is BounceType.HARD  # the newer one, though listed first
    assert crm.bounces[contact_id(1)].bounced_on == T0 + timedelta(hours=1)
    assert outcome.details["retry_later"] == 2  # both events of the record whose write failed
    crm.fail_keys.clear()
    run_tracking(ctx)
    assert crm.bounces[contact_id(2)].bounced_on == T0 + timedelta(minutes=5)


def test_unsubscribes_set_opt_out(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("unsub",))
    track(ctx)
    esp.add(make_event(E.UNSUB, 3, T0, reason="unsubscribed from email"))
    assert run_tracking(ctx).ok
    assert crm.opt_outs == {contact_id(3)}
    assert crm.responses[response_key(3, E.UNSUB)].response_code == 3
    assert counts(ctx) == {"unsubscribes": 1}


def test_only_connector_sends(tracking_env) -> None:
    make_ctx, esp, _crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("open",))
    track(ctx)
    esp.add(make_event(E.OPEN, 1, T0), make_event(E.OPEN, 2, T0, job="9999"))
    run_tracking(ctx)
    assert ctx.staging().count() == 1


def test_all_sends_when_configured(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("open",), only_connector_sends=False, default_campaign=CAMPAIGN)
    esp.add(make_event(E.OPEN, 1, T0), make_event(E.OPEN, 2, T0, job="9999"))
    run_tracking(ctx)
    assert ctx.staging().count() == 2 and len(crm.responses) == 2
    assert counts(ctx, "9999") == {}  # no send request to count on


def test_deleted_send_request_stops_tracking_with_one_warning(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("sent", "open"))
    track(ctx, request="deadbeef-0000-4000-8000-000000000000")
    esp.add(make_event(E.SENT, 1, T0), make_event(E.OPEN, 1, T0 + timedelta(minutes=1)))
    outcome = run_tracking(ctx)
    assert outcome.ok
    assert ctx.state.tracked_sends("default") == []
    stopped = ctx.state.tracked_sends("default", active_only=False)[0]
    assert "deleted" in stopped.stopped_reason
    assert crm.responses == {} and crm.updates == []
    esp.calls.clear()
    run_tracking(ctx)
    assert esp.calls == []  # nothing left to track: no more calls, no error storm


# -- invariants ----------------------------------------------------------------------------


def test_events_delivered_twice_land_once(tracking_env) -> None:
    """Mechanism: seen-event keys in the state DB (+ staging's unique key)."""
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("open",))
    track(ctx)
    ev = make_event(E.OPEN, 1, T0)
    esp.add(ev, ev)  # the ESP repeats an event within one read
    run_tracking(ctx)
    esp.add(ev)  # ... and again in the overlap of the next read
    run_tracking(ctx)
    assert counts(ctx) == {"opens": 1, "unique_opens": 1}
    assert ctx.staging().count() == 1
    assert crm.response_attempts[response_key(1, E.OPEN)] == 1  # re-reads do not even re-send


def test_event_at_the_exact_window_edge(tracking_env) -> None:
    """Mechanism: since = watermark - overlap; an event AT the watermark is re-read, kept once."""
    make_ctx, esp, _crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("open",), overlap_minutes=0)
    track(ctx)
    esp.add(make_event(E.OPEN, 1, T0))
    run_tracking(ctx)
    assert ctx.state.get_watermark("default", "open") == T0
    esp.add(make_event(E.OPEN, 2, T0))  # arrives later, stamped exactly at the watermark
    esp.add(make_event(E.OPEN, 3, T0 + timedelta(microseconds=1)))
    run_tracking(ctx)
    # with zero overlap the ESP filter is EventDate > watermark: the edge event is lost ...
    assert ctx.staging().count() == 2
    ctx2 = make_ctx(mode="all", event_types=("open",), overlap_minutes=1)
    run_tracking(ctx2)
    # ... and any overlap brings it back, exactly once
    assert ctx2.staging().count() == 3
    assert counts(ctx2) == {"opens": 3, "unique_opens": 3}


def test_two_clicks_same_second_on_different_links(tracking_env) -> None:
    """Mechanism: the URL is part of the natural key."""
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("click",))
    track(ctx)
    esp.add(make_event(E.CLICK, 1, T0, url="https://a.test/x"), make_event(E.CLICK, 1, T0, url="https://a.test/y"))
    run_tracking(ctx)
    run_tracking(ctx)
    assert ctx.staging().count() == 2
    assert counts(ctx) == {"clicks": 2, "unique_clicks": 1}
    assert len(crm.responses) == 1


def test_events_hours_late_within_the_overlap(tracking_env) -> None:
    """Mechanism: the overlap re-reads behind the watermark (default 120 minutes)."""
    make_ctx, esp, _crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("open",), overlap_minutes=180)
    track(ctx)
    esp.add(make_event(E.OPEN, 1, T0 + timedelta(hours=5)))
    run_tracking(ctx)
    esp.add(make_event(E.OPEN, 2, T0 + timedelta(hours=3)))  # stamped 2 h before the watermark
    run_tracking(ctx)
    assert ctx.staging().count() == 2
    assert esp.calls[-1][1] == T0 + timedelta(hours=2)


def test_unordered_pages_do_not_skip_events_when_a_run_stops(tracking_env) -> None:
    """Mechanism: the watermark moves only after the last page (pages are not in EventDate order)."""
    make_ctx, esp, _crm = tracking_env
    esp.shuffle = True
    esp.page_size = 3
    ctx = make_ctx(mode="all", event_types=("open",), overlap_minutes=0)
    track(ctx)
    esp.add(*(make_event(E.OPEN, i, T0 + timedelta(hours=i)) for i in range(12)))
    pages = esp.iter_event_pages

    def stop_after_first(*a, **kw):
        for n, page in enumerate(pages(*a, **kw)):
            if n == 1:
                ctx.stopping.set()
            yield page

    esp.iter_event_pages = stop_after_first
    run_tracking(ctx)
    assert ctx.state.get_watermark("default", "open") is None
    esp.iter_event_pages = pages
    ctx.stopping.clear()
    run_tracking(ctx)
    assert ctx.staging().count() == 12
    assert counts(ctx)["opens"] == 12


def test_crm_batch_partial_failure_is_retried_next_run(tracking_env) -> None:
    """Mechanism: failed events stay unseen and hold the watermark below them."""
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("open",), overlap_minutes=0)
    track(ctx)
    esp.add(*(make_event(E.OPEN, i, T0 + timedelta(minutes=i)) for i in range(10)))
    bad = response_key(3, E.OPEN)
    crm.fail_keys.add(bad)
    outcome = run_tracking(ctx)
    assert outcome.details["retry_later"] == 1
    assert len(crm.responses) == 9 and counts(ctx)["opens"] == 9
    assert ctx.state.get_watermark("default", "open") < T0 + timedelta(minutes=3)
    crm.fail_keys.clear()
    run_tracking(ctx)
    assert len(crm.responses) == 10
    assert counts(ctx) == {"opens": 10, "unique_opens": 10}
    assert ctx.state.get_watermark("default", "open") == T0 + timedelta(minutes=9)
    assert max(crm.response_attempts.values()) == 1


def test_permanent_crm_failure_is_quarantined_not_retried_forever(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="aggregate", event_types=("unsub",), overlap_minutes=0)
    track(ctx)
    esp.add(make_event(E.UNSUB, 1, T0), make_event(E.UNSUB, 2, T0 + timedelta(minutes=1)))
    crm.gone_keys.add(contact_id(1))
    outcome = run_tracking(ctx)
    assert outcome.details["given_up"] == 1
    assert ctx.state.get_watermark("default", "unsub") == T0 + timedelta(minutes=1)
    parked = ctx.state.quarantined(REQUEST)
    assert [q.record_id for q in parked] == [contact_id(1)]


def test_429_storm_leaves_the_page_for_the_next_run(tracking_env) -> None:
    """Mechanism: a CRM error before the state transaction leaves the page unseen."""
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("open", "click"))
    track(ctx)
    esp.add(*(make_event(E.OPEN, i, T0 + timedelta(minutes=i)) for i in range(12)))
    esp.add(make_event(E.CLICK, 1, T0, url="https://a.test/"))
    crm.throttle_calls = 2  # the open pull fails at its first page, the click pull too
    outcome = run_tracking(ctx)
    assert not outcome.ok and "open" in outcome.message
    assert ctx.state.get_watermark("default", "open") < T0  # held below the page left for the next run
    run_tracking(ctx)
    assert ctx.staging().count() == 13
    assert counts(ctx)["opens"] == 12 and counts(ctx)["clicks"] == 1
    assert max(crm.response_attempts.values()) == 1  # nothing reached the CRM twice


def test_lease_held_elsewhere_skips_the_type(tracking_env) -> None:
    make_ctx, esp, _crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("open",))
    track(ctx)
    from connector.state.store import StateStore

    other = StateStore(ctx.state.url, holder="other", clock=ctx.state.clock)
    try:
        assert other.acquire_lease("tracking:default:open", 600)
        esp.add(make_event(E.OPEN, 1, T0))
        run_tracking(ctx)
        assert esp.calls == []
    finally:
        other.close()



def test_a_write_failing_run_after_run_is_parked_after_max_attempts(tracking_env, monkeypatch) -> None:
    """Mechanism: per-event attempt counts in the state DB; the watermark is not held for ever."""
    from connector.steps.tracking import rules

    monkeypatch.setattr(rules, "MAX_ATTEMPTS", 3)
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("open",), overlap_minutes=0)
    track(ctx)
    esp.add(make_event(E.OPEN, 1, T0), make_event(E.OPEN, 2, T0 + timedelta(minutes=5)))
    crm.fail_keys.add(response_key(1, E.OPEN))
    assert run_tracking(ctx).details["retry_later"] == 1
    assert run_tracking(ctx).details["retry_later"] == 1
    assert ctx.state.get_watermark("default", "open") < T0
    third = run_tracking(ctx)
    assert third.details["given_up"] == 1 and third.details["retry_later"] == 0
    assert ctx.state.get_watermark("default", "open") == T0 + timedelta(minutes=5)
    assert [q.record_id for q in ctx.state.quarantined(REQUEST)] == [contact_id(1)]
    assert counts(ctx)["opens"] == 2


def test_counts_not_written_are_written_by_the_next_run(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("open",))
    track(ctx)
    esp.add(make_event(E.OPEN, 1, T0))
    crm.fail_updates = 1
    first = run_tracking(ctx)
    assert not first.ok and crm.updates == []
    second = run_tracking(ctx)  # no new event, but the counts are still owed to CRM
    assert second.ok
    (_request_id, update), = crm.updates
    assert update.counts["opens"] == 1
    run_tracking(ctx)
    assert len(crm.updates) == 1  # and only once


def test_a_stale_watermark_does_not_reread_months_of_other_sends(tracking_env) -> None:
    make_ctx, esp, _crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("open",), initial_lookback_days=3)
    ctx.state.set_watermark("default", "open", T0 - timedelta(days=200))
    track(ctx)  # recorded "now" (the state clock: T0 + 1 day)
    run_tracking(ctx)
    assert esp.calls[-1][1] == T0 + timedelta(days=1) - timedelta(days=3)


def test_record_cache_asks_crm_once_per_subscriber_and_stays_bounded() -> None:
    from connector.models import CrmTable, RecordRef
    from connector.steps.tracking.effects import RecordCache

    asked: list[list[str]] = []

    def find(ids):
        asked.append(list(ids))
        return {i: RecordRef(CrmTable.CONTACT, i) for i in ids if i != "nobody"}

    cache = RecordCache(limit=3)
    assert set(cache.lookup({"a", "b", "nobody"}, find)) == {"a", "b"}
    assert set(cache.lookup({"a", "nobody"}, find)) == {"a"}
    assert asked == [["a", "b", "nobody"]]  # unknown subscribers are remembered too
    cache.lookup({"c", "d"}, find)
    assert len(cache._refs) <= 3
    assert set(cache.lookup({"d"}, find)) == {"d"} and asked[-1] == ["c", "d"]
    page = {f"p{i}" for i in range(5)}  # a page larger than the cache: every answer, the cache still bounded
    assert set(cache.lookup(page, find)) == page and len(cache._refs) <= 3


def test_one_crm_lookup_per_subscriber_across_event_types(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env  # the default workers: the streams run at once, sharing one record cache
    ctx = make_ctx(mode="responders", event_types=("sent", "open", "click"))
    track(ctx)
    calls: list[int] = []
    real = crm.find_records
    crm.find_records = lambda ids: calls.append(len(ids)) or real(ids)
    esp.add(*(make_event(E.OPEN, i, T0) for i in range(5)))
    esp.add(*(make_event(E.CLICK, i, T0, url="https://a.test/") for i in range(5)))
    run_tracking(ctx)
    assert sum(calls) == 5


def test_staging_database_down_leaves_the_page_for_the_next_run(tracking_env) -> None:
    from connector.errors import TransientPeerError

    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="all", event_types=("open",))
    track(ctx)
    esp.add(*(make_event(E.OPEN, i, T0 + timedelta(minutes=i)) for i in range(8)))
    staging = ctx.staging()
    real_write = staging.write_events

    def down(*a, **kw):
        raise TransientPeerError("staging database unavailable", peer="staging")

    staging.write_events = down
    outcome = run_tracking(ctx)
    assert not outcome.ok and "staging database unavailable" in outcome.message
    assert counts(ctx) == {} and crm.responses == {}
    staging.write_events = real_write
    assert run_tracking(ctx).ok
    assert staging.count() == 8 and counts(ctx)["opens"] == 8 and len(crm.responses) == 8


def test_record_lookups_in_slices_keep_what_answered() -> None:
    """A failed slice leaves only its keys unresolved; the count of failures in a row resets on success."""
    from connector.errors import TransientPeerError
    from connector.models import CrmTable, RecordRef
    from connector.steps.tracking.effects import RecordCache

    calls: list[list[str]] = []
    events: list[str] = []

    def find(ids):  # noqa: ANN001, ANN202
        calls.append(list(ids))
        if len(calls) == 2:
            raise TransientPeerError("HTTP 500")
        return {i: RecordRef(CrmTable.CONTACT, i) for i in ids if i != "k5"}

    cache = RecordCache()
    keys = {f"k{i}" for i in range(7)}
    refs, unresolved = cache.lookup_in_slices(keys, find, 3, lambda exc: events.append("failed"),
                                              lambda: events.append("ok"))
    assert [len(c) for c in calls] == [3, 3, 1]
    assert unresolved == set(calls[1]) and set(refs) == keys - unresolved - {"k5"}
    assert events == ["ok", "failed", "ok"]
    failed_slice = calls[1]
    calls.clear()
    refs, unresolved = cache.lookup_in_slices(keys, find, 3, lambda exc: None, lambda: None)
    assert calls == [failed_slice]  # the answers kept are not asked again
    assert unresolved == set() and set(refs) == keys - {"k5"}


# -- [tracking] workers ---------------------------------------------------------------------


def _gate_first_stream(esp, wait_s: float = 20.0):
    """The first stream's pull waits until another stream's pull has been read to its end."""
    import threading

    real, lock, started, other_done, waited = esp.iter_event_pages, threading.Lock(), [], threading.Event(), []

    def gated(event_type, since, until=None):
        with lock:
            first = not started
            started.append(event_type)
        if first:
            waited.append(other_done.wait(wait_s))
        yield from real(event_type, since, until)
        if not first:
            other_done.set()

    esp.iter_event_pages = gated
    return started, waited


def test_two_workers_a_blocked_stream_does_not_hold_up_another(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("open", "click"), workers=2)
    track(ctx)
    esp.add(*(make_event(E.OPEN, i, T0) for i in range(3)))
    esp.add(*(make_event(E.CLICK, i, T0, url="https://a.test/") for i in range(2)))
    started, waited = _gate_first_stream(esp)
    outcome = run_tracking(ctx)
    assert waited == [True]  # the other stream finished while the first one's ESP call was held
    assert outcome.ok and outcome.processed == 5 and outcome.details["by_type"] == {"open": 3, "click": 2}
    assert len([k for k in crm.responses if ".open." in k]) == 3
    assert len([k for k in crm.responses if ".click." in k]) == 2
    assert counts(ctx)["opens"] == 3 and counts(ctx)["clicks"] == 2
    assert sorted(started) == sorted([E.OPEN, E.CLICK])


def test_one_worker_runs_the_streams_one_after_the_other_in_order(tracking_env) -> None:
    make_ctx, esp, crm = tracking_env
    ctx = make_ctx(mode="responders", event_types=("open", "click"), workers=1)
    track(ctx)
    esp.add(make_event(E.OPEN, 1, T0), make_event(E.CLICK, 1, T0, url="https://a.test/"))
    started, waited = _gate_first_stream(esp, wait_s=0.2)
    assert run_tracking(ctx).processed == 2
    assert waited == [False]  # one after the other: nothing ran beside the held stream
    assert started == [E.OPEN, E.CLICK]
