"""Tracking while the Dataverse sandbox answers HTTP 500s: retries, partial progress, exactly once.

Real adapters over HTTPS on loopback. The 500s come from the sandbox's ``http500`` fault
knob, at a random rate or aimed at one call (the test arms the knob just before the call
it wants to fail, at the socket, so every retry of that call meets a 500 too).
"""

from __future__ import annotations

import threading

from typing import Any

import pytest

from tests.integration.test_tracking_sandbox import Rig


@pytest.fixture(autouse=True)
def _own_ca_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def rig_factory(tmp_path, crm_sandbox, esp_sandbox, sandbox_ca):
    rigs: list[Rig] = []

    def make(n: int, crm: dict[str, Any] | None = None, **kw: Any) -> Rig:
        rig = Rig(tmp_path, crm_sandbox, esp_sandbox, sandbox_ca.ca_file, n, **kw)
        if crm:
            rig.config = rig.config.model_copy(update={"crm": rig.config.crm.model_copy(update=crm)})
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def fail_call(rig: Rig, ctx: Any, wanted: Any, nth: int = 1) -> list[str]:
    """Make the ``nth`` CRM call matching ``wanted(method, call)`` meet HTTP 500 on every attempt."""
    http = ctx.crm().http
    real = http.request
    seen: list[str] = []
    attempts = http.max_retries + 1
    one_at_a_time = threading.Lock()  # the writer sends batches in parallel: the fault must hit this call

    def request(method: str, path: str, call: Any, **kw: Any) -> Any:
        with one_at_a_time:
            if wanted(method, call):
                seen.append(call.operation)
                if len(seen) == nth:
                    rig.crm_sb.faults.set("http500", next_n=attempts)
            return real(method, path, call, **kw)

    http.request = request
    return seen


def test_crm_500s_at_7_percent_do_not_stop_tracking(rig_factory) -> None:
    """Issue 19.4: a 500 on a read or a safe write is retried; the run lands everything."""
    rig = rig_factory(600)
    rig.crm_sb.faults.set("http500", next_n=2, rate=0.07)  # the very first call (a GET) meets two
    outcome = rig.run()
    assert outcome.ok, outcome.message
    assert rig.crm_sb.faults.taken("http500") >= 2
    rig.crm_sb.faults.clear()
    total = 5 * 600
    assert outcome.processed == total and outcome.details["retry_later"] == 0
    assert rig.staging.count() == total
    assert rig.crm_sb.store.count("campaignresponses") == total
    req = rig.request()
    assert (req["cesp_sentcount"], req["cesp_opencount"], req["cesp_clickcount"]) == (600, 600, 600)
    again = rig.run()
    assert again.ok and again.processed == 0
    assert rig.crm_sb.store.count("campaignresponses") == total


def test_a_failed_write_slice_keeps_the_progress_of_the_others(rig_factory) -> None:
    """A $batch of the first of five write slices fails on every attempt: the other four land and count
    (the slice's other batches may have landed too; the next run finds them there)."""
    rig = rig_factory(500, types=("OpenEvent",), event_types=("open",), mode="responders",
                      crm={"batch_size": 100, "max_retries": 1})
    ctx = rig.ctx()
    fail_call(rig, ctx, lambda method, call: method == "POST", nth=3)
    from connector.steps.tracking import run_tracking

    first = run_tracking(ctx)
    assert not first.ok and "1 CRM call(s) failed after their retries" in first.message, first.message
    assert first.processed == 400 and first.details["retry_later"] == 100, first.message
    assert "100 left for the next run" in first.message
    assert 400 <= rig.crm_sb.store.count("campaignresponses") < 500
    assert rig.request()["cesp_opencount"] == 400
    assert rig.state.get_watermark("default", "open") is not None  # it moved, held below the failed slice

    second = rig.run()
    assert second.ok and second.processed == 100, second.message
    assert rig.crm_sb.store.count("campaignresponses") == 500
    req = rig.request()
    assert (req["cesp_opencount"], req["cesp_uniqueopencount"]) == (500, 500)
    assert rig.state.quarantined(rig.request_id) == []


def test_a_failed_lookup_holds_only_its_own_events(rig_factory) -> None:
    """One look-up call (100 subscribers of page 1) fails on every attempt: only those 100 events wait."""
    rig = rig_factory(3000, types=("OpenEvent",), event_types=("open",), mode="responders",
                      crm={"max_retries": 1})
    ctx = rig.ctx()
    fail_call(rig, ctx, lambda method, call: call.operation == "find records", nth=1)
    from connector.steps.tracking import run_tracking

    first = run_tracking(ctx)
    assert not first.ok and "find records on contact failed: HTTP 500" in first.message, first.message
    assert first.details["pages"] == 2
    assert first.details["retry_later"] == 100 and first.processed == 2900, first.message
    assert rig.crm_sb.store.count("campaignresponses") == 2900

    second = rig.run()
    assert second.ok and second.processed == 100, second.message
    assert rig.crm_sb.store.count("campaignresponses") == 3000
    assert rig.request()["cesp_opencount"] == 3000


def test_crm_down_stops_the_event_type_after_a_few_failed_calls(rig_factory) -> None:
    """Four pages, every CRM call fails: the type stops after three held pages; nothing is lost."""
    rig = rig_factory(7600, types=("OpenEvent",), event_types=("open",), mode="responders",
                      crm={"max_retries": 0})
    rig.crm_sb.faults.set("http500", rate=1.0)
    outcome = rig.run()
    assert not outcome.ok and "HTTP 500" in outcome.message
    assert outcome.details["pages"] == 3 and outcome.processed == 0
    assert rig.crm_sb.faults.taken("http500") == 3  # one call per held page, then it stopped
    rig.crm_sb.faults.clear()
    assert rig.state.get_watermark("default", "open") is None
    again = rig.run()
    assert again.ok and again.processed == 7600, again.message
    assert rig.crm_sb.store.count("campaignresponses") == 7600


def test_exactly_once_under_random_500s_without_client_retries(rig_factory) -> None:
    """Invariant 3 under faults: whatever fails is retried by a later run, nothing counts twice."""
    rig = rig_factory(600, crm={"max_retries": 0, "batch_size": 100})
    rig.crm_sb.faults.set("http500", rate=0.15)
    outcomes = [rig.run() for _ in range(4)]
    assert rig.crm_sb.faults.taken("http500") > 0
    assert sum(o.processed for o in outcomes) > 0
    rig.crm_sb.faults.clear()
    for _ in range(3):  # at most one held-back event type per run is left
        if (last := rig.run()).ok and last.details["retry_later"] == 0:
            break
    assert last.ok and last.details["retry_later"] == 0, last.message
    total = 5 * 600
    assert rig.staging.count() == total
    assert rig.crm_sb.store.count("campaignresponses") == total
    req = rig.request()
    assert (req["cesp_sentcount"], req["cesp_opencount"], req["cesp_uniqueopencount"]) == (600, 600, 600)
    assert req["cesp_clickcount"] == 600 and req["cesp_unsubscribecount"] == 600
    assert sum(req[f"cesp_{k}bouncecount"] for k in ("hard", "soft", "block", "technical", "unknown")) == 600
    assert rig.state.quarantined(rig.request_id) == []
