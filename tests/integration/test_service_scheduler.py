"""Scheduler wiring: one pool per step, no self-overlap, slow steps do not block others."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from connector.config import Config, ImportsSettings, SendsSettings, ServiceSettings, TrackingSettings
from connector.service import Service
from connector.state.store import StateStore
from connector.steps import StepContext, StepOutcome


def make_config(tmp_path: Path, *, sends: float = 0.002, imports: float = 0.1, tracking: float = 0.002,
                workers: int = 2, drain: int = 5) -> Config:
    return Config(
        service=ServiceSettings(data_dir=tmp_path / "data", drain_seconds=drain),
        sends=SendsSettings(poll_minutes=sends, workers=workers),
        imports=ImportsSettings(poll_seconds=imports, workers=workers),
        tracking=TrackingSettings(poll_minutes=tracking, workers=workers),
    )


@pytest.fixture
def store(tmp_path: Path):
    s = StateStore(f"sqlite:///{tmp_path / 'data' / 'state.db'}", holder="test")
    s.migrate()
    yield s
    s.close()


def wait_for(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


class Recorder:
    """Fake steps that record which thread ran them and how many ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: dict[str, set[str]] = {}
        self.runs: dict[str, int] = {}
        self.active: dict[str, int] = {}
        self.max_active: dict[str, int] = {}

    def step(self, name: str, *, sleep: float = 0.0, block: threading.Event | None = None):  # noqa: ANN201
        def run(ctx: StepContext) -> StepOutcome:
            with self.lock:
                self.threads.setdefault(name, set()).add(threading.current_thread().name)
                self.active[name] = self.active.get(name, 0) + 1
                self.max_active[name] = max(self.max_active.get(name, 0), self.active[name])
            try:
                if block is not None:
                    block.wait(10)
                time.sleep(sleep)
            finally:
                with self.lock:
                    self.active[name] -= 1
                    self.runs[name] = self.runs.get(name, 0) + 1
            return StepOutcome(ok=True, processed=1)

        return run


def test_each_step_runs_in_its_own_pool(tmp_path: Path, store: StateStore) -> None:
    rec = Recorder()
    steps = {name: rec.step(name) for name in ("sends", "imports", "tracking")}
    service = Service(make_config(tmp_path), store=store, steps=steps)
    service.start()
    try:
        wait_for(lambda: all(rec.runs.get(n, 0) >= 1 for n in steps))
    finally:
        assert service.stop(5)
    for name, threads in rec.threads.items():
        assert threads and all(t.startswith(f"step-{name}") for t in threads), (name, threads)
    jobs = {name: len(store.recent_step_runs(name)) for name in steps}
    assert all(n >= 1 for n in jobs.values())


def test_a_slow_step_does_not_block_another(tmp_path: Path, store: StateStore) -> None:
    rec = Recorder()
    release = threading.Event()
    steps = {"sends": rec.step("sends", block=release), "imports": rec.step("imports")}
    service = Service(make_config(tmp_path, imports=0.05), store=store, steps=steps)
    service.start()
    try:
        wait_for(lambda: rec.runs.get("imports", 0) >= 3)
        assert rec.runs.get("sends", 0) == 0  # still blocked while imports went on
    finally:
        release.set()
        assert service.stop(5)


def test_a_step_never_overlaps_itself(tmp_path: Path, store: StateStore) -> None:
    rec = Recorder()
    steps = {"imports": rec.step("imports", sleep=0.3)}
    service = Service(make_config(tmp_path, imports=0.02, workers=4), store=store, steps=steps)
    service.start()
    try:
        wait_for(lambda: rec.runs.get("imports", 0) >= 2)
    finally:
        assert service.stop(5)
    assert rec.max_active["imports"] == 1


def test_step_runs_are_recorded_with_outcome_and_error(tmp_path: Path, store: StateStore) -> None:
    def failing(ctx: StepContext) -> StepOutcome:
        raise RuntimeError("peer exploded")

    def good(ctx: StepContext) -> StepOutcome:
        assert ctx.run_id and ctx.holder == "test" and ctx.state is store
        return StepOutcome(ok=True, processed=7, details={"sends": 7})

    service = Service(make_config(tmp_path), store=store, steps={"sends": good, "tracking": failing})
    assert service.run_once() is False
    summary = store.step_runs_summary()
    assert summary["sends"]["last"].outcome == "ok" and summary["sends"]["last"].processed == 7
    assert summary["tracking"]["last"].outcome == "failed"
    assert "peer exploded" in summary["tracking"]["last_error"].message


def test_missing_step_module_is_not_available_not_a_crash(tmp_path: Path, store: StateStore, caplog) -> None:  # noqa: ANN001
    steps = {"sends": "connector.steps.no_such_step:run_sends", "imports": lambda ctx: StepOutcome()}
    service = Service(make_config(tmp_path), store=store, steps=steps)
    assert service.run_once() is True
    assert service.run_once() is True
    runs = store.recent_step_runs("sends")
    assert [r.outcome for r in runs] == ["not available", "not available"]
    assert "no_such_step" in runs[0].message


def test_missing_adapter_is_not_available(tmp_path: Path, store: StateStore, monkeypatch) -> None:  # noqa: ANN001
    from connector import runtime

    monkeypatch.setitem(runtime.ADAPTER_CLASSES, "crm", "connector.crm.no_such_adapter:Client")

    def uses_crm(ctx: StepContext) -> StepOutcome:
        ctx.crm()
        return StepOutcome()

    service = Service(make_config(tmp_path), store=store, steps={"sends": uses_crm})
    service.run_once()
    assert store.recent_step_runs("sends")[0].outcome == "not available"


def test_adapters_are_built_once_per_thread_and_closed(tmp_path: Path, store: StateStore) -> None:
    built: list[tuple[str, object]] = []
    closed: list[object] = []

    class FakeCrm:
        def close(self) -> None:
            closed.append(self)

    def factory(config: Config) -> FakeCrm:
        crm = FakeCrm()
        built.append((threading.current_thread().name, crm))
        return crm

    def step(ctx: StepContext) -> StepOutcome:
        assert ctx.crm() is ctx.crm()
        return StepOutcome()

    service = Service(make_config(tmp_path), store=store, steps={"sends": step, "tracking": step},
                      adapters={"crm": factory})
    assert service.run_once()
    assert len(built) == 2 and len({thread for thread, _ in built}) == 2
    service.close()
    assert len(closed) == 2


def test_stop_lets_in_flight_work_finish_and_starts_nothing_new(tmp_path: Path, store: StateStore) -> None:
    seen_stopping = threading.Event()
    started = threading.Event()

    def long_step(ctx: StepContext) -> StepOutcome:
        started.set()
        while not ctx.stopping.wait(0.02):
            pass
        seen_stopping.set()
        time.sleep(0.2)  # checkpoint
        return StepOutcome(ok=True, message="checkpointed")

    service = Service(make_config(tmp_path), store=store, steps={"sends": long_step})
    service.start()
    assert started.wait(10)
    assert service.stop(5) is True
    assert seen_stopping.is_set()
    assert service.run_step("sends").message.startswith("not started")
    assert store.recent_step_runs("sends")[0].message == "checkpointed"


def test_stop_reports_a_drain_timeout(tmp_path: Path, store: StateStore) -> None:
    release = threading.Event()

    def stubborn(ctx: StepContext) -> StepOutcome:
        release.wait(10)
        return StepOutcome()

    service = Service(make_config(tmp_path), store=store, steps={"sends": stubborn})
    service.start()
    wait_for(lambda: service.in_flight == 1)
    assert service.stop(0.2) is False
    release.set()
    assert service.wait_idle(5)
    service.close()


def test_expired_leases_are_reaped_on_each_run(tmp_path: Path, store: StateStore) -> None:
    other = StateStore(store.url, holder="crashed")
    other.acquire_lease("send:abandoned", 0.001)
    other.close()
    time.sleep(0.01)
    service = Service(make_config(tmp_path), store=store, steps={"sends": lambda ctx: StepOutcome()})
    service.run_once()
    assert store.leases() == []


def test_maintenance_prunes_old_step_runs(tmp_path: Path, store: StateStore) -> None:
    from datetime import timedelta

    service = Service(make_config(tmp_path), store=store, steps={"sends": lambda ctx: StepOutcome()})
    service.run_once()
    real_clock = store.clock
    store.clock = lambda: real_clock() + timedelta(days=31)
    try:
        service.run_once()
        service.maintain()
    finally:
        store.clock = real_clock
    assert len(store.recent_step_runs("sends")) == 1


def test_run_service_until_stops_when_the_event_is_set(tmp_path: Path) -> None:
    from connector.commands.run import run_service_until
    from connector.logs import close_logging

    ini = tmp_path / "service.ini"
    ini.write_text("[service]\ndata_dir = data\ndrain_seconds = 5\n\n[logging]\nfolder = logs\nconsole = off\n")
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_service_until(ini, stop)))
    thread.start()
    try:
        wait_for(lambda: (tmp_path / "data" / "state.db").exists())
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
        close_logging()
    assert result == [0]
    with StateStore(f"sqlite:///{tmp_path / 'data' / 'state.db'}") as store:
        assert store.schema_revision() == store.health()["head"]


def test_run_service_until_refuses_a_bad_config(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from connector.commands.run import run_service_until

    ini = tmp_path / "service.ini"
    ini.write_text("[servce]\ndata_dir = data\n")
    assert run_service_until(ini, threading.Event()) == 3
    assert "servce" in capsys.readouterr().err


def test_each_run_binds_step_and_run_to_the_log_context_and_resets_it(tmp_path: Path, store: StateStore) -> None:
    import structlog

    seen: dict[str, object] = {}

    def step(ctx: StepContext) -> StepOutcome:
        seen.update(structlog.contextvars.get_contextvars())
        return StepOutcome()

    service = Service(make_config(tmp_path), store=store, steps={"tracking": step})
    outcome = service.run_step("tracking")
    assert outcome.ok
    assert seen["step"] == "tracking" and seen["run"] == store.recent_step_runs("tracking")[0].run_id
    assert "step" not in structlog.contextvars.get_contextvars()


def test_runs_left_running_by_a_dead_process_are_marked_interrupted(tmp_path: Path, store: StateStore) -> None:
    import socket

    for holder, run_id in ((f"{socket.gethostname()}:4242:abcdef", "died-here"), ("elsewhere:1:x", "other-host")):
        with StateStore(store.url, holder=holder) as dead:
            dead.start_step_run("sends", run_id)
    service = Service(make_config(tmp_path), store=store, steps={"imports": lambda ctx: StepOutcome()})
    service.run_once()
    outcomes = {r.run_id: r.outcome for r in store.recent_step_runs("sends")}
    assert outcomes == {"died-here": "interrupted", "other-host": "running"}


def test_with_an_instance_id_only_its_own_runs_are_interrupted(tmp_path: Path) -> None:
    config = Config(service=ServiceSettings(data_dir=tmp_path / "data", instance_id="node-a"))
    with StateStore.from_config(config) as store:
        store.migrate()
        assert store.holder.startswith("node-a@") and store.identity.label == "node-a"
        store.start_step_run("sends", "mine")
        with StateStore(store.url, holder="node-b") as other:
            other.start_step_run("sends", "theirs")
        Service(config, store=store, steps={}).run_once()
        outcomes = {r.run_id: r.outcome for r in store.recent_step_runs("sends")}
    assert outcomes == {"mine": "interrupted", "theirs": "running"}
