"""The tracking step with the real adapters against the Dataverse and Marketing Cloud sandboxes.

Over HTTPS on loopback: SOAP Retrieve paging, CST dates, OAuth on both sides, $batch,
throttling on both sides, events that only become visible as simulated time passes,
and a kill -9 of a child process in the middle of a pull.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tracking import (
    sandbox_tracking_config,
    seed_crm_contacts,
    seed_crm_send,
)

ROOT = Path(__file__).resolve().parents[2]
ALL_TYPES = ("SentEvent", "OpenEvent", "ClickEvent", "BounceEvent", "UnsubEvent")


@pytest.fixture(autouse=True)
def _own_ca_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE override a session's verify=; the sandbox has its own CA
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


class Rig:
    """Sandboxes + state + staging + real adapters, and one tracked send."""

    def __init__(self, tmp: Path, crm: Any, esp: Any, ca_file: Path, n: int, types=ALL_TYPES, **tracking: Any):
        from connector.sandbox.marketing_cloud.events import synthetic_keys
        from connector.state.store import StateStore

        self.tmp, self.crm_sb, self.esp_sb = tmp, crm, esp
        self.n = n
        start = tracking.pop("start", None)
        hours = tracking.pop("hours", 20.0)
        published = tracking.pop("published_arrival", False)
        self.job = str(esp.store.generate_events(n, event_types=types, seed=5, start=start, hours=hours,
                                                 published_arrival=published))
        seed_crm_contacts(crm, synthetic_keys(n, 5))
        self.request_id, self.campaign_id = seed_crm_send(crm)
        tracking.setdefault("initial_lookback_days", 2)
        self.config = sandbox_tracking_config(tmp, crm, esp, ca_file, **tracking)
        self.state = StateStore(self.config.state_url(), holder="it")
        self.state.migrate()
        self.state.add_tracked_send("default", self.job, self.request_id, self.campaign_id, "Spring")
        self._adapters: list[Any] = []

    def ctx(self):
        from connector.crm.dataverse import DataverseCrmClient
        from connector.esp.marketing_cloud import MarketingCloudEspClient
        from connector.staging.sql import SqlStagingStore
        from connector.steps import StepContext

        esp = MarketingCloudEspClient.from_config(self.config)
        crm = DataverseCrmClient.from_config(self.config)
        staging = SqlStagingStore.from_config(self.config)
        self._adapters += [esp, crm, staging]
        self.staging = staging
        return StepContext(config=self.config, state=self.state, crm=lambda: crm, esp=lambda: esp,
                           file_drop=lambda: None, staging=lambda: staging, run_id="it", holder="it")

    def run(self):
        from connector.steps.tracking import run_tracking

        return run_tracking(self.ctx())

    def request(self) -> dict:
        return self.crm_sb.store.get("cesp_sendrequests", self.request_id)

    def close(self) -> None:
        for adapter in self._adapters:
            adapter.close()
        self.state.close()


@pytest.fixture
def rig_factory(tmp_path, crm_sandbox, esp_sandbox, sandbox_ca):
    rigs: list[Rig] = []

    def make(n: int, **kw: Any) -> Rig:
        rig = Rig(tmp_path, crm_sandbox, esp_sandbox, sandbox_ca.ca_file, n, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def test_mode_all_lands_every_event_once(rig_factory) -> None:
    rig = rig_factory(600)
    outcome = rig.run()
    assert outcome.ok, outcome.message
    total = 5 * 600
    assert rig.staging.count() == total
    assert rig.crm_sb.store.count("campaignresponses") == total  # sent/open/click/bounce/unsub per person
    req = rig.request()
    assert req["cesp_sentcount"] == 600 and req["cesp_uniqueopencount"] == 600 and req["cesp_clickcount"] == 600
    assert sum(req[f"cesp_{k}bouncecount"] for k in ("hard", "soft", "block", "technical", "unknown")) == 600
    assert req["cesp_unsubscribecount"] == 600
    contacts = list(rig.crm_sb.store.rows("contacts"))
    assert all(c["donotbulkemail"] for c in contacts)
    assert {c["cesp_lastbouncetype"] for c in contacts} == {"hard", "soft", "block", "technical", "unknown"}
    assert all(c["cesp_lastbouncejob"] == rig.job for c in contacts)
    rows = rig.staging.rows()
    assert {r["crm_table"] for r in rows} == {"contact"}
    clicks = [r for r in rows if r["event_type"] == "click"]
    assert all(r["url"].startswith("https://") and r["url_id"] for r in clicks)

    again = rig.run()  # re-reads the overlap: nothing new anywhere
    assert again.ok and again.processed == 0
    assert rig.staging.count() == total
    assert rig.crm_sb.store.count("campaignresponses") == total
    assert rig.request()["cesp_sentcount"] == 600


@pytest.mark.slow
def test_throttling_on_both_sides_still_exactly_once(rig_factory) -> None:
    rig = rig_factory(300, types=("SentEvent", "OpenEvent", "ClickEvent"), mode="responders")
    rig.crm_sb.faults.set("throttle", next_n=3, seconds=0.01)
    rig.esp_sb.faults.set("throttle", next_n=2)
    for _ in range(3):  # the adapters retry; whatever is left over, the next run takes
        if rig.run().ok:
            break
    assert not rig.crm_sb.faults.take("throttle") and not rig.esp_sb.faults.take("throttle")  # storms happened
    assert rig.crm_sb.store.count("campaignresponses") == 600  # opens and clicks
    req = rig.request()
    assert (req["cesp_sentcount"], req["cesp_opencount"], req["cesp_clickcount"]) == (300, 300, 300)


def test_events_becoming_visible_later_are_all_picked_up_once(rig_factory, esp_sandbox) -> None:
    from datetime import timedelta

    start = esp_sandbox.store.now() - timedelta(hours=1)  # events from 1 h ago to 3 h ahead
    rig = rig_factory(400, types=("OpenEvent",), event_types=("open",), overlap_minutes=120, start=start, hours=4.0)
    first = rig.run()
    assert first.ok and 0 < first.processed < 400
    rig.esp_sb.advance(hours=4)
    second = rig.run()
    assert second.ok
    assert first.processed + second.processed == 400
    assert rig.staging.count() == 400
    assert rig.request()["cesp_opencount"] == 400


@pytest.mark.parametrize("overlap, complete", [(120, True), (0, False)])
def test_late_events_before_the_watermark_are_picked_up_by_the_overlap(rig_factory, overlap: float,
                                                                       complete: bool) -> None:
    """Events arrive as Marketing Cloud's do (84% within a minute of their EventDate, 96% within 15,
    99% within 60): after a pull, some events dated before its watermark are still to come. The
    default overlap (120 minutes) picks every one of them up; without an overlap they are lost."""
    rig = rig_factory(3000, types=("OpenEvent",), event_types=("open",), overlap_minutes=overlap, hours=2.0,
                      published_arrival=True)
    first = rig.run()
    assert first.ok and 0 < first.processed < 3000  # late arrivals are still missing
    watermark = rig.state.get_watermark("default", "open")
    rig.esp_sb.advance(hours=2.1)  # past the longest delay: every event has arrived
    second = rig.run()
    assert second.ok
    late = [r for r in rig.staging.rows() if r["event_time_utc"] <= watermark.replace(tzinfo=None)]
    if complete:
        assert first.processed + second.processed == 3000 == rig.staging.count()
        assert rig.request()["cesp_opencount"] == 3000
        assert len(late) > first.processed  # dated before the first watermark, arrived after the first pull
    else:
        assert first.processed + second.processed < 3000


def test_mode_aggregate_reads_one_send_summary_instead_of_every_event(rig_factory, monkeypatch) -> None:
    """6,000 events of each type: aggregate mode reads the Send's counters in one Retrieve and pages
    only through the bounce and unsubscribe events (their record effects are owed in every mode)."""
    from connector.esp.partner import PartnerApi

    retrieved: list[str] = []
    pages = PartnerApi.pages

    def spy(self, object_type, properties, filter_part, what):  # noqa: ANN001, ANN202 - records, then delegates
        for page in pages(self, object_type, properties, filter_part, what):
            retrieved.append(object_type)
            yield page

    monkeypatch.setattr(PartnerApi, "pages", spy)
    rig = rig_factory(6000, mode="aggregate")
    outcome = rig.run()
    assert outcome.ok, outcome.message
    assert retrieved.count("Send") == 1
    assert retrieved.count("BounceEvent") == retrieved.count("UnsubEvent") == 3  # 2,500-event pages
    assert not {"SentEvent", "OpenEvent", "ClickEvent"} & set(retrieved)
    req = rig.request()
    assert req["cesp_sentcount"] == 6000 and req["cesp_uniqueopencount"] == 6000
    assert req["cesp_uniqueclickcount"] == 6000 and req["cesp_unsubscribecount"] == 6000
    assert sum(req[f"cesp_{k}bouncecount"] for k in ("hard", "soft", "block", "technical", "unknown")) == 6000
    assert req["cesp_deliveredcount"] == 0  # every recipient of the generated send bounced
    assert req["cesp_opencount"] is None  # the Send has no total opens
    assert rig.staging.count() == 0 and rig.crm_sb.store.count("campaignresponses") == 0
    retrieved.clear()
    assert rig.run().ok
    assert retrieved.count("Send") == 1


def test_deleted_send_request_stops_tracking(rig_factory) -> None:
    rig = rig_factory(50, types=("OpenEvent",), event_types=("open",))
    store = rig.crm_sb.store
    store.delete(store.schema.entity("cesp_sendrequest"), rig.request_id)
    outcome = rig.run()
    assert outcome.ok
    assert rig.state.tracked_sends("default") == []
    assert rig.crm_sb.store.count("campaignresponses") == 0


CHILD = r"""
import json, sys
from pathlib import Path
from types import SimpleNamespace as NS
from connector.crm.dataverse import DataverseCrmClient
from connector.esp.marketing_cloud import MarketingCloudEspClient
from connector.staging.sql import SqlStagingStore
from connector.state.store import StateStore
from connector.steps import StepContext
from connector.steps.tracking import run_tracking
from tests.fixtures.tracking import sandbox_tracking_config

info = json.loads(Path(sys.argv[1]).read_text())
crm, esp = NS(**info["crm"]), NS(**info["esp"])
config = sandbox_tracking_config(Path(info["tmp"]), crm, esp, Path(info["ca_file"]), **info["tracking"])
state = StateStore(config.state_url(), holder="child")
e, c, s = MarketingCloudEspClient.from_config(config), DataverseCrmClient.from_config(config), SqlStagingStore.from_config(config)
ctx = StepContext(config=config, state=state, crm=lambda: c, esp=lambda: e, file_drop=lambda: None, staging=lambda: s)
out = run_tracking(ctx)
print("OUTCOME", out.ok, out.processed, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["tracking_after_page:2", "tracking_after_staging:3"])
def test_kill_9_mid_pull_against_the_sandboxes(rig_factory, tmp_path: Path, sandbox_ca, crash_at: str) -> None:
    rig = rig_factory(2600, types=("SentEvent", "OpenEvent"), event_types=("sent", "open"), overlap_minutes=0)
    info = {
        "tmp": str(tmp_path), "ca_file": str(sandbox_ca.ca_file),
        "tracking": {"mode": "all", "event_types": ["sent", "open"], "overlap_minutes": 0, "initial_lookback_days": 2},
        "crm": {k: getattr(rig.crm_sb, k) for k in ("url", "authority", "client_id", "client_secret")},
        "esp": {k: getattr(rig.esp_sb, k) for k in ("wsdl_url", "auth_url", "client_id", "client_secret")},
    }
    spec = tmp_path / "child.json"
    spec.write_text(json.dumps(info))
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env["PYTHONPATH"] = str(ROOT)

    def child(crash: str = "") -> subprocess.CompletedProcess:
        e = dict(env, CONNECTOR_CRASH_AT=crash) if crash else env
        return subprocess.run([sys.executable, "-c", CHILD, str(spec)], cwd=ROOT, env=e, capture_output=True, check=False,
                              text=True, timeout=240)

    first = child(crash_at)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    second = child()
    assert second.returncode == 0 and "OUTCOME True" in second.stdout, second.stderr[-2000:]
    rig.ctx()  # opens the staging store for counting
    assert rig.staging.count() == 5200
    assert rig.crm_sb.store.count("campaignresponses") == 5200
    req = rig.request()
    assert (req["cesp_sentcount"], req["cesp_opencount"], req["cesp_uniqueopencount"]) == (2600, 2600, 2600)


def test_batch_partial_failure_parks_only_the_failed_items(rig_factory) -> None:
    """Contacts deleted between the lookup and the $batch: those items fail, the rest land."""
    rig = rig_factory(200, types=("OpenEvent",), event_types=("open",), mode="responders")
    ctx = rig.ctx()
    crm = ctx.crm()
    store = rig.crm_sb.store
    real_find = crm.find_records
    gone: list[str] = []

    def find_then_delete(ids):
        found = real_find(ids)
        for key in sorted(found)[:3 - len(gone)]:  # three in all (the step looks up 100 at a time)
            store.delete(store.schema.entity("contact"), key)
            gone.append(key)
        return found

    crm.find_records = find_then_delete
    from connector.steps.tracking import run_tracking

    outcome = run_tracking(ctx)
    assert outcome.ok
    assert outcome.details["given_up"] == 3, outcome.details  # the record is gone: no retry
    assert rig.crm_sb.store.count("campaignresponses") == 197
    assert rig.request()["cesp_opencount"] == 200
    parked = rig.state.quarantined(rig.request_id)
    assert sorted(q.record_id for q in parked) == sorted(gone)
