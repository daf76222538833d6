"""Many single-record targets are read in sets, not one GET each (issue 19, item 9).

A request naming 10,000 contacts one by one, against the Dataverse sandbox: the
contacts are read with ``$filter=Microsoft.Dynamics.CRM.In(...)`` in sets, every URL
within Dataverse's 32,768-character cap, and everyone is handed over once.
"""

from __future__ import annotations

import io
import json
import threading
from urllib.parse import urlencode

import pytest

from connector.commands.send_now import ProgressBar, run_one
from connector.config import load_config
from connector.crm.odata import ODataHttp
from connector.crm.recipients import MAX_URL_CHARS, RECORD_SET_MAX

PENDING, SENT = 100000000, 100000002


@pytest.fixture
def big_sandbox(tmp_path):
    from connector.sandbox import start_sandbox

    sb = start_sandbox(tmp_path / "sandbox", seed=3, contacts=10_000, customizations=True)
    yield sb
    sb.stop()


@pytest.fixture
def crm_gets(monkeypatch) -> list[tuple[str, int]]:
    """(path, full URL length) of every GET the connector sends to the CRM (the real client, counted)."""
    seen: list[tuple[str, int]] = []
    real = ODataHttp.request

    def counted(self, method, path, call, *, params=None, **kw):
        if method == "GET":
            url = self.url(path)
            seen.append((path, len(url) + (1 + len(urlencode(params)) if params else 0)))
        return real(self, method, path, call, params=params, **kw)

    monkeypatch.setattr(ODataHttp, "request", counted)
    return seen


def test_ten_thousand_contact_targets_are_read_in_sets(big_sandbox, tmp_path, crm_gets) -> None:
    sb = big_sandbox
    ids = [row["contactid"] for row in sb.crm.store.rows("contacts")]
    assert len(ids) == 10_000
    rid = sb.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "Ten thousand", "cesp_status": PENDING, "cesp_forcebatching": True,
        "cesp_targets": json.dumps([{"kind": "contact", "id": i} for i in ids]),
        "ownerid": sb.seeded.users["mia"], "ownerid__type": "systemuser"})
    ini = sb.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none",
                               imports__poll_seconds=0.1)
    assert run_one(load_config(ini), rid, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1) == 0

    row = sb.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == SENT, row["cesp_reason"]
    assert row["cesp_resolved"] == 10_000
    assert row["cesp_handedover"] + row["cesp_skipped"] == 10_000
    contact_gets = [length for path, length in crm_gets if path.startswith("contacts")]
    assert len(contact_gets) <= 2 * (10_000 // RECORD_SET_MAX)  # 20 sets of 500 (was: 10,000 GETs)
    assert max(length for _, length in crm_gets) <= MAX_URL_CHARS
    assert len(sb.esp.store.sends_for(f"cesp-send-{rid}")) == 1


def test_a_missing_record_among_many_fails_the_request_naming_it(sandbox, tmp_path, crm_gets) -> None:
    ids = [row["contactid"] for row in sandbox.crm.store.rows("contacts")][:30]
    gone = "0b5b3a52-6a7e-4d0b-9d0e-1f2a3b4c5d6e"
    rid = sandbox.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "One gone", "cesp_status": PENDING,
        "cesp_targets": json.dumps([{"kind": "contact", "id": i} for i in ids[:15] + [gone] + ids[15:]]),
        "ownerid": sandbox.seeded.users["mia"], "ownerid__type": "systemuser"})
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none")
    run_one(load_config(ini), rid, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1)
    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == 100000003
    assert f"contact {gone}" in row["cesp_reason"] and "do not exist" in row["cesp_reason"]
    assert len([p for p, _ in crm_gets if p.startswith("contacts")]) == 1
    assert not sandbox.esp.store.subscribers


def test_a_long_request_pauses_for_its_turn_and_a_small_one_is_not_held_up(big_sandbox, tmp_path) -> None:
    from structlog.testing import capture_logs

    from tests.integration.test_send_operator_problems import poll

    sb = big_sandbox
    ids = [row["contactid"] for row in sb.crm.store.rows("contacts")][:7_500]
    owner = {"ownerid": sb.seeded.users["mia"], "ownerid__type": "systemuser", "cesp_status": PENDING}
    long_id = sb.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "Long", "cesp_forcebatching": True, "createdon": "2026-01-01T08:00:00Z",  # listed first
        "cesp_targets": json.dumps([{"kind": "contact", "id": i} for i in ids]), **owner})
    small_id = sb.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "Small", "createdon": "2026-01-01T09:00:00Z",
        "cesp_targets": json.dumps([{"kind": "list", "id": sb.seeded.lists["vip"]}]),
        **owner})
    # every turn ends at the first checkpoint: the long one resolves one set of 2,500, then the small one
    # has its turn (and so on, round after round) instead of waiting until all 7,500 are resolved
    ini = sb.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none",
                               sends__time_slice_seconds=0.001, sends__workers=1)
    with capture_logs() as logs:
        outcome, _job = poll(load_config(ini), long_id)
    assert outcome.ok, outcome.message
    order = [(e["event"], e.get("send")) for e in logs if e["event"] in ("send_resolved", "send_released")]
    assert order.index(("send_resolved", small_id)) < order.index(("send_resolved", long_id))
    assert outcome.details["rounds"] >= 3  # the long one came back for each of its three sets
    assert sb.crm.store.get("cesp_sendrequests", small_id)["cesp_status"] == SENT

    assert run_one(load_config(ini), long_id, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1) == 0
    row = sb.crm.store.get("cesp_sendrequests", long_id)
    assert row["cesp_status"] == SENT and row["cesp_resolved"] == 7_500
    assert row["cesp_handedover"] + row["cesp_skipped"] == 7_500


def test_a_missing_record_is_found_before_a_list_goes_to_the_esp(sandbox, tmp_path) -> None:
    gone = "0b5b3a52-6a7e-4d0b-9d0e-1f2a3b4c5d6e"
    rid = sandbox.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "List, then a deleted contact", "cesp_status": PENDING, "cesp_forcebatching": True,
        "cesp_targets": json.dumps([{"kind": "list", "id": sandbox.seeded.lists["newsletter"]},
                                    {"kind": "contact", "id": gone}]),
        "ownerid": sandbox.seeded.users["mia"], "ownerid__type": "systemuser"})
    # small batch files: the list's first files would be uploaded and imported while resolving goes on
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none",
                                    batching__batch_size=3)
    run_one(load_config(ini), rid, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1)
    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == 100000003
    assert f"contact {gone}" in row["cesp_reason"] and "nothing was sent" in row["cesp_reason"]
    assert not sandbox.esp.store.subscribers and not sandbox.esp.store.import_definitions
