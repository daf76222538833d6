"""KPI state on SQLite and PostgreSQL: written values, seen marks, vanished keys in key order."""

from __future__ import annotations

from connector.state.kpi import KpiWritten, kpi_key_hash
from connector.state.store import StateStore


def _written(source: str, customer: str, kpi: str, value_hash: str = "h1") -> KpiWritten:
    return KpiWritten(kpi_key_hash(source, customer, kpi), customer, kpi, f"id-{customer}", value_hash)


def test_written_seen_vanished_and_deactivated(state_store: StateStore) -> None:
    rows = [_written("erp", f"c{i}@example.com", kpi) for i in range(7) for kpi in ("revenue", "orders")]
    assert state_store.record_kpis_written("erp", rows, "run1") == 14
    state_store.record_kpis_written("web", [_written("web", "c0@example.com", "visits")], "run1")
    again = _written("erp", "c0@example.com", "revenue", "h2")
    with state_store.transaction() as conn:  # a changed value replaces the row, in a caller's transaction
        state_store.record_kpis_written("erp", [again], "run2", conn=conn)
        state_store.mark_kpis_seen([r.key_hash for r in rows[1:10]], "run2", conn=conn)
    known = state_store.known_kpis([again.key_hash, rows[1].key_hash, "nope"])
    assert known[again.key_hash].value_hash == "h2" and known[again.key_hash].seen_run == "run2"
    assert known[rows[1].key_hash].seen_run == "run2" and "nope" not in known

    vanished, after = [], ""
    while batch := state_store.vanished_kpis("erp", "run2", after=after, limit=2):
        vanished += batch
        after = batch[-1].key_hash
    assert sorted(v.key_hash for v in vanished) == sorted(r.key_hash for r in rows[10:])
    assert [v.key_hash for v in vanished] == sorted(v.key_hash for v in vanished)  # key order, resumable
    state_store.deactivate_kpis([v.key_hash for v in vanished])
    assert state_store.vanished_kpis("erp", "run2") == []
    assert state_store.kpi_counts("erp") == {"active": 10, "inactive": 4}
    assert state_store.kpi_counts("web") == {"active": 1, "inactive": 0}
