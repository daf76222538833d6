"""The Dataverse sandbox store's alternate keys: case-insensitive, also in an older data folder."""

from __future__ import annotations

import sqlite3

import pytest

from connector.sandbox.dataverse import DataverseStore, apply_customizations
from connector.sandbox.dataverse.store import StoreError


def test_string_keys_are_case_insensitive_and_an_old_data_folder_is_upgraded(tmp_path) -> None:
    db_file = tmp_path / "crm.sqlite"
    store = DataverseStore(db_file)
    apply_customizations(store)
    store.close()
    # a data folder written before keys were case-insensitive
    raw = sqlite3.connect(db_file)
    raw.execute('DROP INDEX "k_cesp_trackingkey_key"')
    raw.execute('CREATE UNIQUE INDEX "k_cesp_trackingkey_key" ON "e_campaignresponse" ("cesp_trackingkey")')
    raw.commit()
    raw.close()
    store = DataverseStore(db_file)
    try:
        e = store.schema.entity("campaignresponse")
        rid = store.insert("campaignresponses", {"subject": "s", "cesp_trackingkey": "Job.Open.ABC"})
        assert store.find_by_key(e, {"cesp_trackingkey": "job.open.abc"})["activityid"] == rid
        with pytest.raises(StoreError) as twin:
            store.insert("campaignresponses", {"subject": "s", "cesp_trackingkey": "JOB.OPEN.abc"})
        assert twin.value.status == 412
    finally:
        store.close()
