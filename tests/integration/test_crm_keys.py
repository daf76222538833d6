"""Alternate keys built in the background and change tracking per table, as Dataverse does them:
the sandbox's index job (Pending -> InProgress -> Active, or Failed on duplicates), upserts by a
key that is not Active yet, crm-setup waiting and reporting, the daemon refusing to track on a
key that is not Active while sends go on, and delta reads only on tables with change tracking."""

from __future__ import annotations

import time

import pytest

from connector.config import Config, ServiceSettings, TrackingSettings
from connector.crm.dataverse import DataverseCrmClient
from connector.crm.setup import CrmSetup
from connector.errors import PermanentPeerError
from connector.models import CrmTable
from connector.sandbox.dataverse import KeyActivation, start_crm_sandbox
from connector.service import Service
from connector.state.store import StateStore
from connector.steps import StepOutcome
from tests.fixtures.crm import crm_config
from tests.fixtures.sandbox import crm_session_for

KEY = "campaignresponse.cesp_trackingkey_key"


def _bare_org(tmp_path, sandbox_ca, activation: KeyActivation):  # noqa: ANN001, ANN202
    crm = start_crm_sandbox(tmp_path / "crm", sandbox_ca, customizations=False, key_activation=activation)
    crm.ca_file = sandbox_ca.ca_file
    client = DataverseCrmClient.from_config(crm_config(crm, sandbox_ca.ca_file))
    yield crm, client
    client.close()
    crm.stop()


@pytest.fixture
def bare(tmp_path, sandbox_ca):
    """An organization without the connector's customizations; key jobs take about two seconds (room for
    crm-setup's other calls and a daemon start on a busy machine before the key is Active)."""
    yield from _bare_org(tmp_path, sandbox_ca, KeyActivation(pending_seconds=1.0, build_seconds=1.0))


@pytest.fixture
def bare_watched(tmp_path, sandbox_ca):
    """The same, with each phase of the key job long enough (4 s) that a test polling every 50 ms sees it
    even on a machine loaded by parallel test workers (at 1 s the Pending phase was over once before the
    first poll)."""
    yield from _bare_org(tmp_path, sandbox_ca, KeyActivation(pending_seconds=4.0, build_seconds=4.0))


def _until(predicate, what: str, timeout: float = 30.0):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached")
        time.sleep(0.05)


def _upsert(crm, session, key: str) -> int:
    campaign = crm.store.insert("campaigns", {"name": "C"})
    return session.patch(f"{crm.api_url}campaignresponses(cesp_trackingkey='{key}')", json={
        "subject": "s", "regardingobjectid_campaign_campaignresponse@odata.bind": f"/campaigns({campaign})"},
        headers={"If-None-Match": "*"}).status_code


def test_a_new_key_is_built_in_the_background_and_addresses_records_only_once_active(bare_watched) -> None:
    crm, client = bare_watched
    report = CrmSetup(client.http).run(wait=False)
    assert report.keys[KEY] == "Pending"
    session = crm_session_for(crm)
    refused = session.patch(f"{crm.api_url}campaignresponses(cesp_trackingkey='t1')", json={"subject": "s"})
    assert refused.status_code == 400 and "is not valid for resource" in refused.json()["error"]["message"]
    setup = CrmSetup(client.http)
    seen = [setup.key_statuses()[KEY]]
    while seen[-1] != "Active":
        time.sleep(0.05)
        status = setup.key_statuses()[KEY]
        if status != seen[-1]:
            seen.append(status)
    assert seen == ["Pending", "InProgress", "Active"]
    assert _upsert(crm, session, "t1") == 204


def test_a_key_over_duplicate_values_fails_is_reported_and_reactivated_after_the_cleanup(bare) -> None:
    crm, client = bare
    CrmSetup(client.http).run(wait=False)  # columns now, key job pending
    first = crm.store.insert("campaignresponses", {"subject": "a", "cesp_trackingkey": "Job.Sent.AB"})
    crm.store.insert("campaignresponses", {"subject": "b", "cesp_trackingkey": "job.sent.ab"})  # same, other case
    crm.store.insert("campaignresponses", {"subject": "c", "cesp_trackingkey": "job.sent.cd"})
    report = CrmSetup(client.http).run(poll_seconds=0.1, wait_seconds=30)
    assert report.keys[KEY] == "Failed"
    [failure] = report.failed
    assert failure.duplicates == (("Job.Sent.AB", 2),)
    text = failure.describe()
    assert "'Job.Sent.AB' (2 rows)" in text and "Delete or merge the duplicate campaignresponse rows" in text
    keys = crm_session_for(crm).get(f"{crm.api_url}EntityDefinitions(LogicalName='campaignresponse')/Keys").json()
    assert [k["EntityKeyIndexStatus"] for k in keys["value"]] == ["Failed"]
    crm.store.remove("campaignresponses", first)
    again = CrmSetup(client.http).run(poll_seconds=0.1, wait_seconds=30)
    assert again.changed == [f"reactivated key {KEY}"] and again.keys[KEY] == "Active" and not again.failed


def test_daemon_refuses_tracking_on_a_key_that_is_not_active_while_sends_go_on(bare, tmp_path) -> None:
    crm, client = bare
    CrmSetup(client.http).run(wait=False)
    ran: list[str] = []
    crm_settings = crm_config(crm, crm.ca_file).crm
    config = Config(service=ServiceSettings(data_dir=tmp_path / "data"), crm=crm_settings,
                    tracking=TrackingSettings(mode="all"))
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", holder="test")
    store.migrate()
    steps = {name: (lambda ctx, n=name: ran.append(n) or StepOutcome()) for name in ("sends", "tracking")}
    service = Service(config, store=store, steps=steps, adapters={"crm": DataverseCrmClient.from_config})
    try:
        refused = service.run_step("tracking")
        assert not refused.ok and ran == []
        assert "alternate key campaignresponse.cesp_trackingkey_key" in refused.message
        assert "still building its index" in refused.message and "crm-setup" in refused.message
        assert service.run_step("sends").ok and ran == ["sends"]
        _until(lambda: CrmSetup(client.http).key_statuses()[KEY] == "Active", "key active")
        assert service.run_step("tracking").ok and ran == ["sends", "tracking"]
    finally:
        service.close()
        store.close()


def test_change_tracking_only_where_enabled_and_crm_setup_turns_it_on(bare) -> None:
    crm, client = bare
    with pytest.raises(PermanentPeerError, match="0x80072491") as info:
        list(client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], None))
    assert "Entity contact isn't enabled for change tracking." in str(info.value)
    meta = crm_session_for(crm).get(f"{crm.api_url}EntityDefinitions(LogicalName='contact')",
                                    params={"$select": "ChangeTrackingEnabled"}).json()
    assert meta["ChangeTrackingEnabled"] is False
    report = CrmSetup(client.http).run(wait=False)
    assert report.changed == ["change tracking contact", "change tracking lead", "change tracking account"]
    pages = list(client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], None))
    assert pages[-1][2]  # a delta link
    assert CrmSetup(client.http).run(wait=False).changed == []


def test_crm_setup_command_reports_a_failed_key_with_its_duplicates_and_fails(bare, tmp_path, monkeypatch,
                                                                              capsys) -> None:
    from connector.cli import main

    crm, client = bare
    CrmSetup(client.http).run(wait=False)
    crm.store.insert("campaignresponses", {"subject": "a", "cesp_trackingkey": "job.open.x1"})
    crm.store.insert("campaignresponses", {"subject": "b", "cesp_trackingkey": "job.open.x1"})
    ini = tmp_path / "service.ini"
    ini.write_text(f"[logging]\nfolder = {tmp_path / 'log'}\nconsole = off\n\n[crm]\nurl = {crm.url}\n"
                   f"authority = {crm.authority}\nclient_id = {crm.client_id}\nca_bundle = {crm.ca_file}\n",
                   encoding="utf-8")
    monkeypatch.setenv("CONNECTOR_CRM_CLIENT_SECRET", crm.client_secret)
    assert main(["crm-setup", "-c", str(ini), "--wait", "60"]) == 1
    out = capsys.readouterr()
    assert f"key      {KEY}: Failed" in out.out
    assert f"FAILED   key {KEY} failed: rows share the same cesp_trackingkey: 'job.open.x1' (2 rows)" in out.err
    assert "run `connector crm-setup` again: it reactivates the key" in out.err
