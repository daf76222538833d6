"""The SQL staging table: migration, exactly-once bulk inserts, every dialect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from connector.config import Config, ServiceSettings, StagingSettings
from connector.models import CrmTable, EventType, RecordRef, TrackingEvent
from connector.staging.schema import natural_key, staging_table
from connector.staging.sql import (
    SqlStagingStore,
    migrate_engine,
    mssql_insert,
    staging_ddl,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ev(sub: str = "s1", kind: EventType = EventType.OPEN, t: datetime = T0, url: str = "", job: str = "42") -> TrackingEvent:
    return TrackingEvent(event_type=kind, job_id=job, subscriber_key=sub, event_time=t, url=url)


@pytest.fixture
def store(tmp_path: Path):
    s = SqlStagingStore(f"sqlite:///{tmp_path / 'staging.db'}", "events")
    s.migrate()
    yield s
    s.close()


def test_from_config_creates_default_sqlite_and_table(tmp_path: Path) -> None:
    config = Config(service=ServiceSettings(data_dir=tmp_path / "data"), staging=StagingSettings(table="trk"))
    store = SqlStagingStore.from_config(config)
    try:
        assert (tmp_path / "data" / "staging.db").exists()
        insp = sa.inspect(store.engine)
        assert "trk" in insp.get_table_names()
        assert "cesp_staging_version" in insp.get_table_names()
        assert store.write_events([ev()]) == 1
    finally:
        store.close()


def test_sqlite_staging_runs_in_wal_mode(store: SqlStagingStore) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_migration_matches_the_table_definition(store: SqlStagingStore) -> None:
    insp = sa.inspect(store.engine)
    migrated = {c["name"]: c for c in insp.get_columns("events")}
    expected = staging_table("events")
    assert list(migrated) == [c.name for c in expected.columns]
    for col in expected.columns:
        assert migrated[col.name]["nullable"] == col.nullable or col.primary_key, col.name
    uniques = insp.get_unique_constraints("events")
    assert [u["column_names"] for u in uniques] == [
        ["job_id", "event_type", "event_time_utc", "subscriber_key", "url_key"]
    ]
    # running it again is a no-op
    migrate_engine(store.engine, "events")


def test_same_event_twice_lands_once(store: SqlStagingStore) -> None:
    assert store.write_events([ev(), ev()]) == 1  # duplicate inside one call
    assert store.write_events([ev()]) == 0  # delivered again later
    assert store.count() == 1


def test_two_clicks_same_second_different_links_are_two_rows(store: SqlStagingStore) -> None:
    a = ev(kind=EventType.CLICK, url="https://x.test/a")
    b = ev(kind=EventType.CLICK, url="https://x.test/b")
    assert store.write_events([a, b]) == 2
    assert store.write_events([b, a]) == 0
    assert sorted(r["url"] for r in store.rows()) == ["https://x.test/a", "https://x.test/b"]


def test_natural_key_distinguishes_every_part(store: SqlStagingStore) -> None:
    events = [
        ev(),
        ev(sub="s2"),
        ev(job="43"),
        ev(kind=EventType.CLICK),
        ev(t=T0 + timedelta(milliseconds=1)),
        ev(url="https://x.test/"),
    ]
    assert store.write_events(events) == 6


def test_event_time_stored_in_utc_whatever_the_offset(store: SqlStagingStore) -> None:
    cst = timezone(timedelta(hours=-6))
    same = ev(t=T0.astimezone(cst))
    assert natural_key(same) == natural_key(ev())
    store.write_events([ev()])
    assert store.write_events([same]) == 0
    assert store.rows()[0]["event_time_utc"] == datetime(2026, 3, 1, 12, 0, 0)


def test_all_fields_and_crm_record_are_stored(store: SqlStagingStore) -> None:
    bounce = TrackingEvent(
        event_type=EventType.BOUNCE, job_id="7", subscriber_key="abc", event_time=T0, email="a@x.test",
        list_id="L1", batch_id="3", bounce_category="Hard bounce", bounce_type="immediate",
        smtp_code="550", smtp_reason="5.1.1 user unknown", reason="",
    )
    click = TrackingEvent(event_type=EventType.CLICK, job_id="7", subscriber_key="def", event_time=T0,
                          url="https://x.test/" + "p" * 3000, url_id="99")
    refs = {"abc": RecordRef(CrmTable.CONTACT, "abc"), "def": "def-id"}
    assert store.write_events([bounce, click], refs) == 2
    rows = {r["subscriber_key"]: r for r in store.rows()}
    assert rows["abc"]["crm_table"] == "contact" and rows["abc"]["crm_record_id"] == "abc"
    assert rows["abc"]["bounce_category"] == "Hard bounce" and rows["abc"]["smtp_code"] == "550"
    assert rows["abc"]["smtp_reason"] == "5.1.1 user unknown" and rows["abc"]["list_id"] == "L1"
    assert rows["def"]["crm_record_id"] == "def-id" and rows["def"]["crm_table"] is None
    assert len(rows["def"]["url"]) > 3000 and rows["def"]["url_id"] == "99"


def test_bulk_page_of_2500(store: SqlStagingStore) -> None:
    page = [ev(sub=f"s{i}", t=T0 + timedelta(seconds=i % 60)) for i in range(2500)]
    assert store.write_events(page) == 2500
    assert store.write_events(page[:1000] + [ev(sub="new")]) == 1
    assert store.count() == 2501


def test_schema_name_on_sqlite_attached_database(tmp_path: Path) -> None:
    store = SqlStagingStore(f"sqlite:///{tmp_path / 'main.db'}", "events", "main")
    try:
        store.migrate()
        assert store.write_events([ev()]) == 1
    finally:
        store.close()


def test_unreachable_database_is_a_transient_peer_error(tmp_path: Path) -> None:
    from connector.errors import TransientPeerError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SqlStagingStore(f"sqlite:///{blocker}/staging.db", "events")
    try:
        with pytest.raises(TransientPeerError, match="staging database"):
            store.write_events([ev()])
    finally:
        store.close()


def test_mssql_create_table_ddl_and_insert_compile() -> None:
    ddl = staging_ddl("mssql+pyodbc://u:p@dsn", "connector_tracking_events", "dbo")
    assert "CREATE TABLE dbo.connector_tracking_events" in ddl
    assert "event_time_utc DATETIME2(3) NOT NULL" in ddl
    assert "url NVARCHAR(max)" in ddl
    assert ("CONSTRAINT uq_connector_tracking_events_natural_key UNIQUE "
            "(job_id, event_type, event_time_utc, subscriber_key, url_key)") in ddl
    assert "cesp_staging_version" in ddl
    table = staging_table("connector_tracking_events", "dbo")
    rows = [
        {c.name: None for c in table.columns if c.name != "id"}
        | {"url_key": "", "job_id": "1", "subscriber_key": f"s{i}", "event_type": "open",
           "event_time_utc": T0.replace(tzinfo=None), "loaded_at": T0.replace(tzinfo=None)}
        for i in range(3)
    ]
    sql = str(mssql_insert(table, rows).compile(dialect=mssql.dialect()))
    assert sql.startswith("INSERT INTO dbo.connector_tracking_events (job_id, subscriber_key")
    assert "FROM (VALUES" in sql
    assert "WITH (UPDLOCK, HOLDLOCK)" in sql
    assert "WHERE NOT (EXISTS (SELECT 1" in sql


@pytest.mark.postgres
def test_postgres_migrate_and_insert_once(pg_url: str) -> None:
    store = SqlStagingStore(pg_url, "events")
    try:
        store.migrate()
        a = ev(kind=EventType.CLICK, url="https://x.test/a")
        b = ev(kind=EventType.CLICK, url="https://x.test/b")
        assert store.write_events([a, b, a]) == 2
        assert store.write_events([a, b]) == 0
        assert store.count() == 2
        assert store.rows()[0]["event_time_utc"] == datetime(2026, 3, 1, 12, 0, 0)
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_schema_name(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create schema crmstage"))
    engine.dispose()
    store = SqlStagingStore(pg_url, "events", "crmstage")
    try:
        store.migrate()
        assert store.write_events([ev()]) == 1
        assert "events" in sa.inspect(store.engine).get_table_names(schema="crmstage")
    finally:
        store.close()


def test_mssql_inserts_stay_under_the_parameter_limit(tmp_path: Path) -> None:
    """The SQL Server path chunks a page so no statement has more than 2,100 parameters."""
    from connector.staging import sql as staging_sql

    store = SqlStagingStore(f"sqlite:///{tmp_path / 's.db'}", "events", "dbo")
    store.dialect = "mssql"  # drive the SQL Server branch against a recording connection

    class Recorder:
        def __init__(self) -> None:
            self.params: list[int] = []

        def execute(self, stmt):
            compiled = stmt.compile(dialect=mssql.dialect())
            self.params.append(len(compiled.params))
            return type("R", (), {"rowcount": 1})()

    page = [ev(sub=f"s{i}", t=T0 + timedelta(seconds=i)) for i in range(2500)]
    rows = [staging_sql._values(e, None, T0.replace(tzinfo=None), False) for e in page]
    conn = Recorder()
    try:
        statements = store._insert(conn, rows)
    finally:
        store.close()
    per_statement = 2000 // len(staging_sql.NAMES)
    assert statements == len(conn.params) == -(-2500 // per_statement)
    assert max(conn.params) < 2100
