"""Preview before send (issue 20.3), against both sandboxes over real sockets: a request set to
"Preview requested" is resolved as a send would be, its counts and a sample are written to it, and
nothing reaches the ESP; set Pending, it is sent — or held when its audience changed too much."""

from __future__ import annotations

import json

from connector.config import load_config
from connector.runtime import AdapterPool
from connector.state.store import StateStore
from connector.steps.send.preview import run_previews
from connector.steps.send.step import run_imports, run_sends

DRAFT, PREVIEW, PREVIEWED, PENDING, SENT = 100000005, 100000006, 100000007, 100000000, 100000002


def world(sb, tmp_path, **overrides):
    config = load_config(sb.write_service_ini(tmp_path / "service.ini", logging__console="off",
                                              tracking__mode="none", **overrides))
    store = StateStore.from_config(config, holder="test")
    store.migrate()
    return config, store


def step(config, store, fn):
    adapters = AdapterPool(config)
    try:
        return fn(adapters.step_context(store))
    finally:
        adapters.close_all()


def request(sb, targets: list[dict], status: int = PREVIEW, **extra) -> str:
    org = sb.seeded
    return sb.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "Preview", "cesp_status": status, "cesp_targets": json.dumps(targets),
        "ownerid": org.users["mia"], "ownerid__type": "systemuser", **extra})


def test_a_preview_counts_and_samples_and_sends_nothing(sandbox, tmp_path) -> None:
    config, store = world(sandbox, tmp_path, sends__preview_sample=3)
    rid = request(sandbox, [{"kind": "list", "id": sandbox.seeded.lists["vip"]}])
    try:
        assert step(config, store, run_previews) == 1
    finally:
        store.close()
    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == PREVIEWED, row["cesp_reason"]
    assert row["cesp_previewresolved"] > 0 and row["cesp_previewwouldsend"] > 0
    skipped = json.loads(row["cesp_previewskippedbyreason"])
    assert row["cesp_previewwouldsend"] + sum(skipped.values()) == row["cesp_previewresolved"]
    assert "nothing was sent" in row["cesp_reason"] and row["cesp_previewedon"]
    sample = [r for r in sandbox.crm.store.rows("cesp_previewrecipients") if r["_cesp_sendrequestid_value"] == rid]
    assert len(sample) == min(3, row["cesp_previewwouldsend"])
    assert all("@" in r["cesp_name"] and json.loads(r["cesp_attributes"]) and r["cesp_recordid"] for r in sample)
    assert not sandbox.esp.store.subscribers and not sandbox.esp.store.sends_for(f"cesp-send-{rid}")


def test_a_preview_without_targets_goes_back_to_draft_with_the_reason(sandbox, tmp_path) -> None:
    config, store = world(sandbox, tmp_path)
    rid = request(sandbox, [])
    try:
        assert step(config, store, run_previews) == 0
    finally:
        store.close()
    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == DRAFT and "no targets" in row["cesp_reason"]
    assert "Nothing was sent" in row["cesp_reason"] and not sandbox.esp.store.subscribers


def associate_contacts(sb, rid: str, count: int, prefix: str) -> None:
    for i in range(count):
        contact = sb.crm.store.insert("contacts", {"firstname": "New", "lastname": f"{prefix}{i}",
                                                   "emailaddress1": f"{prefix}{i}@example.com"})
        sb.crm.store.associate("cesp_sendrequest_contact", rid, contact)


def set_status(sb, rid: str, status: int) -> None:
    sb.crm.store.update(sb.crm.store.schema.entity("cesp_sendrequest"), rid, {"cesp_status": status})


def drive(config, store, sb, rid: str, until: set[int], rounds: int = 60) -> dict:
    import time

    for _ in range(rounds):
        step(config, store, run_sends)
        step(config, store, run_imports)
        row = sb.crm.store.get("cesp_sendrequests", rid)
        if row["cesp_status"] in until:
            return row
        time.sleep(0.5)
    raise AssertionError(f"request {rid} did not reach {until}: {row}")


def test_the_marketer_path_preview_then_pending_sends_and_a_changed_audience_is_held(sandbox, tmp_path) -> None:
    config, store = world(sandbox, tmp_path, sends__preview_max_change=0.2)
    email = sandbox.crm.store.insert("cesp_emails", {"cesp_name": "Demo e-mail", "cesp_customerkey": "cesp-demo-email"})
    rid = request(sandbox, [], cesp_emailid=("cesp_email", email))
    associate_contacts(sandbox, rid, 5, "first")
    try:
        row = drive(config, store, sandbox, rid, {PREVIEWED})  # the sends step previews it
        assert row["cesp_previewwouldsend"] == 5 and not sandbox.esp.store.subscribers
        associate_contacts(sandbox, rid, 2, "later")  # 5 -> 7: 40 % more than the preview
        set_status(sandbox, rid, PENDING)
        row = drive(config, store, sandbox, rid, {PREVIEWED, SENT})
        assert row["cesp_status"] == PREVIEWED and "changed by 40%" in row["cesp_reason"], row["cesp_reason"]
        assert row["cesp_previewwouldsend"] == 7 and not sandbox.esp.store.subscribers  # nothing handed over
        set_status(sandbox, rid, PENDING)  # the marketer accepts the new audience
        row = drive(config, store, sandbox, rid, {SENT, 100000003})
        assert row["cesp_status"] == SENT, row["cesp_reason"]
        assert row["cesp_handedover"] == 7 and len(sandbox.esp.store.sends_for(f"cesp-send-{rid}")) == 1
    finally:
        store.close()


def test_a_picked_email_the_esp_no_longer_has_fails_naming_it(sandbox, tmp_path) -> None:
    config, store = world(sandbox, tmp_path)
    email = sandbox.crm.store.insert("cesp_emails", {"cesp_name": "Autumn sale", "cesp_customerkey": "autumn-sale"})
    rid = request(sandbox, [{"kind": "list", "id": sandbox.seeded.lists["vip"]}], status=PENDING,
                  cesp_emailid=("cesp_email", email))
    try:
        row = drive(config, store, sandbox, rid, {100000003, SENT})
    finally:
        store.close()
    assert row["cesp_status"] == 100000003 and "'Autumn sale' (key 'autumn-sale')" in row["cesp_reason"]
    assert not sandbox.esp.store.subscribers


def test_a_picked_email_without_a_key_is_the_reason_for_preview_and_send(sandbox, tmp_path) -> None:
    config, store = world(sandbox, tmp_path)
    blank = sandbox.crm.store.insert("cesp_emails", {"cesp_name": "Half made"})
    vip = [{"kind": "list", "id": sandbox.seeded.lists["vip"]}]
    previewed = request(sandbox, vip, cesp_emailid=("cesp_email", blank))
    pending = request(sandbox, vip, status=PENDING, cesp_emailid=("cesp_email", blank))
    try:
        step(config, store, run_previews)
        row = drive(config, store, sandbox, pending, {100000003, SENT})
    finally:
        store.close()
    draft = sandbox.crm.store.get("cesp_sendrequests", previewed)
    assert draft["cesp_status"] == DRAFT and "'Half made'" in draft["cesp_reason"] and "no customer key" in draft["cesp_reason"]
    assert row["cesp_status"] == 100000003 and "'Half made'" in row["cesp_reason"] and "nothing was sent" in row["cesp_reason"]
    assert not sandbox.esp.store.subscribers


def test_no_preview_while_the_request_is_being_sent(sandbox, tmp_path) -> None:
    from connector.state.lifecycle import JobStatus
    from connector.state.store import SendJob

    config, store = world(sandbox, tmp_path)
    rid = request(sandbox, [{"kind": "list", "id": sandbox.seeded.lists["vip"]}])
    store.save_send_job(SendJob(request_id=rid, status=JobStatus.RESOLVING))  # a send in flight
    try:
        assert step(config, store, run_previews) == 0
    finally:
        store.close()
    assert sandbox.crm.store.get("cesp_sendrequests", rid)["cesp_status"] == PREVIEW
