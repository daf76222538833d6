"""Two-way sync over real sockets against the sandboxes: full and differential runs, conflicts,
bad input, deletes, held subscribers, test mode and the change log."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connector.config import load_config
from connector.models import Subscriber
from connector.runtime import AdapterPool
from connector.state.store import StateStore
from connector.sync.engine import SyncOptions, run_sync

RULES = """
[transform.countries]
Austria = Österreich
Germany = Deutschland

[sync.contact]
firstname = First Name | both | trim
address1_country = Country | both | map:countries
lastname = Last Name | to_esp
"""


class Org:
    """The sandboxes, three contacts with their subscribers, and a way to run the sync step."""

    def __init__(self, sandbox, tmp_path: Path, extra: str = "", rules: str = RULES, **settings: str) -> None:
        self.sb = sandbox
        ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off",
                                        **{f"sync__{k}": v for k, v in settings.items()})
        ini.write_text(ini.read_text(encoding="utf-8") + rules + extra, encoding="utf-8")
        self.config = load_config(ini)
        self.crm = sandbox.crm.store
        self.esp = sandbox.esp.store
        self.ids = []
        for n, (first, country) in enumerate([("Anna", "Austria"), ("Berta", "Germany"), ("Carla", "Austria")]):
            rid = self.crm.insert("contacts", {"firstname": first, "lastname": f"L{n}", "address1_country": country,
                                               "emailaddress1": f"p{n}@example.com"})
            self.esp.add_subscriber(rid, f"p{n}@example.com", attributes={
                "First Name": first, "Country": {"Austria": "Österreich", "Germany": "Deutschland"}[country],
                "Last Name": f"L{n}"})
            # an hour old at the ESP: a CRM edit in the test is newer (modifiedon has whole seconds)
            self.esp.edit_subscriber(rid, attributes={"First Name": first},
                                     when=self.esp.now() - timedelta(hours=1))
            self.ids.append(rid)
        self.state = StateStore.from_config(self.config, holder="test")
        self.state.migrate()

    def run(self, stopping: threading.Event | None = None, **options):
        adapters = AdapterPool(self.config)
        try:
            ctx = adapters.step_context(self.state, run_id=f"run{id(options)}", stopping=stopping or threading.Event())
            return run_sync(ctx, SyncOptions(**options))
        finally:
            adapters.close_all()

    def contact(self, n: int) -> dict:
        return self.crm.get("contacts", self.ids[n])

    def subscriber(self, n: int):
        return self.esp.subscriber(self.ids[n])

    def close(self) -> None:
        self.state.close()


@pytest.fixture
def org(sandbox, tmp_path):
    org = Org(sandbox, tmp_path)
    yield org
    org.close()


def test_first_full_run_agrees_then_each_side_carries_its_changes(org: Org) -> None:
    first = org.run(full=True)
    assert first.ok, first.message
    assert first.details["agreed"] == 9 and not first.details.get("to_esp") and not first.details.get("to_crm")
    assert first.details["no_subscriber"] > 0  # the sandbox's other contacts have no subscriber

    org.crm.patch("contacts", org.ids[0], {"firstname": "Anneliese", "address1_country": "Germany"})
    org.esp.edit_subscriber(org.ids[1], attributes={"First Name": "Bertha", "Country": "Österreich"})
    org.esp.edit_subscriber(org.ids[2], attributes={"Last Name": "Changed at the ESP"})  # a to_esp field
    second = org.run()
    assert second.ok, second.message
    assert org.subscriber(0).attributes["First Name"] == "Anneliese"
    assert org.subscriber(0).attributes["Country"] == "Deutschland"
    assert (org.contact(1)["firstname"], org.contact(1)["address1_country"]) == ("Bertha", "Austria")
    assert org.subscriber(2).attributes["Last Name"] == "L2"  # CRM is the source of a to_esp rule
    logged = {(c.record_id, c.field): c for c in org.state.iter_changes_logged()}
    change = logged[(org.ids[1], "address1_country")]
    assert (change.old_value, change.new_value, change.direction) == ("Germany", "Austria", "to_crm")
    assert change.rule.startswith("sync.contact:") and change.run_id

    third = org.run()  # our own writes come back as changes on both sides: nothing to do
    assert third.ok and not third.details.get("to_esp") and not third.details.get("to_crm"), third.details


def test_same_record_edited_on_both_sides_the_newest_wins(org: Org) -> None:
    assert org.run(full=True).ok
    org.crm.patch("contacts", org.ids[0], {"firstname": "CRM-edit"})
    org.crm.patch("contacts", org.ids[1], {"firstname": "CRM-later"})
    crm_at = datetime.fromisoformat(org.contact(0)["modifiedon"].replace("Z", "+00:00"))
    org.esp.edit_subscriber(org.ids[0], attributes={"First Name": "ESP-later"}, when=crm_at + timedelta(seconds=5))
    org.esp.edit_subscriber(org.ids[1], attributes={"First Name": "ESP-earlier"},
                            when=crm_at - timedelta(seconds=5))
    outcome = org.run()
    assert outcome.ok and outcome.details["conflicts"] == 2, outcome.details
    assert org.contact(0)["firstname"] == "ESP-later" and org.subscriber(0).attributes["First Name"] == "ESP-later"
    assert org.contact(1)["firstname"] == "CRM-later"
    assert org.subscriber(1).attributes["First Name"] == "CRM-later"
    notes = [c.rule for c in org.state.iter_changes_logged(record_id=org.ids[0]) if c.field == "firstname"]
    assert any("conflict: CRM 'CRM-edit', ESP 'ESP-later'; rule newest" in n and "ESP wins" in n for n in notes)


def test_bad_values_skip_their_field_and_the_run_goes_on(org: Org) -> None:
    assert org.run(full=True).ok
    org.esp.edit_subscriber(org.ids[0], attributes={"Country": "Narnia", "First Name": "Ann"})  # no map line
    org.esp.edit_subscriber(org.ids[1], attributes={"First Name": "B" * 60})  # firstname holds 50
    outcome = org.run()
    assert outcome.details["skipped"] == 2 and outcome.details["to_crm"] == 1, outcome.details
    assert org.contact(0)["firstname"] == "Ann" and org.contact(0)["address1_country"] == "Austria"
    assert org.contact(1)["firstname"] == "Berta"
    skipped = {c.record_id: c for c in org.state.iter_changes_logged() if c.direction == "skipped"}
    assert "'Narnia' has no line in map:countries" in skipped[org.ids[0]].source
    assert "too long" in skipped[org.ids[1]].source
    run_id = skipped[org.ids[0]].run_id
    assert {q.record_id for q in org.state.quarantined(f"sync:{run_id}")} == {org.ids[0], org.ids[1]}


def test_dry_run_writes_nothing_anywhere_and_reports(org: Org, tmp_path: Path) -> None:
    org.crm.patch("contacts", org.ids[0], {"firstname": "Dry"})
    report = tmp_path / "report.csv"
    outcome = org.run(full=True, dry_run=True, report_path=report)
    assert outcome.ok and outcome.details.get("to_esp", 0) >= 1, outcome.details
    assert org.subscriber(0).attributes["First Name"] == "Anna"
    assert org.state.shadow_count() == 0 and list(org.state.iter_changes_logged()) == []
    assert org.state.get_meta("sync:delta:contact") is None and org.state.leases() == []
    lines = report.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "table,record,field,old,new,direction,rule,note"
    assert f"contact,{org.ids[0]},First Name,Anna,Dry,to_esp," in "\n".join(lines)


def test_deleted_held_and_deactivated(sandbox, tmp_path) -> None:
    org = Org(sandbox, tmp_path, crm_deleted="unsubscribe")
    try:
        assert org.run(full=True).ok
        org.crm.remove("contacts", org.ids[0])
        org.crm.patch("contacts", org.ids[1], {"statecode": 1, "statuscode": 2})
        org.esp.edit_subscriber(org.ids[2], status="Held")
        outcome = org.run()
        assert outcome.ok and outcome.details["deleted"] == 2 and outcome.details["held"] == 1, outcome.details
        assert org.subscriber(0).status == "Unsubscribed" and org.subscriber(1).status == "Unsubscribed"
        assert org.contact(2)["donotbulkemail"] is True
        assert org.contact(0) is None  # nothing is ever deleted in CRM by the sync, this was the test
        assert org.state.shadows("contact", org.ids[:2]) == {}
        again = org.run()
        assert not again.details.get("held") and not again.details.get("deleted"), again.details
    finally:
        org.close()


def test_a_deactivated_contact_leaves_the_synced_lists_and_stays_a_subscriber(sandbox, tmp_path) -> None:
    org = Org(sandbox, tmp_path, crm_deleted="remove_from_lists", synced_lists="cesp-news, cesp-offers")
    adapters = AdapterPool(org.config)
    try:
        esp = adapters.get("esp")  # the lists and members made over SOAP, as a marketer's import would
        for key in ("cesp-news", "cesp-offers", "cesp-other"):
            esp.upsert_subscribers([Subscriber(rid, f"p{n}@example.com", {}) for n, rid in enumerate(org.ids)],
                                   esp.ensure_list(key, key))
        assert org.run(full=True).ok
        org.crm.patch("contacts", org.ids[1], {"statecode": 1, "statuscode": 2})
        outcome = org.run()
        assert outcome.ok and outcome.details["deleted"] == 1, outcome.details
        members = {key: set(org.esp.list_by_key(key).members) for key in ("cesp-news", "cesp-offers", "cesp-other")}
        assert org.ids[1] not in members["cesp-news"] and org.ids[1] not in members["cesp-offers"]
        assert members["cesp-other"] == set(org.ids) and {org.ids[0], org.ids[2]} <= members["cesp-news"]
        assert org.subscriber(1) is not None and org.subscriber(1).status == "Active"  # still a subscriber
        logged = [c for c in org.state.iter_changes_logged() if c.record_id == org.ids[1] and c.field == "@record"]
        assert [(c.direction, c.rule) for c in logged] == [("to_esp", "[sync] crm_deleted = remove_from_lists")]
        assert "cesp-news, cesp-offers" in logged[0].source
        assert org.state.shadows("contact", [org.ids[1]]) == {}
        again = org.run()
        assert again.ok and not again.details.get("deleted"), again.details
    finally:
        adapters.close_all()
        org.close()


def test_sync_and_changes_commands(org: Org, tmp_path: Path, capsys) -> None:
    from connector.cli import main

    ini = str(org.config.source_path)
    org.crm.patch("contacts", org.ids[0], {"firstname": "Cli"})
    assert main(["sync", "-c", ini, "--dry-run", "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr()
    assert "test mode, nothing written" in out.out and "to esp 1" in out.out and "crm read" in out.err
    assert '"new": "Cli"' in (tmp_path / "r.json").read_text(encoding="utf-8")
    assert main(["sync", "-c", ini, "--table", "contact"]) == 0
    assert org.subscriber(0).attributes["First Name"] == "Cli"
    capsys.readouterr()
    assert main(["changes", "-c", ini, "--record", org.ids[0], "--format", "json", "--since", "1h"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["field"], r["old_value"], r["new_value"], r["direction"]) for r in lines] == [
        ("First Name", "Anna", "Cli", "to_esp")]
    assert main(["sync", "-c", ini, "--table", "lead"]) == 3  # no [sync.lead] section


def test_an_expired_delta_link_resyncs_the_table(org: Org) -> None:
    assert org.run(full=True).ok
    link = org.state.get_meta("sync:delta:contact")
    org.state.set_meta("sync:delta:contact", link.split("$deltatoken=")[0] + "$deltatoken=1!01/01/2001 00:00:00")
    org.crm.patch("contacts", org.ids[0], {"firstname": "After"})
    outcome = org.run()
    assert outcome.ok and outcome.details["resyncs"] == 1 and outcome.details["to_esp"] == 1, outcome.details
    assert org.subscriber(0).attributes["First Name"] == "After"
    assert org.state.get_meta("sync:delta:contact") != link


def test_option_labels_and_addresses_both_ways(sandbox, tmp_path) -> None:
    org = Org(sandbox, tmp_path, extra="gendercode = Gender | both | optionset\n"
                                       "emailaddress1 = Email Address | both | lower\n")
    try:
        org.crm.patch("contacts", org.ids[0], {"gendercode": 2})
        assert org.run(full=True).ok
        assert org.subscriber(0).attributes["Gender"] == "Female"
        org.esp.edit_subscriber(org.ids[0], attributes={"Gender": "male"})
        org.esp.edit_subscriber(org.ids[1], attributes={"Gender": "Unknown"}, email="New.Address@Example.com")
        org.esp.edit_subscriber(org.ids[2], email="not an address")
        outcome = org.run()
        assert org.contact(0)["gendercode"] == 1
        assert org.contact(1)["emailaddress1"] == "New.Address@Example.com" and org.contact(1)["gendercode"] is None
        assert org.contact(2)["emailaddress1"] == "p2@example.com"
        skipped = {c.record_id: c.source for c in org.state.iter_changes_logged() if c.direction == "skipped"}
        assert "option label 'Unknown'" in skipped[org.ids[1]]
        assert "not a valid e-mail address" in skipped[org.ids[2]]
        assert outcome.details["skipped"] == 2, outcome.details
    finally:
        org.close()


def test_test_mode_in_the_config_writes_nothing(sandbox, tmp_path) -> None:
    org = Org(sandbox, tmp_path, test_mode="true", report_folder=str(tmp_path / "reports"))
    try:
        org.crm.patch("contacts", org.ids[0], {"firstname": "Simulated"})
        outcome = org.run()
        assert outcome.ok and "test mode, nothing written" in outcome.message
        assert org.subscriber(0).attributes["First Name"] == "Anna" and org.state.shadow_count() == 0
        [report] = (tmp_path / "reports").iterdir()
        assert "Simulated" in report.read_text(encoding="utf-8")
    finally:
        org.close()


def test_a_stopping_service_ends_the_run_between_pages(org: Org) -> None:
    stopping = threading.Event()
    stopping.set()
    outcome = org.run(stopping, full=True)
    assert outcome.details["interrupted"] == 1
    assert org.state.get_meta("sync:esp:sandbox") is None and org.state.leases() == []
    assert org.run(full=True).details["agreed"] == 9  # the next run does the whole work



def test_a_sendable_data_extension_as_the_esp_side(sandbox, tmp_path) -> None:
    from connector.sandbox.marketing_cloud.dataext import DEFieldRec

    esp = sandbox.esp.store
    esp.add_data_extension("members", "Members", [
        DEFieldRec("ContactId", "Text", 36, is_primary_key=True, is_required=True),
        DEFieldRec("Tier", "Text", 20), DEFieldRec("Changed", "Date")], sendable_field="ContactId")
    org = Org(sandbox, tmp_path, rules="[sync.contact]\naddress1_city = Tier | both\n", data_extension="members",
              data_extension_modified_field="Changed")
    try:
        for n, tier in enumerate(["Gold", "Silver"]):
            esp.edit_row("members", {"ContactId": org.ids[n], "Tier": tier, "Changed": "1/1/2026 10:00:00 AM"})
        org.crm.patch("contacts", org.ids[2], {"address1_city": "Bronze"})
        esp.edit_row("members", {"ContactId": org.ids[2], "Tier": "", "Changed": "1/1/2026 10:00:00 AM"})
        outcome = org.run(full=True)
        assert outcome.ok, outcome.message
        assert [org.contact(n)["address1_city"] for n in range(2)] == ["Gold", "Silver"]
        rows = {r["ContactId"]: r for r in esp.data_extension(customer_key="members").rows.values()}
        assert rows[org.ids[2]]["Tier"] == "Bronze"
        esp.edit_row("members", {"ContactId": org.ids[0], "Tier": "Platinum", "Changed": "12/1/2030 10:00:00 AM"})
        again = org.run()
        assert again.ok and org.contact(0)["address1_city"] == "Platinum", again.details
        assert not again.details.get("to_esp"), again.details  # the Bronze row written last run is not news
    finally:
        org.close()


def test_the_same_bad_value_is_reported_once_not_every_run(org: Org) -> None:
    assert org.run(full=True).ok
    org.esp.edit_subscriber(org.ids[0], attributes={"Country": "Narnia"})
    assert org.run().details["skipped"] == 1
    org.esp.edit_subscriber(org.ids[0], attributes={"Country": "Narnia", "First Name": "Ann"})  # again, unfixed
    again = org.run(full=True)
    assert again.details["skipped_before"] == 1 and org.contact(0)["firstname"] == "Ann", again.details
    assert len([c for c in org.state.iter_changes_logged() if c.direction == "skipped"]) == 1
    org.esp.edit_subscriber(org.ids[0], attributes={"Country": "Atlantis"})  # another bad value is news
    assert org.run().details.get("skipped_before") is None
    assert len([c for c in org.state.iter_changes_logged() if c.direction == "skipped"]) == 2


def test_two_tables_in_two_workers(sandbox, tmp_path) -> None:
    org = Org(sandbox, tmp_path, extra="\n[sync.lead]\ncompanyname = Company | both\n", workers="2")
    try:
        lead = org.crm.insert("leads", {"firstname": "Lea", "lastname": "Lead", "companyname": "Acme",
                                        "emailaddress1": "lea@example.com"})
        org.esp.add_subscriber(lead, "lea@example.com", attributes={"Company": "Acme"})
        assert org.run(full=True).ok
        org.esp.edit_subscriber(lead, attributes={"Company": "Acme Ltd"})
        org.crm.patch("contacts", org.ids[0], {"firstname": "Both"})
        outcome = org.run()
        assert outcome.ok and outcome.details["to_crm"] == 1 and outcome.details["to_esp"] == 1, outcome.details
        assert org.crm.get("leads", lead)["companyname"] == "Acme Ltd"
        assert org.subscriber(0).attributes["First Name"] == "Both"
    finally:
        org.close()


def test_status_shows_the_sync_checkpoints(org: Org) -> None:
    from connector.commands.status import collect_status, render_text

    before = collect_status(org.config, org.state)["sync"]
    assert before["esp_watermark"] is None and before["tables"] == {"contact": {"checkpoint": False, "records": 0}}
    assert org.run(full=True).ok
    report = collect_status(org.config, org.state)
    assert report["sync"]["tables"]["contact"] == {"checkpoint": True, "records": 3}
    text = render_text(report)
    assert "Sync: ESP watermark 20" in text and "contact          3 record(s) agreed; change-tracking checkpoint" in text


def test_old_test_mode_reports_leave_the_folder(sandbox, tmp_path) -> None:
    import os

    folder = tmp_path / "reports"
    folder.mkdir()
    old = folder / "sync-20250101T000000Z-old.csv"
    old.write_text("table,record\n")
    os.utime(old, (0, 0))
    org = Org(sandbox, tmp_path, test_mode="true", report_folder=str(folder), change_log_keep_days="30")
    try:
        assert org.run().ok
        assert not old.exists() and len(list(folder.iterdir())) == 1
    finally:
        org.close()
