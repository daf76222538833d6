"""[sync] and [sync.<table>] in service.ini: loaded, and every bad line reported by line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError

GOOD = """\
[sync]
conflict = esp
conflict_lead = crm
[transform.countries]
Austria = Österreich
[sync.contact]
firstname = FirstName | both | trim
address1_country = Country | both | map:countries | conflict:newest
cesp_score = Score | to_crm
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.ini"
    path.write_text(text, encoding="utf-8")
    return path


def test_rules_and_settings_load(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env={})
    rules = config.sync_rules["contact"]
    assert [(r.crm_column, r.esp_attribute, r.direction, r.line) for r in rules] == [
        ("firstname", "FirstName", "both", 7), ("address1_country", "Country", "both", 8),
        ("cesp_score", "Score", "to_crm", 9)]
    assert rules[1].conflict == "newest" and rules[1].chain.to_crm("Österreich") == "Austria"
    assert config.sync.conflict_rule("contact") == "esp" and config.sync.conflict_rule("lead") == "crm"
    assert load_config(write(tmp_path, ""), env={}).sync_rules == {}


def test_every_bad_line_is_reported_with_its_line(tmp_path: Path) -> None:
    text = GOOD + ("lastname = Name | both | default:x\nemailaddress1 = Firstname | to_esp\n"
                   "[sync.opportunity]\nname = Name | both\n[sends]\nsubscriber_key = email\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    found = {(p.section, p.key, p.line): p.message for p in info.value.problems}
    assert "no way back" in found[("sync.contact", "lastname", 10)]
    assert "already synced with firstname (line 7)" in found[("sync.contact", "emailaddress1", 11)]
    assert "no CRM table 'opportunity'" in found[("sync.opportunity", "", 12)]
    assert "keyed by the CRM record id" in found[("sends", "subscriber_key", 15)]


def test_remove_from_lists_needs_the_synced_lists(tmp_path: Path) -> None:
    good = GOOD.replace("conflict = esp\n", "conflict = esp\ncrm_deleted = remove_from_lists\n"
                        "synced_lists = news, offers, news\n")
    assert load_config(write(tmp_path, good), env={}).sync.synced_list_keys == ["news", "offers"]
    for lists, message in (("", "needs the lists"), ("All Subscribers - 1000", "only when it is deleted")):
        text = GOOD.replace("conflict = esp\n", f"conflict = esp\ncrm_deleted = remove_from_lists\n"
                            f"synced_lists = {lists}\n")
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text), env={})
        found = {(p.section, p.key): p.message for p in info.value.problems}
        assert message in found[("sync", "synced_lists")], found
    dext = good.replace("[transform", "data_extension = DE\ndata_extension_modified_field = Mod\n[transform")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, dext), env={})
    assert any(p.key == "crm_deleted" and "no list to leave" in p.message for p in info.value.problems)


def test_the_sync_step_is_scheduled_only_with_rules(tmp_path: Path) -> None:
    from connector.service import configured_steps, step_intervals, step_workers

    with_rules = load_config(write(tmp_path, GOOD), env={})
    assert "sync" in configured_steps(with_rules)
    assert step_intervals(with_rules)["sync"] == 15 * 60.0 and step_workers(with_rules)["sync"] == 1
    assert "sync" not in configured_steps(load_config(write(tmp_path, "[sync]\npoll_minutes = 5\n"), env={}))


def test_the_service_finds_the_sync_step() -> None:
    from connector.service import STEP_FUNCTIONS, load_step
    from connector.sync.engine import run_sync

    assert load_step(STEP_FUNCTIONS["sync"]) is run_sync
