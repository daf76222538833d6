"""kill -9 in the middle of a sync run: the next run loses no change and applies none twice.

The sandboxes run in the test process (real sockets); each sync run is a child process
(``connector sync``) killed by SIGKILL at a named crash point, then a second child runs to
the end. CRM pages of 20 records, so the run has several pages and checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.config import load_config
from connector.state.store import StateStore

ROOT = Path(__file__).resolve().parents[2]
RULES = "\n[sync.contact]\nfirstname = First Name | both\nlastname = Last Name | both\n"


def sync(ini: Path, crash_at: str = "", *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CONNECTOR_CRASH_AT", None)
    if crash_at:
        env["CONNECTOR_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "connector", "sync", "-c", str(ini), *extra], cwd=ROOT, env=env,
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("crash_at", ["sync_after_writes:2"])  # after a page's writes, before its commit
def test_kill_9_mid_run_loses_no_change_and_applies_none_twice(sandbox, tmp_path: Path, crash_at: str) -> None:
    crm, esp = sandbox.crm.store, sandbox.esp.store
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", crm__page_size=20,
                                    state__lease_seconds=10)
    ini.write_text(ini.read_text(encoding="utf-8") + RULES, encoding="utf-8")
    ids = [crm.insert("contacts", {"firstname": f"F{i}", "lastname": f"L{i}", "emailaddress1": f"c{i}@example.com"})
           for i in range(60)]
    for i, rid in enumerate(ids):
        esp.add_subscriber(rid, f"c{i}@example.com", attributes={"First Name": f"F{i}", "Last Name": f"L{i}"})
    first = sync(ini, "", "--full")
    assert first.returncode == 0, first.stderr
    for i in range(0, 60, 3):  # CRM edits across every page, ESP edits on others
        crm.patch("contacts", ids[i], {"firstname": f"crm{i}"})
        esp.edit_subscriber(ids[i + 1], attributes={"Last Name": f"esp{i + 1}"})

    killed = sync(ini, crash_at)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    written = {rid: (esp.subscriber(rid).modified, crm.get("contacts", rid)["versionnumber"]) for rid in ids}
    deadline = time.monotonic() + 60
    rest = sync(ini)
    while "another process holds" in rest.stdout and time.monotonic() < deadline:  # the dead run's lease
        time.sleep(1)
        rest = sync(ini)
    assert rest.returncode == 0 and "another process holds" not in rest.stdout, (rest.stdout, rest.stderr)

    for i in range(0, 60, 3):
        assert esp.subscriber(ids[i]).attributes["First Name"] == f"crm{i}"
        assert crm.get("contacts", ids[i + 1])["lastname"] == f"esp{i + 1}"
    config = load_config(ini)
    names = {"First Name": "firstname", "Last Name": "lastname"}
    with StateStore.from_config(config, holder="check") as store:
        logged = [(c.record_id, names.get(c.field, c.field), c.direction) for c in store.iter_changes_logged()]
    counted: dict = {}
    for rid, name, _ in logged:
        counted[(rid, name)] = counted.get((rid, name), 0) + 1
    expected = {(ids[i], "firstname") for i in range(0, 60, 3)} | {(ids[i + 1], "lastname") for i in range(0, 60, 3)}
    assert set(counted) == expected, sorted(set(logged))
    assert set(counted.values()) == {1}, [k for k, n in counted.items() if n > 1]  # each change logged once
    # what the killed run had written was not written again
    for rid, (modified, version) in written.items():
        before = (esp.subscriber(rid).modified, crm.get("contacts", rid)["versionnumber"])
        if before != (modified, version):  # written by the second run: it had not been written before
            assert (rid, "firstname") in expected or (rid, "lastname") in expected
    again = sync(ini)
    assert again.returncode == 0 and "to esp" not in again.stdout and "to crm" not in again.stdout, again.stdout


def test_kill_9_mid_remove_from_lists_logs_each_delete_once(sandbox, tmp_path: Path) -> None:
    from connector.sandbox.marketing_cloud.records import ListRec

    crm, esp = sandbox.crm.store, sandbox.esp.store
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", crm__page_size=20,
                                    state__lease_seconds=10, sync__crm_deleted="remove_from_lists",
                                    sync__synced_lists="cesp-crash-news")
    ini.write_text(ini.read_text(encoding="utf-8") + RULES, encoding="utf-8")
    news = esp.lists[9901] = ListRec(9901, "cesp-crash-news", "News", "crash-news-object-id")
    ids = [crm.insert("contacts", {"firstname": f"F{i}", "lastname": f"L{i}", "emailaddress1": f"c{i}@example.com"})
           for i in range(60)]
    for i, rid in enumerate(ids):
        esp.add_subscriber(rid, f"c{i}@example.com", attributes={"First Name": f"F{i}", "Last Name": f"L{i}"},
                           list_ids=(news.id,))
    assert sync(ini, "", "--full").returncode == 0
    gone = ids[::3]
    for rid in gone:  # deactivations across every page
        crm.patch("contacts", rid, {"statecode": 1, "statuscode": 2})

    killed = sync(ini, "sync_after_writes:2")
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    deadline = time.monotonic() + 60
    rest = sync(ini)
    while "another process holds" in rest.stdout and time.monotonic() < deadline:
        time.sleep(1)
        rest = sync(ini)
    assert rest.returncode == 0 and "another process holds" not in rest.stdout, (rest.stdout, rest.stderr)
    assert set(news.members) == set(ids) - set(gone)
    assert all(esp.subscriber(rid).status == "Active" for rid in gone)
    with StateStore.from_config(load_config(ini), holder="check") as store:
        logged = sorted(c.record_id for c in store.iter_changes_logged() if c.field == "@record")
        assert logged == sorted(gone)  # each delete logged once, none lost
        assert all(c.direction == "to_esp" for c in store.iter_changes_logged() if c.field == "@record")
