"""The KPI step end to end: a PostgreSQL source aggregated by its query, the Dataverse sandbox,
the state database. Differential, unmatched rows reported, removals, dry run, secrets."""

from __future__ import annotations

import pytest

from connector.runtime import AdapterPool
from connector.state.store import StateStore
from connector.steps.kpi import run_kpi
from tests.fixtures.kpi import SOURCE_PASSWORD, kpi_config

pytestmark = pytest.mark.postgres


@pytest.fixture
def kpi_env(kpi_org, kpi_source, crm_ca, tmp_path):
    sandbox, _ = kpi_org
    made = []

    def run(**kw):
        dry = kw.pop("dry_run", False)
        full = kw.pop("full", False)
        config = kpi_config(sandbox, crm_ca.ca_file, tmp_path, kpi_source, **kw)
        store = StateStore.from_config(config)
        store.migrate()
        adapters = AdapterPool(config)
        made.append((store, adapters))
        return run_kpi(adapters.step_context(store), dry_run=dry, full=full), store

    yield sandbox, kpi_source, run
    for store, adapters in made:
        adapters.close_all()
        store.close()


def _kpis(sandbox) -> dict[tuple[str, str], dict]:
    rows = {}
    for row in sandbox.store.rows("cesp_kpis"):
        key = (row["_cesp_contactid_value"], row["cesp_name"])
        assert key not in rows, f"two CRM rows for {key}"
        rows[key] = row
    return rows


def test_load_writes_only_what_changed_and_deactivates_what_left(kpi_env) -> None:
    sandbox, source, run = kpi_env
    ada = sandbox.store.insert("contacts", {"firstname": "Ada", "emailaddress1": "ada@example.com"})
    bob = sandbox.store.insert("contacts", {"firstname": "Bob", "emailaddress1": "Bob@Example.com"})
    source.sell(("ada@example.com", "books", 10), ("ada@example.com", "music", 7), ("bob@example.com", "books", 1),
                ("nobody@example.com", "books", 3))

    outcome, store = run()
    assert outcome.ok, outcome.message
    rows = _kpis(sandbox)
    assert outcome.details["written"] == 5 and outcome.details["read"] == 7
    assert float(rows[(ada, "orders_music")]["cesp_value"]) == 1
    assert rows[(bob, "revenue_6m")]["cesp_value"] == 1 and rows[(bob, "revenue_6m")]["cesp_period"] == "6 months"
    assert rows[(bob, "revenue_6m")]["cesp_source"] == "erp"
    assert outcome.details["unmatched"] == 2 and outcome.details["unmatched_sample"] == ["nobody@example.com"]
    assert "nobody@example.com" in outcome.message
    quarantined = store.quarantined("kpi:erp")
    assert {(q.reason, q.email) for q in quarantined} >= {("unmatched", "nobody@example.com")}

    again, _ = run()  # nothing changed: nothing written
    assert again.ok and again.details["written"] == 0 and again.details["unchanged"] == 5
    assert len(store.quarantined("kpi:erp")) == len(quarantined)  # this run's reports, not piled up

    source.sell(("bob@example.com", "books", 2))
    source.execute("delete from {s}.sales where category = 'music'")
    changed, _ = run()
    assert changed.ok, changed.message
    assert changed.details["written"] == 3 and changed.details["removed"] == 1  # bob's two, ada's revenue; music
    rows = _kpis(sandbox)
    assert rows[(bob, "revenue_6m")]["cesp_value"] == 3 and rows[(bob, "orders_books")]["cesp_value"] == 2
    assert rows[(ada, "revenue_6m")]["cesp_value"] == 10
    assert rows[(ada, "orders_music")]["statecode"] == 1 and rows[(ada, "revenue_6m")]["statecode"] == 0
    assert store.kpi_counts("erp") == {"active": 4, "inactive": 1}

    source.sell(("ada@example.com", "music", 1))
    back, _ = run()
    assert back.details["written"] == 2  # orders_music again (active), revenue changed
    assert _kpis(sandbox)[(ada, "orders_music")]["statecode"] == 0

    full, _ = run(full=True)
    assert full.details["written"] == 5 and full.details["unchanged"] == 0
    assert len(_kpis(sandbox)) == 5


def test_dry_run_writes_nothing_and_says_what_it_would(kpi_env) -> None:
    sandbox, source, run = kpi_env
    sandbox.store.insert("contacts", {"emailaddress1": "ada@example.com"})
    source.sell(("ada@example.com", "books", 10), ("zed@example.com", "books", 1))
    outcome, store = run(dry_run=True)
    assert outcome.ok and outcome.details["written"] == 2 and outcome.details["unmatched"] == 2
    assert outcome.message.startswith("4 source rows: 2 would write")
    assert _kpis(sandbox) == {} and store.kpi_counts("erp") == {"active": 0, "inactive": 0}
    assert store.quarantined("kpi:erp") == []


def test_bad_rows_are_reported_by_reason_and_the_rest_goes_on(kpi_env) -> None:
    sandbox, source, run = kpi_env
    ada = sandbox.store.insert("contacts", {"emailaddress1": "ada@example.com"})
    sandbox.store.insert("contacts", {"emailaddress1": "twin@example.com"})
    sandbox.store.insert("contacts", {"emailaddress1": "twin@example.com"})
    s = source.schema
    query = (f"select 'ada@example.com' as customer_key, 'a:b' as kpi, 1 as value union all "
             f"select 'ada@example.com', 'ok', 2 union all select 'ada@example.com', 'huge', 1e12 union all "
             f"select ' ADA@example.com', 'ok', 3 union all "
             f"select null, 'ok', 1 union all select 'twin@example.com', 'ok', 1 union all "
             f"select email, 'n', count(*) from {s}.sales group by email")
    outcome, store = run(query=query)
    assert outcome.ok, outcome.message
    assert outcome.details["by_reason"] == {"invalid_kpi_name": 1, "invalid_value": 1, "invalid_customer_key": 1,
                                            "ambiguous": 1, "duplicate": 1}
    rows = _kpis(sandbox)
    assert list(rows) == [(ada, "ok")] and rows[(ada, "ok")]["cesp_value"] in (2, 3)  # the first one of the two
    reasons = {q.reason: q.detail for q in store.quarantined("kpi:erp")}
    assert "2 active contact records have emailaddress1 = 'twin@example.com'" in reasons["ambiguous"]


def test_an_empty_source_removes_nothing_and_a_refused_query_hides_the_password(kpi_env, capsys) -> None:
    sandbox, source, run = kpi_env
    sandbox.store.insert("contacts", {"emailaddress1": "ada@example.com"})
    source.sell(("ada@example.com", "books", 10))
    assert run()[0].ok
    source.execute("delete from {s}.sales")
    empty, store = run()
    assert empty.ok and empty.details["removed"] == 0 and store.kpi_counts("erp")["active"] == 2

    from connector.errors import PermanentPeerError

    with pytest.raises(PermanentPeerError) as err:
        run(query=f"select * from {source.schema}.no_such_table")
    assert "refused the [kpi] query" in str(err.value) and SOURCE_PASSWORD not in str(err.value)
    assert "***" in str(err.value)
    with pytest.raises(PermanentPeerError, match="returns no column customer_key"):
        run(query="select 1 as x")
    captured = capsys.readouterr()
    assert SOURCE_PASSWORD not in captured.out + captured.err


def test_the_step_waits_for_the_kpi_key(kpi_env) -> None:
    sandbox, source, run = kpi_env
    key = sandbox.store.schema.entities["cesp_kpi"].keys["cesp_kpi_contact_key"]
    key.status = "InProgress"
    outcome, _ = run()
    assert not outcome.ok and "cesp_kpi.cesp_kpi_contact_key" in outcome.message and "InProgress" in outcome.message


def test_check_config_online_asks_the_source_and_crm(kpi_org, kpi_source, crm_ca, tmp_path) -> None:
    from connector.commands.check_online import online_checks

    sandbox, _ = kpi_org
    good = kpi_config(sandbox, crm_ca.ca_file, tmp_path, kpi_source)
    checks = {c.what: c for c in online_checks(good)}
    assert checks["the query answers with customer_key, kpi, value"].ok
    assert checks["KPI customers' column and the KPI table's key"].ok
    bad = kpi_config(sandbox, crm_ca.ca_file, tmp_path, kpi_source, match_column="no_such_column",
                     customer_table="account", query="select 1 as x")
    checks = {c.what: c for c in online_checks(bad)}
    crm = " ".join(checks["KPI customers' column and the KPI table's key"].problems)
    assert "[kpi] match_column: CRM table 'account' has no column 'no_such_column'" in crm
    assert "cesp_kpi.cesp_kpi_account_key is Missing" in crm and "connector crm-setup" in crm
    query = " ".join(checks["the query answers with customer_key, kpi, value"].problems)
    assert "returns no column customer_key" in query and SOURCE_PASSWORD not in query


def test_status_shows_the_kpi_rows_and_what_the_last_load_reported(kpi_env, kpi_org, kpi_source, crm_ca,
                                                                   tmp_path) -> None:
    from connector.commands.status import collect_status, render_text

    sandbox, source, run = kpi_env
    sandbox.store.insert("contacts", {"emailaddress1": "ada@example.com"})
    source.sell(("ada@example.com", "books", 10), ("zed@example.com", "books", 1))
    outcome, store = run()
    assert outcome.ok
    config = kpi_config(sandbox, crm_ca.ca_file, tmp_path, source)
    report = collect_status(config, store)
    assert report["kpi"] == {"source": "erp", "active": 2, "inactive": 0, "reported": {"unmatched": 2}}
    text = render_text(report)
    assert "KPIs (erp): 2 active row(s) in CRM, 0 deactivated; rows the last load reported: 2 unmatched" in text
