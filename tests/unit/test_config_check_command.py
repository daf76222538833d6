"""``connector check-config``: every problem with file and line and exit 3, or a summary and exit 0."""

from __future__ import annotations

import pytest

from connector.cli import EXIT_CONFIG, main


def test_problems_are_listed_with_lines_and_exit_3(write_ini, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_ini("[sends]\npoll_minute = 5\n[tracking]\nmode = al\n")
    assert main(["check-config", "-c", str(path)]) == EXIT_CONFIG == 3
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}:2 [sends] poll_minute: unknown option (hint: did you mean 'poll_minutes'?)",
        f"{path}:4 [tracking] mode: should be 'none', 'aggregate', 'responders' or 'all', got 'al' "
        "(hint: did you mean 'all'?)",
    ]
    assert "2 problems" in err


def test_valid_file_prints_a_summary_without_secrets(write_ini, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CONNECTOR_CRM_CLIENT_SECRET", "very-secret-value")
    path = write_ini(
        """
        [crm]
        url = https://contoso.crm.dynamics.com
        authority = https://login.microsoftonline.com/tenant
        client_id = app
        [state]
        url = postgresql+psycopg://connector:db-password@db/state
        [mapping.contact]
        Country = address1_country | lookup:countries
        [transform.countries]
        Austria = Österreich
        """
    )
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK" in out
    assert "https://contoso.crm.dynamics.com (oauth" in out
    assert "sends every 5 min" in out and "tracking every 60 min" in out
    assert "files of 5000 rows over 25000 recipients" in out
    assert "contact: 1 attribute" in out and "countries (1 value)" in out
    assert "crm.client_secret from environment CONNECTOR_CRM_CLIENT_SECRET" in out
    assert "very-secret-value" not in out and "db-password" not in out


def test_missing_file(tmp_path, capsys) -> None:
    assert main(["check-config", "-c", str(tmp_path / "nope.ini")]) == EXIT_CONFIG
    assert "cannot read the configuration" in capsys.readouterr().out


def test_json_output(write_ini, capsys) -> None:
    import json

    bad = write_ini("[sends]\nworkers = 0\n")
    assert main(["check-config", "-c", str(bad), "--json"]) == EXIT_CONFIG
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert data["problems"] == [{"section": "sends", "key": "workers", "line": 2, "file": str(bad),
                                 "message": "should be greater than or equal to 1, got '0'",
                                 "hint": "allowed: 1 to 64; the default is 2"}]
    good = write_ini("", name="good.ini")
    assert main(["check-config", "-c", str(good), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["summary"]["CRM"] == "not configured"
