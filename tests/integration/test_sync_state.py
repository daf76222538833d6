"""The sync step's state: shadow rows, checkpoints with them in one transaction, the change log read back."""

from __future__ import annotations

from datetime import timedelta

from connector.state.records import ChangeRow
from connector.state.store import StateStore
from tests.fixtures.state import FakeClock


def test_shadows_upsert_read_and_drop(state_store: StateStore) -> None:
    assert state_store.put_shadows("contact", [("c1", "firstname", "Anna", "anna"),
                                               ("c1", "lastname", "Berg", "Berg"), ("c2", "firstname", "", "")],
                                   "run1") == 3
    state_store.put_shadows("contact", [("c1", "firstname", "Anne", "anne")], "run2")
    state_store.put_shadows("lead", [("l1", "firstname", "Lea", "Lea")], "run2")
    assert state_store.shadows("contact", ["c1", "c3"]) == {
        "c1": {"firstname": ("Anne", "anne"), "lastname": ("Berg", "Berg")}}
    assert state_store.shadow_tables(["c1", "l1", "x"]) == {"c1": "contact", "l1": "lead"}
    assert state_store.shadow_count("contact") == 2
    assert state_store.drop_shadows("contact", ["c1"]) == 2
    assert state_store.shadows("contact", ["c1"]) == {}


def test_checkpoint_commits_with_its_shadows_or_not_at_all(state_store: StateStore) -> None:
    try:
        with state_store.transaction() as conn:
            state_store.put_shadows("contact", [("c1", "firstname", "Anna", "Anna")], "run1", conn=conn)
            state_store.set_meta("sync:delta:contact", "link-2", conn=conn)
            raise RuntimeError("killed between the two")
    except RuntimeError:
        pass
    assert state_store.get_meta("sync:delta:contact") is None and state_store.shadows("contact", ["c1"]) == {}


def test_change_log_with_direction_and_rule_read_since_and_pruned(state_store: StateStore,
                                                                   state_clock: FakeClock) -> None:
    state_store.log_changes([ChangeRow("contact", "c1", "firstname", "Anna", "Anne", "sync", "run1",
                                       direction="to_esp", rule="sync.contact:12")])
    start = state_clock.advance(3600)
    state_store.log_changes([{"table": "contact", "record_id": "c2", "field": "address1_country", "old_value": "AT",
                              "new_value": "DE", "direction": "to_crm", "rule": "sync.contact:13", "run_id": "run2"}])
    rows = list(state_store.iter_changes_logged(page=1))
    assert [(r.record_id, r.direction, r.rule) for r in rows] == [("c1", "to_esp", "sync.contact:12"),
                                                                  ("c2", "to_crm", "sync.contact:13")]
    assert [r.record_id for r in state_store.iter_changes_logged(since=start)] == ["c2"]
    assert [r.record_id for r in state_store.iter_changes_logged(record_id="c1")] == ["c1"]
    assert state_store.prune_changes(start - timedelta(seconds=1)) == 1
    assert [r.record_id for r in state_store.iter_changes_logged()] == ["c2"]
