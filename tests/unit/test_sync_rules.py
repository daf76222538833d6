"""Sync rules and their transforms: parsing, both directions, the way back, bad values."""

from __future__ import annotations

import pytest

from connector.sync.rules import RuleProblem, check_unique, parse_rule
from connector.sync.transforms import TransformError

TABLES = {"countries": {"Austria": "Österreich", "Germany": "Deutschland"},
          "many": {"Austria": "DACH", "Germany": "DACH"}}


def rule(value: str, column: str = "address1_country"):
    return parse_rule("contact", column, value, 7, TABLES)


def test_rule_line_parts() -> None:
    r = rule("Country | both | trim | map:countries | conflict:esp")
    assert (r.crm_column, r.esp_attribute, r.direction, r.conflict) == ("address1_country", "Country", "both", "esp")
    assert r.to_esp and r.to_crm and r.label == "sync.contact:7"
    assert r.chain.to_esp(" austria ") == "Österreich"
    assert r.chain.to_crm("Deutschland") == "Germany"


def test_inline_map_and_case_both_ways() -> None:
    r = rule("Country | BOTH | map(Austria <-> Österreich; Italy <-> Italia) | upper")
    assert r.chain.to_esp("Italy") == "ITALIA"
    assert r.chain.to_crm("ÖSTERREICH") == "Austria"  # case falls back ignoring case


def test_date_format_both_ways() -> None:
    r = rule("Birthday | both | date:%d.%m.%Y", column="birthdate")
    assert r.chain.to_esp("1990-05-31") == "31.05.1990"
    assert r.chain.to_esp("1990-05-31T22:30:00Z") == "31.05.1990"
    assert r.chain.to_crm("01.02.2003") == "2003-02-01"
    with pytest.raises(TransformError, match="does not match"):
        r.chain.to_crm("2003/02/01")


def test_optionset_needs_the_crm_options() -> None:
    r = rule("Channel | both | optionset", column="preferredcontactmethodcode")
    assert r.chain.needs_options
    with pytest.raises(TransformError, match="options were not read"):
        r.chain.to_esp("2")
    bound = r.chain.with_options({1: "Any", 2: "Email", 3: "Phone"})
    assert bound.to_esp("2") == "Email"
    assert bound.to_crm("phone") == "3"
    with pytest.raises(TransformError, match="option label 'Fax'"):
        bound.to_crm("Fax")
    with pytest.raises(TransformError, match="not one of"):
        bound.to_esp("9")
    assert bound.with_options({1: "A", 2: "a"}).lossy  # labels that repeat have no way back


def test_unmappable_value_raises() -> None:
    with pytest.raises(TransformError, match="'France' has no line in map:countries"):
        rule("Country | to_esp | map:countries").chain.to_esp("France")
    assert rule("Country | to_esp | map:countries").chain.to_esp("") == ""  # blank passes


@pytest.mark.parametrize("value, message", [
    ("Country | both | map:many", "no way back"),
    ("Country | both | default:AT", "no way back"),
    ("Country | both | truncate:2", "no way back"),
    ("Birthday | both | date:%d.%m", "no way back"),
    ("Country | sideways", "unknown direction"),
    ("Country", "needs an ESP attribute and a direction"),
    ("Country | both | reverse", "unknown transform"),
    ("Country | both | map:nothing", "has no [transform.nothing]"),
    ("Country | to_esp | conflict:esp", "one-way rule"),
    ("Country | both | conflict:latest", "unknown conflict rule"),
    ("Country | both | map(Austria)", "inline map"),
])
def test_bad_rules_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(RuleProblem, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        rule(value)
    assert info.value.hint


def test_one_way_rules_may_be_lossy() -> None:
    r = rule("Country | to_esp | map:many | default:none")
    assert r.chain.to_esp("") == "none"
    assert r.chain.to_esp("Germany") == "DACH"
    with pytest.raises(TransformError, match="no way back"):
        r.chain.to_crm("DACH")


def test_bad_column_and_duplicate_attribute() -> None:
    with pytest.raises(RuleProblem, match="not a CRM column"):
        parse_rule("contact", "first name", "FirstName | both")
    rules = [parse_rule("contact", "firstname", "Name | both", 3), parse_rule("contact", "lastname", "name | both", 4)]
    [(second, message, _)] = check_unique(rules)
    assert second.line == 4 and "firstname (line 3)" in message
