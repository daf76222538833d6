"""`connector status`: what it collects from the state database and how it prints it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from connector.state.migrations import head_revision
from connector.commands.status import _iso, collect_status, render_text
from connector.config import Config, ServiceSettings
from connector.state.store import Batch, SendJob, StateStore
from tests.fixtures.state import FakeClock

UTC = timezone.utc


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(service=ServiceSettings(data_dir=tmp_path / "data"))


@pytest.fixture
def store(config: Config, state_clock: FakeClock):  # noqa: ANN201
    s = StateStore.from_config(config, holder="host:1", clock=state_clock)
    s.migrate()
    yield s
    s.close()


def test_status_shows_steps_sends_watermarks_and_health(config: Config, store: StateStore, state_clock: FakeClock) -> None:
    start = state_clock()
    store.start_step_run("sends", "r1")
    store.finish_step_run("r1", False, 0, "AuthError: CRM refused the client secret")
    state_clock.advance(120)
    store.start_step_run("sends", "r2")
    store.finish_step_run("r2", True, 2)
    store.save_send_job(SendJob(request_id="big", name="Autumn", status="importing", path="files",
                                resolved=30000, handed_over=30000))
    for seq, status in ((1, "imported"), (2, "importing"), (3, "uploaded")):
        store.save_batch(Batch(request_id="big", seq=seq, rows=10000, status=status))
    store.save_send_job(SendJob(request_id="done", status="sent", esp_job_id="1001", handed_over=5))
    store.save_send_job(SendJob(request_id="bad", status="failed", error="the owner lacks the Marketing Manager role"))
    store.set_watermark("default", "open", start - timedelta(hours=3))
    store.add_tracked_send("default", "1001", "done")
    store.acquire_lease("send:big", 300)
    now = state_clock.advance(60)

    report = collect_status(config, store, now=now)

    assert report["state_db"]["up_to_date"] and report["state_db"]["backend"] == "sqlite"
    sends = report["steps"]["sends"]
    assert sends["last_run"]["outcome"] == "ok" and sends["last_run"]["processed"] == 2
    assert sends["last_error"]["message"].startswith("AuthError")
    assert sends["next_run"] == start + timedelta(seconds=120 + 300)
    assert not sends["overdue"]
    assert report["steps"]["tracking"]["last_run"] is None
    [job] = report["sends_in_flight"]
    assert job["request_id"] == "big" and job["batches"] == {"total": 3, "imported": 1, "failed": 0}
    [mark] = report["watermarks"]
    assert mark["lag_seconds"] == 3 * 3600 + 180
    assert report["tracked_sends_active"] == 1
    assert report["leases"][0]["resource"] == "send:big"

    assert {s["request_id"] for s in report["sends_finished_recently"]} == {"done", "bad"}
    text = render_text(report)
    assert "ESP job 1001" in text and "lacks the Marketing Manager role" in text
    assert f"schema {head_revision()} (latest)" in text
    assert "last error of sends" in text and "CRM refused" in text
    assert "handed over 30000/30000" in text and "batches imported 1/3" in text
    assert "lag 3h03m" in text
    parsed = json.loads(json.dumps(report, default=_iso))
    assert parsed["generated_at"].endswith("+00:00")


def test_status_flags_an_overdue_step(config: Config, store: StateStore, state_clock: FakeClock) -> None:
    store.start_step_run("imports", "r1")
    store.finish_step_run("r1", True)
    now = state_clock.advance(3600)
    report = collect_status(config, store, now=now)
    assert report["steps"]["imports"]["overdue"]
    assert "OVERDUE" in render_text(report)


def test_status_of_an_unmigrated_database(config: Config) -> None:
    with StateStore.from_config(config) as store:
        report = collect_status(config, store, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert "steps" not in report
    assert "connector migrate" in render_text(report)


def test_a_long_running_step_is_running_not_overdue(config: Config, store: StateStore, state_clock: FakeClock) -> None:
    store.register_instance("test")
    store.start_step_run("sends", "r1")  # a send of 10,000 single contacts takes a while
    for _ in range(24):  # 12 minutes, the service beating all along
        state_clock.advance(30)
        store.heartbeat()
    report = collect_status(config, store, now=state_clock())
    sends = report["steps"]["sends"]
    assert not sends["overdue"] and sends["running_seconds"] == 720
    text = render_text(report)
    assert "running for 12 min" in text and "OVERDUE" not in text


def test_a_run_whose_instance_stopped_beating_is_overdue(config: Config, store: StateStore,
                                                        state_clock: FakeClock) -> None:
    store.register_instance("test")
    store.start_step_run("sends", "r1")
    now = state_clock.advance(3600)  # killed: no heartbeat, the run never finished
    report = collect_status(config, store, now=now)
    assert report["steps"]["sends"]["overdue"] and report["steps"]["sends"]["running_seconds"] is None
    assert "has no heartbeat: is that instance still running?" in render_text(report)
