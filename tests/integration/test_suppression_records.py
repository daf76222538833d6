"""[suppression] opt_out_records over real sockets against the sandboxes: addresses new to the
statutory list opt their CRM contacts and leads out and unsubscribe their ESP subscribers, once."""

from __future__ import annotations

import os
from pathlib import Path

from connector.config import load_config
from connector.runtime import AdapterPool
from connector.state.store import StateStore
from connector.steps.suppression import run_suppression_refresh


def refresh(config, state):  # noqa: ANN001, ANN201
    adapters = AdapterPool(config)
    try:
        return run_suppression_refresh(adapters.step_context(state, run_id="t"))
    finally:
        adapters.close_all()


def test_new_addresses_opt_out_records_and_unsubscribe_subscribers(sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    crm, esp = sandbox.crm.store, sandbox.esp.store
    ids = []
    for n in range(3):
        rid = crm.insert("contacts", {"firstname": f"P{n}", "lastname": "L", "emailaddress1": f"p{n}@example.com"})
        esp.add_subscriber(rid, f"p{n}@example.com")
        ids.append(rid)
    lead = crm.insert("leads", {"lastname": "Lead", "emailaddress1": "P1@Example.com"})  # no subscriber
    listed = tmp_path / "rtr.txt"
    listed.write_text("p1@example.com\n@elsewhere.example\nbroken line\n", encoding="utf-8")
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off",
                                    suppression__file=str(listed), suppression__opt_out_records=True)
    config = load_config(ini)
    state = StateStore.from_config(config, holder="test")
    state.migrate()
    try:
        outcome = refresh(config, state)
        assert outcome.ok, outcome.message
        assert (outcome.details["crm_opted_out"], outcome.details["esp_unsubscribed"]) == (2, 1)
        assert outcome.details["malformed"] == 1 and "line 3" in outcome.message
        assert crm.get("contacts", ids[1])["donotbulkemail"] is True
        assert crm.get("leads", lead)["donotbulkemail"] is True
        assert not crm.get("contacts", ids[0]).get("donotbulkemail")
        assert esp.subscriber(ids[1]).status == "Unsubscribed" and esp.subscriber(ids[0]).status == "Active"
        # the list grows by p2: only p2 is new, p1 is not written again
        listed.write_text("p1@example.com\np2@example.com\n", encoding="utf-8")
        os.utime(listed, ns=(1, 1))
        again = refresh(config, state)
        assert (again.details["crm_opted_out"], again.details["esp_unsubscribed"]) == (1, 1)
        assert esp.subscriber(ids[2]).status == "Unsubscribed"
    finally:
        state.close()
