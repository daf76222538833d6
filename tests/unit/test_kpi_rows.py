"""The KPI job's pure parts: source rows, their value hash, the [kpi] checks, the schedule."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError
from connector.service import configured_steps, step_intervals
from connector.steps.kpi.rows import BadRow, KpiRow, missing_columns, parse_row


def row(**raw: object) -> KpiRow | BadRow:
    return parse_row({"customer_key": "Ada@Example.com ", "kpi": "revenue_6m", "value": 1, **raw})


def test_a_valid_row_is_normalized_for_matching_and_hashing() -> None:
    parsed = row(value="1234.50000", period=" 2026-H2 ")
    assert isinstance(parsed, KpiRow)
    assert (parsed.customer_key, parsed.shown_key, parsed.kpi) == ("ada@example.com", "Ada@Example.com", "revenue_6m")
    assert parsed.value == Decimal("1234.5") and parsed.period == "2026-H2"
    assert parsed.value_hash == row(value=1234.5, period="2026-H2").value_hash  # same value, same hash
    assert parsed.value_hash != row(value=1234.5, period="2026-H1").value_hash  # the period counts
    assert row(value="0.00001").value == 0 and row(value="12.34567").value == Decimal("12.3457")
    assert row(value=None).value is None and row(value=None).value_hash != row(value=0).value_hash
    assert str(row(value=100).value) == "100"  # never 1E+2 on the wire


@pytest.mark.parametrize(("raw", "reason"), [
    ({"customer_key": "  "}, "invalid_customer_key"),
    ({"customer_key": "x" * 401}, "invalid_customer_key"),
    ({"kpi": "orders:books"}, "invalid_kpi_name"),
    ({"kpi": "a/b"}, "invalid_kpi_name"),
    ({"kpi": "k" * 101}, "invalid_kpi_name"),
    ({"value": "twelve"}, "invalid_value"),
    ({"value": True}, "invalid_value"),
    ({"value": float("nan")}, "invalid_value"),
    ({"value": "1e12"}, "invalid_value"),
    ({"period": "p" * 101}, "invalid_period"),
])
def test_bad_rows_say_why(raw: dict, reason: str) -> None:
    parsed = row(**raw)
    assert isinstance(parsed, BadRow) and parsed.reason == reason and parsed.detail


def test_the_query_must_return_the_three_columns() -> None:
    assert missing_columns(["CUSTOMER_KEY", "kpi", "value", "period"]) == []
    assert missing_columns(["email", "kpi"]) == ["customer_key", "value"]


def _load(tmp_path: Path, text: str, env: dict | None = None):
    path = tmp_path / "service.ini"
    path.write_text(text)
    os.chmod(path, 0o600)
    return load_config(path, env=env or {})


def test_check_config_names_the_kpi_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "[kpi]\nsource_url = nosuch://kpi:pw@db/erp\nquery = select 1\nquery_file = q.sql\n")
    text = str(err.value)
    assert "[kpi] source_url: not a usable database URL: nosuch://kpi:***@db/erp" in text and ":pw@" not in text
    assert "[kpi] query: give exactly one of query and query_file" in text
    assert "[kpi] query_file: file not found" in text
    assert "[kpi] match_column: required once [kpi] source_url is set" in text
    with pytest.raises(ConfigError, match=r"\[kpi\] poll_minutes: needs \[kpi\] source_url, which is not set "
                       r"\(hint: set the environment variable CONNECTOR_KPI_SOURCE_URL"):
        _load(tmp_path, "[kpi]\npoll_minutes = 60\n")
    with pytest.raises(ConfigError, match=r"\[kpi\] match_column: .*pattern"):
        _load(tmp_path, "[kpi]\nmatch_column = E-Mail\n")


def test_the_source_url_may_come_from_the_environment_and_is_redacted(tmp_path: Path) -> None:
    config = _load(tmp_path, "[kpi]\nquery = select 1\nmatch_column = emailaddress1\npoll_minutes = 30\n",
                   {"CONNECTOR_KPI_SOURCE_URL": "postgresql://kpi:pw-from-env@db/erp"})
    assert config.kpi.scheduled and config.secret_sources["kpi.source_url"].startswith("environment")
    assert "pw-from-env" in config.secret_values()


def test_the_kpi_step_is_scheduled_only_when_configured(tmp_path: Path) -> None:
    plain = _load(tmp_path, "")
    assert "kpi" not in configured_steps(plain) and step_intervals(plain)["kpi"] == 0
    by_hand = _load(tmp_path, "[kpi]\nsource_url = sqlite:///erp.db\nquery = select 1\nmatch_column = accountnumber\n")
    assert by_hand.kpi.enabled and "kpi" not in configured_steps(by_hand)
    scheduled = _load(tmp_path, "[kpi]\nsource_url = sqlite:///erp.db\nquery = select 1\nmatch_column = x\n"
                                "poll_minutes = 90\n")
    assert configured_steps(scheduled)["kpi"] == "connector.steps.kpi:run_kpi"
    assert step_intervals(scheduled)["kpi"] == 5400
