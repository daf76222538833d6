"""The state store's contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connector.state.migrations import head_revision
from connector.errors import StateError
from connector.state.records import ChangeRow
from connector.state.schema import metadata
from connector.state.store import Batch, QuarantineRow, SendJob, StateStore
from connector.state.tracking import LEGACY_META, legacy_key_hash, ordered_key
from tests.fixtures.state import FakeClock

UTC = timezone.utc
HEAD = head_revision()


def test_migrations_build_exactly_the_declared_schema(state_store: StateStore) -> None:
    with state_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert state_store.schema_revision() == HEAD


def test_migrate_twice_is_harmless_and_health_reports_the_revision(state_store: StateStore) -> None:
    assert state_store.migrate() == HEAD
    health = state_store.health()
    assert health["reachable"] and health["up_to_date"]
    assert health["revision"] == health["head"] == HEAD
    assert health["backend"] in ("sqlite", "postgresql")


def test_health_of_an_unmigrated_database_says_what_to_do(state_url: str) -> None:
    with StateStore(state_url) as store:
        health = store.health()
    assert health["reachable"] and not health["up_to_date"]
    assert "connector migrate" in health["error"]


def test_downgrade_to_base_and_back(state_store: StateStore) -> None:
    from alembic import command

    from connector.state import migrations

    cfg = migrations.alembic_config()
    with state_store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert "send_jobs" not in sa.inspect(state_store.engine).get_table_names()
    assert state_store.migrate() == HEAD


def test_send_job_round_trip_and_update(state_store: StateStore, state_clock: FakeClock) -> None:
    job = SendJob(request_id="r1", name="Spring", campaign_id="c1")
    state_store.save_send_job(job)
    created = job.created_at
    state_clock.advance(10)
    job.status = "handing_over"
    job.resolved, job.handed_over, job.skipped = 10, 8, 2
    job.skipped_by_reason = {"no_email": 1, "do_not_bulk_email": 1}
    job.path = "soap"
    state_store.save_send_job(job)
    got = state_store.get_send_job("r1")
    assert got is not None
    assert (got.status, got.resolved, got.handed_over, got.skipped, got.path) == ("handing_over", 10, 8, 2, "soap")
    assert got.skipped_by_reason == {"no_email": 1, "do_not_bulk_email": 1}
    assert got.created_at == created and got.updated_at == created + timedelta(seconds=10)
    assert got.created_at.tzinfo is not None
    assert state_store.get_send_job("nope") is None


def test_send_jobs_filter_by_status(state_store: StateStore) -> None:
    for rid, status in (("a", "claimed"), ("b", "sent"), ("c", "importing")):
        state_store.save_send_job(SendJob(request_id=rid, status=status))
    assert {j.request_id for j in state_store.send_jobs()} == {"a", "b", "c"}
    assert [j.request_id for j in state_store.send_jobs(["sent"])] == ["b"]
    with pytest.raises(StateError, match="unknown status"):
        state_store.save_send_job(SendJob(request_id="d", status="bogus"))


def test_batches_belong_to_their_job(state_store: StateStore) -> None:
    state_store.save_send_job(SendJob(request_id="r1", status="importing", path="files"))
    for seq in (2, 1):
        state_store.save_batch(Batch(request_id="r1", seq=seq, file_name=f"cesp_r1_{seq}.csv", rows=5))
    b = state_store.batches("r1")[0]
    b.status, b.rows_ok, b.rows_error = "imported", 4, 1
    state_store.save_batch(b)
    got = state_store.batches("r1")
    assert [(x.seq, x.status, x.rows_ok) for x in got] == [(1, "imported", 4), (2, "written", 0)]
    assert state_store.batch_progress() == {"r1": {"total": 2, "imported": 1, "failed": 0}}
    with pytest.raises(StateError):
        state_store.save_batch(Batch(request_id="no-such-job", seq=1))


def test_transaction_groups_writes_and_rolls_back_together(state_store: StateStore) -> None:
    with pytest.raises(RuntimeError):
        with state_store.transaction() as conn:
            state_store.save_send_job(SendJob(request_id="r1"), conn=conn)
            state_store.set_watermark("acct", "open", datetime(2026, 1, 1, tzinfo=UTC), conn=conn)
            raise RuntimeError("boom")
    assert state_store.get_send_job("r1") is None
    assert state_store.get_watermark("acct", "open") is None


def test_watermarks_are_aware_utc(state_store: StateStore) -> None:
    cst = timezone(timedelta(hours=-6))
    state_store.set_watermark("acct", "open", datetime(2026, 1, 1, 6, 0, tzinfo=cst))
    assert state_store.get_watermark("acct", "open") == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    state_store.set_watermark("acct", "open", datetime(2026, 1, 2, tzinfo=UTC))
    marks = state_store.watermarks()
    assert [(m.account, m.event_type, m.value) for m in marks] == [("acct", "open", datetime(2026, 1, 2, tzinfo=UTC))]
    with pytest.raises(StateError):
        state_store.set_watermark("acct", "open", datetime(2026, 1, 2))


def test_tracked_sends_and_counts(state_store: StateStore) -> None:
    state_store.add_tracked_send("acct", "1001", "r1", "c1", "Spring")
    state_store.add_tracked_send("acct", "1001", "r1", "c1", "Spring")  # idempotent
    state_store.add_tracked_send("other", "2002")
    assert [t.job_id for t in state_store.tracked_sends("acct")] == ["1001"]
    state_store.add_send_counts("1001", {"open": 3, "click": 1, "bounce": 0})
    state_store.add_send_counts("1001", {"open": 2})
    assert state_store.send_counts("1001") == {"open": 5, "click": 1}
    state_store.stop_tracking("1001", "older than 90 days")
    assert state_store.tracked_sends("acct") == []
    stopped = state_store.tracked_sends("acct", active_only=False)
    assert stopped[0].stopped_reason == "older than 90 days" and not stopped[0].active


def _keys(n: int, when: datetime, prefix: str = "1001:sub") -> list[bytes]:
    return [ordered_key(when, f"{prefix}{i}:open") for i in range(n)]


def test_mark_events_seen_returns_only_new_keys(state_store: StateStore, state_clock: FakeClock) -> None:
    keys = _keys(1200, state_clock() - timedelta(hours=2))
    assert state_store.mark_events_seen(keys[:700] + keys[:10]) == set(keys[:700])
    assert state_store.mark_events_seen(keys) == set(keys[700:])
    assert state_store.mark_events_seen(keys) == set()
    assert state_store.mark_events_seen([]) == set()
    never = ordered_key(state_clock(), "never")
    assert state_store.unseen_events(keys[:2] + [never]) == {never}
    newer = _keys(5, state_clock() + timedelta(hours=1))
    assert state_store.mark_events_seen(newer) == set(newer)
    state_clock.advance(86400)
    # pruning goes by the keys' own time: the 1,200 are older than the cut, the 5 are not
    assert state_store.prune_seen_events(state_clock() - timedelta(hours=24)) == 1200
    assert state_store.mark_events_seen(keys[:3] + newer) == set(keys[:3])


def test_ordered_keys_sort_by_time_and_tell_natural_keys_apart(state_clock: FakeClock) -> None:
    t = state_clock()
    assert ordered_key(t, "b") < ordered_key(t + timedelta(microseconds=1), "a")
    assert ordered_key(t, "a") != ordered_key(t, "b") and len(ordered_key(t, "a")) == 24
    assert ordered_key(t, "a") == ordered_key(t.astimezone(timezone(timedelta(hours=2))), "a")


def test_keys_of_before_migration_0005_still_count_as_seen(state_store: StateStore, state_clock: FakeClock) -> None:
    """Old keys (SHA-256 of the natural key in seen_events) are read until pruning empties that table."""
    from connector.state.schema import meta, seen_events

    old_time = state_clock() - timedelta(hours=3)
    with state_store.transaction() as conn:
        conn.execute(sa.insert(seen_events), [{"key_hash": legacy_key_hash("old-event"), "seen_at": old_time}])
        conn.execute(sa.insert(meta), [{"key": LEGACY_META, "value": state_clock().isoformat()}])
    assert state_store.legacy_seen_before() == state_clock()
    old, other = ordered_key(old_time, "old-event"), ordered_key(old_time, "other-event")
    legacy = {old: "old-event", other: "other-event"}
    assert state_store.unseen_events([old, other], legacy=legacy) == {other}
    assert state_store.unseen_events([old, other]) == {old, other}  # not named as legacy: not looked for
    assert state_store.mark_events_seen([old, other], legacy=legacy) == {other}
    state_clock.advance(86400)
    assert state_store.prune_seen_events(state_clock() - timedelta(hours=1)) == 2  # one new key, one old
    assert state_store.legacy_seen_before() is None


def test_upgrade_to_0005_keeps_the_old_keys_seen(state_url: str, state_clock: FakeClock) -> None:
    """An upgrade over a database with old seen_events rows: those events stay seen, new ones are new."""
    from connector.state.schema import seen_events

    store = StateStore(state_url, holder="me", clock=state_clock)
    try:
        assert store.migrate("0004") == "0004"
        old_time = state_clock() - timedelta(hours=2)
        with store.transaction() as conn:
            conn.execute(sa.insert(seen_events), [{"key_hash": legacy_key_hash("e1"), "seen_at": old_time}])
        store.migrate()
        before = store.legacy_seen_before()
        assert before is not None and before > old_time
        e1, e2 = ordered_key(old_time, "e1"), ordered_key(old_time, "e2")
        assert store.mark_events_seen([e1, e2], legacy={e1: "e1", e2: "e2"}) == {e2}
    finally:
        store.close()


def test_first_keys_wait_then_count_once_when_merged(state_store: StateStore, state_clock: FakeClock) -> None:
    added = state_clock() - timedelta(days=1)
    a, b, c = (ordered_key(added, f"uq:{k}") for k in "abc")
    state_store.mark_events_seen([a])  # a was merged by an earlier run
    state_store.add_firsts_pending("1001", "unique_opens", [a, b])
    state_store.add_firsts_pending("1001", "unique_opens", [b, c])  # b pending twice: one first open
    state_store.add_firsts_pending("2002", "unique_opens", [ordered_key(added, "uq:d")])
    state_store.add_firsts_pending("1001", "unique_clicks", [a])  # another counter: not merged here
    assert state_store.send_counts("1001") == {}
    assert state_store.merge_firsts_pending("unique_opens") == {"1001": 2, "2002": 1}
    assert state_store.send_counts("1001") == {"unique_opens": 2} and state_store.send_counts("2002") == {"unique_opens": 1}
    assert state_store.merge_firsts_pending("unique_opens") == {}  # merged once
    assert state_store.merge_firsts_pending("unique_clicks") == {"1001": 0}  # a is seen already
    assert state_store.unseen_events([a, b, c]) == set()


def test_first_keys_of_before_migration_0005_are_not_counted_again(state_store: StateStore, state_clock: FakeClock) -> None:
    from connector.state.schema import seen_events

    with state_store.transaction() as conn:
        conn.execute(sa.insert(seen_events), [{"key_hash": legacy_key_hash("uq:old"), "seen_at": state_clock()}])
    added = state_clock() - timedelta(days=1)
    old, new = ordered_key(added, "uq:old"), ordered_key(added, "uq:new")
    state_store.add_firsts_pending("1001", "unique_clicks", [old, new], legacy={old: "uq:old", new: "uq:new"})
    assert state_store.merge_firsts_pending("unique_clicks") == {"1001": 1}


def test_seen_keys_roll_back_with_the_transaction(state_store: StateStore, state_clock: FakeClock) -> None:
    k1 = ordered_key(state_clock(), "k1")
    with pytest.raises(RuntimeError):
        with state_store.transaction() as conn:
            assert state_store.mark_events_seen([k1], conn) == {k1}
            raise RuntimeError("crash before the watermark moved")
    assert state_store.mark_events_seen([k1]) == {k1}


def test_quarantine_and_change_log(state_store: StateStore) -> None:
    rows = (
        QuarantineRow("r1", "contact", f"id{i}", f"bad{i}", "invalid_email", "no @") for i in range(1500)
    )
    assert state_store.quarantine(rows) == 1500
    got = state_store.quarantined("r1", limit=2)
    assert [(q.record_id, q.reason, q.table) for q in got] == [("id0", "invalid_email", "contact"), ("id1", "invalid_email", "contact")]
    assert state_store.quarantine_counts("r1") == {"invalid_email": 1500}
    state_store.log_changes([ChangeRow("contact", "id1", "donotbulkemail", False, True, "tracking:1001", "run1")])
    state_store.log_changes([{"table": "contact", "record_id": "id1", "field": "cesp_lastbouncetype", "new_value": "hard"}])
    changes = state_store.changes("contact", "id1")
    assert [(c.field, c.old_value, c.new_value) for c in changes] == [
        ("donotbulkemail", "False", "True"),
        ("cesp_lastbouncetype", None, "hard"),
    ]


def test_step_runs_summary(state_store: StateStore, state_clock: FakeClock) -> None:
    state_store.start_step_run("sends", "run1")
    state_clock.advance(5)
    state_store.finish_step_run("run1", False, 0, "CRM unreachable", {"peer": "crm"})
    state_clock.advance(60)
    state_store.start_step_run("sends", "run2")
    state_store.finish_step_run("run2", True, 3, "")
    state_store.start_step_run("tracking", "run3")
    summary = state_store.step_runs_summary()
    assert summary["sends"]["last"].run_id == "run2" and summary["sends"]["last"].outcome == "ok"
    assert summary["sends"]["last_error"].message == "CRM unreachable"
    assert summary["sends"]["last_error"].details == {"peer": "crm"}
    assert summary["tracking"]["last"].outcome == "running"
    assert state_store.interrupt_step_runs() == 1
    assert state_store.step_runs_summary()["tracking"]["last"].outcome == "interrupted"


def test_meta(state_store: StateStore) -> None:
    assert state_store.get_meta("x") is None
    state_store.set_meta("x", "1")
    state_store.set_meta("x", "2")
    assert state_store.get_meta("x") == "2"


# -- leases ------------------------------------------------------------------


@pytest.fixture
def other_store(state_store: StateStore, state_clock: FakeClock):  # noqa: ANN201
    store = StateStore(state_store.url, holder="them", clock=state_clock)
    yield store
    store.close()


def test_lease_claim_extend_release(state_store: StateStore, other_store: StateStore, state_clock: FakeClock) -> None:
    assert state_store.acquire_lease("send:r1", 60)
    assert state_store.acquire_lease("send:r1", 60)  # re-entrant for the holder
    assert not other_store.acquire_lease("send:r1", 60)
    assert other_store.lease_holder("send:r1") == "me"
    state_clock.advance(50)
    assert state_store.extend_lease("send:r1", 60)
    state_clock.advance(50)
    assert not other_store.acquire_lease("send:r1", 60)  # extended: still ours
    assert not other_store.extend_lease("send:r1", 60)
    other_store.release_lease("send:r1")  # not theirs: no effect
    assert state_store.lease_holder("send:r1") == "me"
    state_store.release_lease("send:r1")
    assert other_store.acquire_lease("send:r1", 60)


def test_expired_lease_is_stolen_and_old_holder_cannot_extend(
    state_store: StateStore, other_store: StateStore, state_clock: FakeClock
) -> None:
    assert state_store.acquire_lease("send:r1", 30)
    state_clock.advance(31)
    assert state_store.lease_holder("send:r1") is None
    assert other_store.acquire_lease("send:r1", 30)
    assert not state_store.extend_lease("send:r1", 30)
    assert not state_store.acquire_lease("send:r1", 30)


def test_reap_expired_leases(state_store: StateStore, other_store: StateStore, state_clock: FakeClock) -> None:
    state_store.acquire_lease("a", 10)
    other_store.acquire_lease("b", 100)
    other_store.acquire_lease("c", 5)
    state_clock.advance(20)
    assert state_store.reap_expired_leases() == ["a", "c"]
    assert [lease["resource"] for lease in state_store.leases()] == ["b"]
    assert state_store.reap_expired_leases() == []


def test_lease_in_a_caller_transaction(state_store: StateStore) -> None:
    with state_store.transaction() as conn:
        assert state_store.acquire_lease("send:r1", 60, conn=conn)
        state_store.save_send_job(SendJob(request_id="r1"), conn=conn)
    assert state_store.lease_holder("send:r1") == "me"


def test_many_threads_race_for_one_lease_and_one_wins(state_url: str) -> None:
    stores = [StateStore(state_url, holder=f"h{i}") for i in range(6)]
    stores[0].migrate()
    barrier = threading.Barrier(len(stores))
    results: dict[str, bool] = {}

    def claim(store: StateStore) -> None:
        barrier.wait()
        results[store.holder] = store.acquire_lease("send:hot", 60)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sum(results.values()) == 1, results


def test_bad_url_is_a_state_error() -> None:
    with pytest.raises(StateError, match=r"\[state\] url"):
        StateStore("nosuchdriver://x/y")


def test_two_instances_migrating_at_once_both_succeed(state_url: str) -> None:
    stores = [StateStore(state_url, holder=f"m{i}") for i in range(3)]
    barrier = threading.Barrier(len(stores))
    results: list[object] = []

    def migrate(store: StateStore) -> None:
        barrier.wait()
        try:
            results.append(store.migrate())
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            results.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert results == [HEAD] * 3


def test_health_of_an_unreachable_server_never_raises() -> None:
    with StateStore("postgresql://postgres@127.0.0.1:1/nothing", timeout_seconds=2) as store:
        health = store.health()
    assert health["reachable"] is False and health["error"]
    assert health["backend"] == "postgresql"


def test_generic_sql_paths_without_on_conflict(state_store: StateStore, other_store: StateStore,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The code paths for databases without INSERT ... ON CONFLICT (SQL Server)."""
    import connector.state.engine as engine_mod
    import connector.state.leases as leases_mod
    import connector.state.tracking as tracking_mod

    for module in (engine_mod, leases_mod, tracking_mod):
        monkeypatch.setattr(module, "dialect_insert", lambda conn, table: None)
    assert state_store.acquire_lease("x", 60)
    assert not other_store.acquire_lease("x", 60)
    state_store.save_send_job(SendJob(request_id="r1"))
    state_store.save_send_job(SendJob(request_id="r1", status="sent"))
    assert state_store.get_send_job("r1").status == "sent"
    state_store.add_send_counts("1", {"open": 2})
    state_store.add_send_counts("1", {"open": 3})
    assert state_store.send_counts("1") == {"open": 5}
    a, b, c = (ordered_key(datetime(2026, 1, 1, tzinfo=timezone.utc), k) for k in "abc")
    assert state_store.mark_events_seen([a, b]) == {a, b}
    assert state_store.mark_events_seen([b, c]) == {c}
    state_store.add_firsts_pending("1", "unique_opens", [a, ordered_key(datetime(2026, 1, 1, tzinfo=timezone.utc), "d")])
    assert state_store.merge_firsts_pending("unique_opens") == {"1": 1}


def test_a_bad_url_error_never_shows_the_password() -> None:
    with pytest.raises(StateError) as info:
        StateStore("nosuchdriver://user:hunter2@db/x")
    assert "hunter2" not in str(info.value) and "user:***@db" in str(info.value)
