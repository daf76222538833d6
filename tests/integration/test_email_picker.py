"""The e-mail picker (issue 20.2): the ESP's catalogue copied into CRM's cesp_email table on a
schedule, upserted by customer key, over real sockets against both sandboxes."""

from __future__ import annotations

from connector.config import load_config
from connector.runtime import AdapterPool
from connector.service import configured_steps, step_intervals
from connector.state.store import StateStore
from connector.steps.emails import run_email_refresh


def refresh(config):
    store = StateStore.from_config(config, holder="test")
    adapters = AdapterPool(config)
    try:
        store.migrate()
        return run_email_refresh(adapters.step_context(store))
    finally:
        adapters.close_all()
        store.close()


def picker(sb) -> dict[str, dict]:
    return {row["cesp_customerkey"]: row for row in sb.crm.store.rows("cesp_emails")}


def test_the_catalogue_is_upserted_by_key_and_a_vanished_email_is_marked_deleted(sandbox, tmp_path) -> None:
    config = load_config(sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off"))
    first = refresh(config)
    assert first.ok, first.message
    rows = picker(sandbox)
    demo = rows["cesp-demo-email"]
    assert demo["cesp_name"] and demo["cesp_folder"] == "Connector" and demo["cesp_espstatus"] == "active"
    assert demo["cesp_espaccount"] == "sandbox" and demo["cesp_espemailid"] and demo["cesp_lastrefreshedon"]
    assert set(rows) == {e.customer_key for e in sandbox.esp.store.emails.values()}

    again = refresh(config)  # idempotent: the same rows, none added
    assert again.ok and again.processed == len(rows) and len(list(sandbox.crm.store.rows("cesp_emails"))) == len(rows)

    gone = next(e for e in sandbox.esp.store.emails.values() if e.customer_key == "welcome")
    del sandbox.esp.store.emails[gone.id]
    third = refresh(config)
    assert third.details["marked_deleted"] == 1
    assert picker(sandbox)["welcome"]["cesp_espstatus"] == "deleted"  # kept: requests may point at it
    assert refresh(config).details["marked_deleted"] == 0


def test_the_refresh_is_scheduled_by_its_own_key(sandbox, tmp_path) -> None:
    on = load_config(sandbox.write_service_ini(tmp_path / "on.ini", logging__console="off", emails__refresh_minutes=15))
    off = load_config(sandbox.write_service_ini(tmp_path / "off.ini", logging__console="off", emails__refresh_minutes=0))
    assert step_intervals(on)["emails"] == 900.0 and "emails" in configured_steps(on)
    assert "emails" not in configured_steps(off)
