"""Instance identity and the instance registry, on SQLite and PostgreSQL.

A lease held by "me" means this process, not the configured ``instance_id``; two
live processes with one label are told apart, reported, and never share a lease.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import structlog

from connector.commands.status import collect_status, render_text
from connector.config import Config, ServiceSettings
from connector.service import Service
from connector.state.store import SendJob, StateStore
from connector.steps import StepOutcome
from tests.fixtures.state import FakeClock


def test_two_processes_with_one_instance_id_never_share_a_lease(tmp_path, state_url: str) -> None:
    config = _config(tmp_path, state_url, "node")  # one service.ini copied to two hosts
    with StateStore.from_config(config) as a, StateStore.from_config(config) as b:
        a.migrate()
        assert a.holder != b.holder and a.holder.startswith("node@") and b.identity.label == "node"
        assert a.acquire_lease("send:r1", 60)
        assert not b.acquire_lease("send:r1", 60), "a second process with the same label took the lease"
        assert not b.extend_lease("send:r1", 60)
        b.release_lease("send:r1")
        assert a.lease_holder("send:r1") == a.holder


def _config(tmp_path, state_url: str, label: str) -> Config:
    from connector.config import StateSettings

    return Config(service=ServiceSettings(data_dir=tmp_path / label, instance_id=label),
                  state=StateSettings(url=state_url))


def test_a_copied_instance_id_is_reported_by_status_and_a_warning(tmp_path, state_url: str) -> None:
    config = _config(tmp_path, state_url, "copied")
    with StateStore.from_config(config) as first, StateStore.from_config(config) as second:
        first.migrate()
        services = [Service(config, store=s, steps={"sends": lambda ctx: StepOutcome()}) for s in (first, second)]
        with structlog.testing.capture_logs() as logs:
            for service in services:
                service.run_once()
        shared = [e for e in logs if e["event"] == "instance_label_shared"]
        assert {e["other"] for e in shared} == {first.holder}, shared  # the second one saw the first
        first.acquire_lease("send:r9", 300)
        first.save_send_job(SendJob(request_id="r9", status="resolving", name="Held"))
        report = collect_status(config, second)
        assert report["sends_in_flight"][0]["held_by"] == first.holder
        [conflict] = report["label_conflicts"]
        assert conflict["label"] == "copied" and sorted(conflict["holders"]) == sorted([first.holder, second.holder])
        [held] = [i for i in report["instances"] if i["holder"] == first.holder]
        assert held["holds"] == ["send:r9"] and held["alive"] and held["pid"] == first.identity.pid
        text = render_text(report)
        assert "WARNING: 2 live processes use the instance_id 'copied'" in text
        assert "send:r9" in text and f"held by {first.holder}" in text
        for service in services:
            service.close()
        assert collect_status(config, first)["instances"] == []  # both stopped


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_restarted_instance_takes_over_at_once_what_its_dead_predecessor_held(state_store: StateStore) -> None:
    import sqlalchemy as sa

    from connector.state.schema import instances

    def predecessor(label: str, pid: int, start: str) -> str:
        holder = f"{label}@{state_store.identity.host}:{pid}:dead{pid}"
        me = state_store.identity
        with state_store.transaction() as c:
            c.execute(sa.insert(instances).values(
                holder=holder, label=label, host=me.host, pid=pid, token="x", scope=me.scope,
                process_start=start, version="0", started_at=state_store.now(), heartbeat_at=state_store.now()))
            c.execute(sa.text("insert into leases (resource, holder, acquired_at, expires_at) values "
                              "(:r, :h, :t, :t)"), {"r": f"send:{holder[-8:]}", "h": holder, "t": state_store.now()})
        return holder

    if not state_store.identity.scope:
        pytest.skip("no /proc here: a pid cannot be checked, only lease expiry frees a dead holder's work")
    store = StateStore(state_store.url, label="svc", clock=state_store.clock)
    try:
        dead = predecessor("svc", _dead_pid(), "12345")
        alive = predecessor("svc", store.identity.pid, store.identity.process_start)  # same process: alive
        other = predecessor("other", _dead_pid(), "12345")  # another instance: waits for its leases to expire
        assert store.take_over_dead_predecessors() == [dead]
        holders = {lease["holder"] for lease in store.leases()}
        assert holders == {alive, other}
        assert {i["holder"] for i in store.instances()} == {alive, other}
    finally:
        store.close()


def test_the_registry_records_host_pid_version_and_heartbeat(state_store: StateStore, state_clock: FakeClock) -> None:
    from connector import __version__

    state_store.register_instance(__version__)
    [row] = state_store.instances()
    me = state_store.identity
    assert (row["holder"], row["host"], row["pid"], row["version"]) == ("me", me.host, me.pid, __version__)
    state_clock.advance(45)
    state_store.heartbeat()
    [row] = state_store.instances()
    assert row["heartbeat_at"] == state_clock() and row["started_at"] < row["heartbeat_at"]
    state_clock.advance(600)
    assert state_store.live_instances() == []
    state_store.unregister_instance()
    assert state_store.instances() == [] and len(state_store.instances(include_stopped=True)) == 1
