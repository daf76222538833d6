"""``connector check-config --online`` against the three sandboxes: CRM columns and roles, ESP attributes and
e-mail, SFTP folder — every problem named with its service.ini line, exit 3; a fitting configuration exits 0."""

from __future__ import annotations

import json

import pytest

from connector.cli import EXIT_CONFIG, main


def _line(path, prefix: str) -> int:
    return 1 + next(i for i, text in enumerate(path.read_text().splitlines()) if text.startswith(prefix))


def test_the_generated_configuration_fits_the_sandbox_peers(sandbox, tmp_path, capsys) -> None:
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off")
    assert main(["check-config", "-c", str(ini), "--online"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    for what in ("mapped CRM columns exist: OK", "allowed roles exist: OK", "mapped ESP attributes exist: OK",
                 "default e-mail exists: OK", "import folder writable: OK"):
        assert what in out
    assert not [p for p in (sandbox.sftp.root / "Import").iterdir() if p.name.startswith("cesp-check-")]


def test_every_mismatch_with_the_peers_is_named_with_its_line(sandbox, tmp_path, capsys) -> None:
    ini = sandbox.write_service_ini(
        tmp_path / "service.ini", logging__console="off",
        sends__allowed_roles="System Administrator, Campaign Wizard", sends__default_email_key="no-such-email",
        mapping_contact={"Shoe Size": "address1_postalcode", "Nickname": "nick_name",
                         "First Name": "firstname | label", "Company": "_parentcustomerid_value | label"},
        sftp__import_folder="/NoSuchFolder")
    assert main(["check-config", "-c", str(ini), "--online"]) == EXIT_CONFIG
    out = capsys.readouterr().out
    assert f"{ini}:{_line(ini, 'Shoe Size =')} [mapping.contact] Shoe Size: ESP attribute 'Shoe Size' does not " \
           "exist in the ESP account 'sandbox'" in out
    assert f"{ini}:{_line(ini, 'Nickname =')} [mapping.contact] Nickname: CRM table 'contact' has no column " \
           "'nick_name'" in out
    assert f"{ini}:{_line(ini, 'First Name =')} [mapping.contact] First Name: label on 'firstname', a text " \
           "column" in out
    assert "Company:" not in out  # a lookup as _<name>_value is a column; label on it is what label is for
    assert "[sends] allowed_roles: the CRM organization has no security role 'Campaign Wizard'" in out
    assert "System Administrator'" not in out
    assert "[sends] default_email_key: the ESP account has no e-mail with the customer key 'no-such-email'" in out
    assert "SFTP import folder writable: 1 problem(s)" in out


@pytest.mark.parametrize("broken", ["esp", "crm"])
def test_a_peer_that_refuses_the_credentials_is_a_problem_not_a_crash(sandbox, tmp_path, capsys, broken) -> None:
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off")
    secrets = ini.parent / "secrets.ini"
    secrets.write_text(secrets.read_text().replace(f"{broken}.client_secret = ", f"{broken}.client_secret = x"))
    assert main(["check-config", "-c", str(ini), "--online", "--json"]) == EXIT_CONFIG
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    failing = [c for c in report["online"] if c["problems"]]
    assert failing and {c["peer"] for c in failing} == {broken.upper()}
    assert "x" + getattr(sandbox, broken).client_secret not in json.dumps(report)


def test_sync_rules_that_do_not_fit_the_peers_are_named_with_their_line(sandbox, tmp_path, capsys) -> None:
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off")
    ini.write_text(ini.read_text() + "\n[sync.contact]\nfirstname = First Name | both | trim\n"
                   "modifiedon = Since | both\nnick_name = Nick | to_esp\ngendercode = Gender | both | optionset\n"
                   "lastname = Shoe Size | to_crm\nemailaddress1 = Email Address | both\n"
                   "address1_city = City | both | optionset\n")
    assert main(["check-config", "-c", str(ini), "--online"]) == EXIT_CONFIG
    out = capsys.readouterr().out
    assert f"{ini}:{_line(ini, 'modifiedon =')} [sync.contact] modifiedon: direction both writes the read-only " \
           "CRM column 'modifiedon'" in out
    assert f"{ini}:{_line(ini, 'nick_name =')} [sync.contact] nick_name: CRM table 'contact' has no column" in out
    assert f"{ini}:{_line(ini, 'lastname =')} [sync.contact] lastname: ESP attribute 'Shoe Size' does not exist" in out
    assert f"[sync.contact] address1_city: optionset on 'address1_city', which is a String column" in out
    for fine in ("firstname:", "gendercode:", "emailaddress1:"):
        assert f"[sync.contact] {fine}" not in out
    assert "synced CRM columns exist and can be written: 3 problem(s)" in out


def test_a_synced_list_the_esp_account_lacks_is_named(sandbox, tmp_path, capsys) -> None:
    from connector.sandbox.marketing_cloud.records import ListRec

    sandbox.esp.store.lists[9911] = ListRec(9911, "cesp-check-news", "News", "check-news-object-id")
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off",
                                    sync__crm_deleted="remove_from_lists",
                                    sync__synced_lists="cesp-check-news, cesp-check-offers")
    assert main(["check-config", "-c", str(ini), "--online"]) == EXIT_CONFIG
    out = capsys.readouterr().out
    assert "ESP  synced lists exist: 1 problem(s)" in out
    assert f"{ini} [sync] synced_lists: the ESP account has no list with the customer key 'cesp-check-offers'" in out
    assert "customer key 'cesp-check-news'" not in out

    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off",
                                    sync__crm_deleted="remove_from_lists", sync__synced_lists="cesp-check-news")
    assert main(["check-config", "-c", str(ini), "--online"]) == 0, capsys.readouterr()
    assert "synced lists exist: OK (1 list(s): cesp-check-news)" in capsys.readouterr().out
