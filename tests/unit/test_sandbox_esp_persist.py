"""The Marketing Cloud sandbox's account written to JSON and read back."""

from __future__ import annotations

import json

from connector.sandbox.marketing_cloud.persist import STATE_FILE, load_store, save_store
from connector.sandbox.marketing_cloud.records import SimClock
from connector.sandbox.marketing_cloud.soap import Obj
from connector.sandbox.marketing_cloud.store import EspStore


def test_round_trip_keeps_objects_runs_and_events(tmp_path):
    (tmp_path / "drop" / "Import").mkdir(parents=True)
    store = EspStore(import_root=tmp_path / "drop", clock=SimClock(), import_delay=0.0)
    list_id = store.create_list(Obj("List", {"ListName": ["L"], "CustomerKey": ["L"]}))["NewID"]
    store.add_subscriber("k1", "k1@example.com", attributes={"City": "Zürich"}, list_ids=(list_id,))
    (tmp_path / "drop" / "Import" / "f.csv").write_text("SubscriberKey,EmailAddress\nk2,bad\nk3,k3@example.com\n")
    store.create_import_definition(Obj("ImportDefinition", {
        "CustomerKey": ["imp"], "DestinationObject": [Obj("List", {"ID": [str(list_id)]})], "FileSpec": ["f.csv"]}))
    store.start_import(Obj("ImportDefinition", {"CustomerKey": ["imp"]}))
    job = store.generate_events(20, event_types=("ClickEvent",), arrival_lag_minutes=5)
    assert store.wait_idle(10)
    path = save_store(store, tmp_path)
    assert path.name == STATE_FILE and json.loads(path.read_text())["version"] == 1

    again = EspStore(import_root=tmp_path / "drop", clock=SimClock(), import_delay=0.0)
    assert load_store(again, tmp_path)
    assert again.subscriber("k1").attributes == {"City": "Zürich"}
    assert set(again.lists[list_id].members) == {"k1", "k3"}
    run = again.runs_for("imp")[0]
    assert (run.status, run.ok, run.errors, run.row_errors[0].subscriber_key) == ("Completed", 1, 1, "k2")
    click = next(b for b in again.blocks if b.send_id == job)
    original = next(b for b in store.blocks if b.send_id == job)
    assert list(click.ts) == list(original.ts) and list(click.lag) == list(original.lag)
    assert again.sends[job].blocks == [click]
    new_list = again.create_list(Obj("List", {"ListName": ["M"], "CustomerKey": ["M"]}))["NewID"]
    assert new_list > list_id


def test_no_state_file_means_a_fresh_store(tmp_path):
    store = EspStore(import_root=tmp_path, clock=SimClock())
    assert not load_store(store, tmp_path)
    assert [e.customer_key for e in store.emails.values()] == ["cesp-demo-email", "welcome"]


def test_the_attribute_catalogue_is_kept(tmp_path):
    store = EspStore(import_root=tmp_path, clock=SimClock(), import_delay=0.0, attributes=["Email Address", "Tier"])
    store.add_attribute("Shoe Size")
    save_store(store, tmp_path)
    again = EspStore(import_root=tmp_path, clock=SimClock(), import_delay=0.0)  # the default catalogue first
    assert load_store(again, tmp_path)
    assert {a.name for a in again.attributes.values()} == {"Email Address", "Tier", "Shoe Size"}
    assert again.attribute("shoe size").name == "Shoe Size"


def test_data_extensions_rows_and_membership_dates_are_kept(tmp_path):
    from connector.sandbox.marketing_cloud.dataext import DEFieldRec

    store = EspStore(import_root=tmp_path, clock=SimClock(), import_delay=0.0)
    store.add_data_extension("de", "DE", [DEFieldRec("Id", "Text", 10, is_primary_key=True, is_required=True),
                                          DEFieldRec("On", "Date"), DEFieldRec("Vip", "Boolean"),
                                          DEFieldRec("N", "Number")], sendable_field="Id")
    store.edit_row("de", {"Id": "a", "On": "2026-03-01T12:00:00Z", "Vip": "1", "N": "7"})
    list_id = store.create_list(Obj("List", {"ListName": ["L"], "CustomerKey": ["L"]}))["NewID"]
    store.upsert_subscriber(Obj("Subscriber", {"SubscriberKey": ["k"], "EmailAddress": ["k@example.com"], "Lists": [
        Obj("SubscriberList", {"ID": [str(list_id)]})]}), add=True, update=True, list_conflict_ok=True)
    save_store(store, tmp_path)
    again = EspStore(import_root=tmp_path, clock=SimClock(), import_delay=0.0)
    assert load_store(again, tmp_path)
    de = again.data_extensions["de"]
    assert de.is_sendable and de.sendable_field == "Id" and [f.name for f in de.primary_key] == ["Id"]
    assert again.de_rows(de) == store.de_rows(store.data_extensions["de"])
    assert again.lists[list_id].member_modified == store.lists[list_id].member_modified
    assert again.add_data_extension("de2", "DE2", [DEFieldRec("X")]).id > de.id
