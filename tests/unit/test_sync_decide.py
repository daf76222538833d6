"""The per-field decision against the shadow: who changed, conflicts, one-way rules, bad values."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from connector.sync.decide import Shadow, decide
from connector.sync.rules import parse_rule

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
COUNTRIES = {"countries": {"Austria": "Österreich", "Germany": "Deutschland"}}


def rule(value: str = "Country | both | map:countries"):
    return parse_rule("contact", "address1_country", value, 4, COUNTRIES)


AGREED = Shadow("Austria", "Österreich")


def test_nothing_changed_nothing_done() -> None:
    assert decide(rule(), "newest", None, None, AGREED).action == "none"
    assert decide(rule(), "newest", "Austria", "Österreich", AGREED).action == "none"


def test_one_side_changed_is_carried_over() -> None:
    d = decide(rule(), "newest", "Germany", None, AGREED)
    assert (d.action, d.value, d.old, d.shadow) == ("to_esp", "Deutschland", "Österreich",
                                                   Shadow("Germany", "Deutschland"))
    d = decide(rule(), "newest", None, "Deutschland", AGREED)
    assert (d.action, d.value, d.old) == ("to_crm", "Germany", "Austria")


def test_both_changed_to_the_same_value_agree() -> None:
    d = decide(rule(), "newest", "Germany", "Deutschland", AGREED)
    assert (d.action, d.shadow, d.conflict) == ("agree", Shadow("Germany", "Deutschland"), "")


def test_conflict_newest_compares_utc_timestamps() -> None:
    crm_later = decide(rule(), "newest", "Germany", "Italia", AGREED, T0 + timedelta(minutes=1), T0)
    assert crm_later.action == "to_esp" and crm_later.value == "Deutschland"
    assert "rule newest" in crm_later.conflict and "CRM wins" in crm_later.conflict
    assert "'Germany'" in crm_later.conflict and "'Italia'" in crm_later.conflict
    # the ESP's stamp given in another zone is compared as the same instant
    cet = timezone(timedelta(hours=1))
    esp_later = decide(rule(), "newest", "Austria ", "Deutschland", Shadow("Austria", "Italia"),
                       T0, (T0 + timedelta(seconds=30)).astimezone(cet))
    assert esp_later.action == "to_crm" and esp_later.value == "Germany" and "ESP wins" in esp_later.conflict
    tie = decide(rule(), "newest", "Germany", "Italia", AGREED, T0, T0)
    assert tie.action == "to_esp"


def test_conflict_by_table_rule_and_field_override() -> None:
    d = decide(rule(), "esp", "Germany", "Italia", AGREED)  # the ESP wins with a value the map lacks
    assert d.action == "skip" and "cannot go to CRM" in d.reason and "rule esp" in d.conflict
    d = decide(rule(), "esp", "Germany", "Österreich ", Shadow("Austria", "Italia"))
    assert (d.action, d.value) == ("to_crm", "Austria")
    d = decide(rule("Country | both | map:countries | conflict:crm"), "esp", "Germany", "Österreich",
               Shadow("Austria", "Italia"), T0, T0 + timedelta(hours=1))
    assert d.action == "to_esp" and "rule crm" in d.conflict


def test_one_way_rules_hold_their_source() -> None:
    to_esp = rule("Country | to_esp | map:countries")
    assert decide(to_esp, "newest", None, "Deutschland", AGREED).action == "to_esp"  # ESP edit undone
    d = decide(to_esp, "newest", "Germany", "Italia", AGREED, T0, T0 + timedelta(hours=1))
    assert d.action == "to_esp" and not d.conflict
    to_crm = rule("Country | to_crm | map:countries")
    assert decide(to_crm, "newest", "Germany", None, AGREED).action == "to_crm"  # CRM edit undone
    assert decide(to_crm, "newest", None, "Deutschland", AGREED).value == "Germany"


def test_no_shadow_yet() -> None:
    d = decide(rule(), "newest", "Austria", "Österreich", None)
    assert d.action == "agree" and d.shadow == AGREED
    assert decide(rule(), "newest", "Germany", None, None).action == "to_esp"
    assert decide(rule("Country | to_crm"), "newest", "Germany", None, None).action == "none"
    d = decide(rule(), "crm", "Germany", "Österreich", None)
    assert d.action == "to_esp" and "rule crm" in d.conflict


def test_a_value_the_target_has_is_not_written_again() -> None:
    d = decide(rule(), "newest", "Germany", "Deutschland", Shadow("Austria", "Deutschland"))
    assert d.action == "agree" and d.shadow == Shadow("Germany", "Deutschland")


def test_unmappable_value_is_a_skip_with_a_reason() -> None:
    d = decide(rule(), "newest", "France", None, AGREED)
    assert d.action == "skip" and "'France' has no line in map:countries" in d.reason


def test_a_value_both_sides_already_hold_is_logged_not_written() -> None:
    d = decide(rule(), "newest", "Germany", "Deutschland", AGREED)  # e.g. a run killed after its write
    assert (d.action, d.old, d.value, d.shadow) == ("agree", "Österreich", "Deutschland",
                                                   Shadow("Germany", "Deutschland"))
    assert "already hold the new value" in d.reason


def test_first_contact_fills_a_blank_and_never_erases() -> None:
    assert decide(rule(), "crm", "", "Österreich", None).action == "to_crm"
    assert decide(rule(), "esp", "Germany", "", None).action == "to_esp"
    assert decide(rule("Country | to_esp | map:countries"), "newest", "", "Italia", None).action == "to_esp"
