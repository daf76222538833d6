"""kill -9 of a real ``connector kpi`` at the points between CRM and the state database; rerun.

Invariant (DESIGN.md 1, 5): a KPI row exists once per customer and KPI whatever point the
process dies at (the writes are upserts by the alternate key customer + KPI name, and the
state is committed only after CRM confirmed them), and the run after the crash brings CRM
to exactly the source's values; the one after that writes nothing. The CRM sandbox and the
PostgreSQL source live in the test process and outlive the killed connector.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.kpi import SOURCE_PASSWORD

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 24

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def world(kpi_org, kpi_source, tmp_path):
    sandbox, _ = kpi_org
    for i in range(CUSTOMERS):
        sandbox.store.insert("contacts", {"firstname": f"C{i}", "emailaddress1": f"c{i}@example.com"})
    kpi_source.sell(*[(f"c{i}@example.com", "books", 10 + i) for i in range(CUSTOMERS)],
                    *[(f"c{i}@example.com", "music", 1) for i in range(0, CUSTOMERS, 2)])
    (tmp_path / "kpi.sql").write_text(kpi_source.query)
    ini = tmp_path / "service.ini"
    ini.write_text(f"""
[service]
data_dir = {tmp_path / 'var'}
[logging]
folder = {tmp_path / 'log'}
console = off
level = DEBUG
[state]
url = sqlite:///{tmp_path / 'state.db'}
lease_seconds = 30
[crm]
url = {sandbox.url}
authority = {sandbox.authority}
client_id = {sandbox.client_id}
ca_bundle = {sandbox.ca_file}
batch_size = 4
[kpi]
query_file = kpi.sql
match_column = emailaddress1
source_name = erp
slice_rows = 10
""")
    os.chmod(ini, 0o600)
    env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_CRASH_AT"}
    env.update({"CONNECTOR_CRM_CLIENT_SECRET": sandbox.client_secret, "CONNECTOR_KPI_SOURCE_URL": kpi_source.url,
                "PYTHONPATH": str(ROOT)})

    def run(crash: str = "", *extra: str) -> subprocess.CompletedProcess:
        child_env = {**env, **({"CONNECTOR_CRASH_AT": crash} if crash else {})}
        return subprocess.run([sys.executable, "-m", "connector", "kpi", "-c", str(ini), *extra], cwd=ROOT,
                              env=child_env, capture_output=True, text=True, timeout=180)

    yield sandbox, kpi_source, run, tmp_path


def _kpis(sandbox) -> dict[tuple[str, str], tuple[float | None, int]]:
    rows: dict[tuple[str, str], tuple[float | None, int]] = {}
    for row in sandbox.store.rows("cesp_kpis"):
        key = (row["_cesp_contactid_value"], row["cesp_name"])
        assert key not in rows, f"two CRM rows for {key}"
        rows[key] = (row["cesp_value"], row["statecode"])
    return rows


def _expected(sandbox, music: bool = True) -> dict[tuple[str, str], tuple[float, int]]:
    ids = {row["emailaddress1"]: row["contactid"] for row in sandbox.store.rows("contacts")}
    out: dict[tuple[str, str], tuple[float, int]] = {}
    for i in range(CUSTOMERS):
        cid = ids[f"c{i}@example.com"]
        has_music = i % 2 == 0
        out[(cid, "revenue_6m")] = (10 + i + (1 if has_music and music else 0), 0)
        out[(cid, "orders_books")] = (1, 0)
        if has_music:
            out[(cid, "orders_music")] = (1, 0 if music else 1)
    return out


@pytest.mark.parametrize("crash_at", ["kpi_after_crm_write:3", "kpi_after_slice:2"])
def test_kill_9_during_the_load_neither_doubles_nor_loses_a_kpi(world, crash_at: str) -> None:
    sandbox, _, run, tmp_path = world
    first = run(crash_at)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert 0 < len(_kpis(sandbox)) < len(_expected(sandbox))

    second = run()
    assert second.returncode == 0, second.stderr[-3000:]
    assert _kpis(sandbox) == _expected(sandbox), second.stderr[-3000:]
    third = run()
    assert third.returncode == 0 and f"{len(_expected(sandbox))} unchanged" in third.stderr
    assert " 0 written" in third.stderr
    logs = "".join(p.read_text() for p in (tmp_path / "log").glob("connector.log*"))
    assert "write KPIs" in logs and SOURCE_PASSWORD not in logs + first.stderr + second.stderr


def test_kill_9_during_the_removals_deactivates_each_once(world) -> None:
    sandbox, source, run, _ = world
    assert run().returncode == 0
    source.execute("delete from {s}.sales where category = 'music'")
    crashed = run("kpi_after_crm_removal:1")  # the removals of the 12 music KPIs go in slices of 10
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    done = run()
    assert done.returncode == 0, done.stderr[-3000:]
    assert _kpis(sandbox) == _expected(sandbox, music=False)
    assert " 0 removed" in run().stderr
