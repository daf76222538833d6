"""Subscriber keys and addresses holding the characters Dataverse cannot address a record by,
end to end over the sandboxes: send (SOAP path), simulated engagement at the ESP, tracking
with campaign responses (alternate key ``cesp_trackingkey``), bounce and opt-out writes.

Of ``< > * % & : / \\ +``, a valid address can hold ``* % & / +`` (and ``? #``); the
others reach no Dataverse key (a subscriber key is a record id or an address), and the key
builder is tested with all of them in tests/unit/test_tracking_step.py.
"""

from __future__ import annotations

import io
import json
import threading

import pytest

from connector.config import load_config
from connector.crm.keys import addressable

ODD = "&*%/+?#"


def _seed(sb) -> tuple[str, list[str]]:
    store = sb.crm.store
    people = [store.insert("contacts", {"firstname": "Odd", "lastname": f"No{i}",
                                        "emailaddress1": f"ann{ch}{i}@example.test"}) for i, ch in enumerate(ODD)]
    people.append(store.insert("contacts", {"firstname": "All", "lastname": "Of them",
                                            "emailaddress1": f"a{ODD}z@example.test"}))
    list_id = store.insert("lists", {"listname": "Odd addresses", "createdfromcode": 2, "type": 0})
    for pid in people:
        store.associate("listcontact_association", list_id, pid)
    campaign = store.insert("campaigns", {"name": "Odd campaign"})
    rid = store.insert("cesp_sendrequests", {
        "cesp_name": "Odd keys", "cesp_status": 100000000,
        "cesp_targets": json.dumps([{"kind": "list", "id": list_id}]),
        "cesp_campaignid": ("campaign", campaign),
        "ownerid": sb.seeded.users["mia"], "ownerid__type": "systemuser"})
    return rid, people


def _track(config, request_id: str) -> tuple[object, dict]:
    from connector.runtime import AdapterPool
    from connector.state.store import StateStore
    from connector.steps.tracking import run_tracking

    store = StateStore.from_config(config, holder="it")
    adapters = AdapterPool(config)
    try:
        store.migrate()
        outcome = run_tracking(adapters.step_context(store))
        return outcome, store.quarantine_counts(request_id)
    finally:
        adapters.close_all()
        store.close()


@pytest.mark.parametrize("subscriber_key", ["record_id", "email"])
def test_forbidden_characters_in_addresses_and_keys_end_to_end(sandbox, tmp_path, subscriber_key) -> None:
    from connector.commands.send_now import ProgressBar, run_one
    from connector.sandbox.marketing_cloud.events import EventRates

    sandbox.esp.store.rates = EventRates(hard_bounce=0.0, soft_bounce=0.0, block_bounce=0.0, technical_bounce=0.0,
                                         unknown_bounce=0.0, open=1.0, click=1.0, unsubscribe=1.0)
    rid, people = _seed(sandbox)
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="all",
                                    sends__subscriber_key=subscriber_key, tracking__initial_lookback_days="2")
    config = load_config(ini)
    assert run_one(config, rid, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1) == 0
    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == 100000002 and row["cesp_handedover"] == len(people), row["cesp_reason"]
    members = sandbox.esp.store.list_by_key(f"cesp-list-{rid}").members
    if subscriber_key == "email":
        assert any("&" in key and "/" in key for key in members)

    sandbox.esp.advance(96)
    outcome, quarantined = _track(config, rid)
    assert outcome.ok, outcome
    assert quarantined == {}
    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_sentcount"] == len(people) and row["cesp_opencount"] >= len(people)
    assert row["cesp_unsubscribecount"] == len(people)
    responses = [r for r in sandbox.crm.store.rows("campaignresponses") if r.get("cesp_trackingkey")]
    assert all(addressable(r["cesp_trackingkey"]) and len(r["cesp_trackingkey"]) <= 100 for r in responses)
    if subscriber_key == "record_id":
        # open, click, unsubscribe and sent (mode all) for every recipient, each exactly once
        assert len(responses) == 4 * len(people)
        assert len({r["cesp_trackingkey"] for r in responses}) == len(responses)
        opted_out = [sandbox.crm.store.get("contacts", p)["donotbulkemail"] for p in people]
        assert opted_out == [True] * len(people)
        # a second run re-reads the overlap and writes nothing twice
        outcome, _ = _track(config, rid)
        assert outcome.ok and sandbox.crm.store.count("campaignresponses") == len(responses)
    else:
        # addresses as subscriber keys: counted and staged, no CRM record to answer to (docs/tracking.md)
        assert responses == []
