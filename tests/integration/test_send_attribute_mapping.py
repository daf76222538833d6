"""A [mapping.*] line naming an attribute the Marketing Cloud account lacks holds the send (Pending, with
a note naming the line) before any subscriber is written; once the attribute exists it goes on. The sandbox
account, like the real one, has an attribute catalogue."""

from __future__ import annotations

import io
import json
import threading

from connector.commands.send_now import ProgressBar, run_one
from connector.config import load_config
from connector.esp.marketing_cloud import MarketingCloudEspClient
from tests.integration.test_send_targets import first_id


def _request(sandbox) -> str:
    org, store = sandbox.seeded, sandbox.crm.store
    contact = first_id(store, "contacts", "contactid", statecode=0, donotbulkemail=0, donotemail=0)
    return store.insert("cesp_sendrequests", {
        "cesp_name": "Mapped", "cesp_status": 100000000, "cesp_targets": json.dumps([{"kind": "contact", "id": contact}]),
        "ownerid": org.users["mia"], "ownerid__type": "systemuser"})


def test_the_adapter_reads_the_accounts_profile_attributes(sandbox, tmp_path) -> None:
    config = load_config(sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off"))
    sandbox.esp.store.add_attribute("Loyalty Tier")
    client = MarketingCloudEspClient.from_config(config)
    try:
        names = client.profile_attributes()
    finally:
        client.close()
    assert {"Email Address", "First Name", "Country", "Loyalty Tier"} <= names
    # the generated service.ini maps only attributes the generated account has
    mapped = {m.esp_attribute for table in config.mappings.values() for m in table}
    assert mapped and mapped <= names


def test_a_mapping_to_a_missing_attribute_refuses_the_send_naming_the_line(sandbox, tmp_path) -> None:
    rid = _request(sandbox)
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none",
                                    mapping_contact={"Shoe Size": "address1_postalcode"})
    line = 1 + next(i for i, text in enumerate(ini.read_text().splitlines()) if text.startswith("Shoe Size ="))
    run_one(load_config(ini), rid, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1)

    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == 100000000  # held: still Pending, an operator's problem, not the request's
    reason = row["cesp_reason"]
    assert reason.startswith("Held by the connector, not failed")
    assert f"service.ini:{line} [mapping.contact] Shoe Size" in reason and "does not exist" in reason
    assert sandbox.esp.store.list_by_key(f"cesp-list-{rid}") is None  # nobody was written
    assert sandbox.esp.store.sends_for(f"cesp-send-{rid}") == []

    sandbox.esp.store.add_attribute("Shoe Size")  # the operator adds it; the held request goes on by itself
    assert run_one(load_config(ini), rid, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1) == 0
    assert sandbox.crm.store.get("cesp_sendrequests", rid)["cesp_status"] == 100000002
    assert len(sandbox.esp.store.sends_for(f"cesp-send-{rid}")) == 1
