"""Every kind of target against the Dataverse sandbox: static and dynamic lists, a campaign's
lists, single contacts, leads and accounts — resolved as streams, de-duplicated across
targets, counted, and released as one send (SOAP path)."""

from __future__ import annotations

import io
import json
import threading

from connector.commands.send_now import ProgressBar, run_one
from connector.config import load_config


def first_id(store, entity_set: str, key: str, **where) -> str:
    for row in store.rows(entity_set):
        if all(row.get(k) == v for k, v in where.items()) and row.get("emailaddress1") and "@" in row["emailaddress1"]:
            return row[key]
    raise AssertionError(f"no {entity_set} row with {where}")


def test_all_target_kinds_in_one_send(sandbox, tmp_path) -> None:
    org, store = sandbox.seeded, sandbox.crm.store
    contact = first_id(store, "contacts", "contactid", statecode=0, donotbulkemail=0, donotemail=0)
    lead = first_id(store, "leads", "leadid", statecode=0, donotbulkemail=0, donotemail=0)
    account = first_id(store, "accounts", "accountid", donotbulkemail=0)
    targets = [{"kind": "campaign", "id": org.campaigns["spring"]}, {"kind": "list", "id": org.lists["leads"]},
               {"kind": "list", "id": org.lists["accounts"]}, {"kind": "list", "id": org.lists["example_org"]},
               {"kind": "contact", "id": contact}, {"kind": "lead", "id": lead}, {"kind": "account", "id": account}]
    rid = store.insert("cesp_sendrequests", {
        "cesp_name": "All kinds", "cesp_status": 100000000, "cesp_targets": json.dumps(targets),
        "ownerid": org.users["mia"], "ownerid__type": "systemuser"})
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none")
    assert run_one(load_config(ini), rid, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1) == 0

    row = store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == 100000002, row["cesp_reason"]
    by_reason = json.loads(row["cesp_skippedbyreason"])
    assert row["cesp_handedover"] + row["cesp_skipped"] == row["cesp_resolved"]
    assert by_reason.get("duplicate", 0) >= 1  # the single contact/lead/account are also list members
    members = sandbox.esp.store.list_by_key(f"cesp-list-{rid}").members
    assert len(members) == row["cesp_handedover"]
    assert {contact, lead, account} & set(members)
    assert len(sandbox.esp.store.sends_for(f"cesp-send-{rid}")) == 1
