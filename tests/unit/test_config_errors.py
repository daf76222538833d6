"""A table of bad files and the exact problems check-config reports for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connector.config import ConfigProblem, load_config
from connector.errors import ConfigError

CRM_OK = "[crm]\nurl = https://org.crm.dynamics.com\nauthority = https://login.microsoftonline.com/t\nclient_id = a\n"
ENV = {"CONNECTOR_CRM_CLIENT_SECRET": "x" * 12}

CASES = [
    ("unknown key with a hint", "[sends]\npoll_minute = 5\n", [
        "service.ini:2 [sends] poll_minute: unknown option (hint: did you mean 'poll_minutes'?)"]),
    ("unknown key without a close match", "[batching]\nfoo = 1\n", [
        "service.ini:2 [batching] foo: unknown option (hint: options of [batching]: enabled, threshold, batch_size)"]),
    ("unknown section", "[traking]\nmode = all\n", [
        "service.ini:1 [traking]: unknown section (hint: did you mean '[tracking]'?)"]),
    ("not a number", "[sends]\nworkers = two\n", [
        "service.ini:2 [sends] workers: should be a valid integer, unable to parse string as an integer, got 'two' "
        "(hint: write a plain number from 1 to 64; the default is 2)"]),
    ("inline comment", "[tracking]\npoll_minutes = 30 # half an hour\n", [
        "service.ini:2 [tracking] poll_minutes: should be a valid number, unable to parse string as a number, "
        "got '30 # half an hour' (hint: comments must be on their own line, not after a value)"]),
    ("out of range", "[batching]\nbatch_size = 0\n", [
        "service.ini:2 [batching] batch_size: should be greater than or equal to 1, got '0' "
        "(hint: allowed: 1 to 1,000,000; the default is 5000)"]),
    ("bad choice", "[tracking]\nmode = respnders\n", [
        "service.ini:2 [tracking] mode: should be 'none', 'aggregate', 'responders' or 'all', got 'respnders' "
        "(hint: did you mean 'responders'?)"]),
    ("bad list item", "[tracking]\nevent_types = open, clik\n", [
        "service.ini:2 [tracking] event_types: item 2 ('clik') should be 'sent', 'open', 'click', 'bounce', "
        "'unsub' or 'notsent' (hint: did you mean 'click'?)"]),
    ("empty list", "[sends]\nallowed_roles =\n", [
        "service.ini:2 [sends] allowed_roles: needs at least one value (hint: separate values with commas)"]),
    ("bad boolean", "[batching]\nenabled = maybe\n", [
        "service.ini:2 [batching] enabled: should be a valid boolean, unable to interpret input, got 'maybe' "
        "(hint: write true or false)"]),
    ("key twice", "[sends]\nworkers = 2\nWorkers = 3\n", [
        "service.ini:3 [sends] Workers: given twice (first at line 2) (hint: keep one of them; keys are compared "
        "ignoring case)"]),
    ("section twice", "[sends]\n[imports]\n[sends]\n", [
        "service.ini:3 [sends]: section given twice (first at line 1) (hint: merge the two sections into one)"]),
    ("no equals sign", "[sends]\nworkers 2\n", [
        "service.ini:2 [sends]: 'workers 2' is not a 'key = value' line (hint: one option per line, written "
        "key = value; comments start with # or ;)"]),
    ("option before any section", "workers = 2\n", [
        "service.ini:1 workers: option outside any section (hint: put it under its [section] header)"]),
    ("oauth without its settings", "[crm]\nurl = https://org.crm.dynamics.com\n", [
        "service.ini:1 [crm] authority: required when [crm] auth = oauth (hint: set authority in [crm])",
        "service.ini:1 [crm] client_id: required when [crm] auth = oauth (hint: set client_id in [crm])"]),
    ("plain http to a remote CRM", CRM_OK.replace("https://org", "http://org"), [
        "service.ini:2 [crm] url: not an https URL: 'http://org.crm.dynamics.com' (hint: use https://; plain http "
        "is accepted for 127.0.0.1/localhost only)"]),
    ("ntlm without password", "[crm]\nurl = https://crm.local\nauth = ntlm\nusername = DOM\\svc\n", [
        "service.ini:1 [crm] password: required when [crm] auth = ntlm (hint: set the environment variable "
        "CONNECTOR_CRM_PASSWORD or crm.password in the [service] secrets_file)"]),
    ("wsse without endpoint", "[esp]\nauth = wsse\nusername = api\n", [
        "service.ini:1 [esp] wsdl: required once the ESP is configured (hint: set wsdl in [esp])",
        "service.ini:1 [esp] password: required when [esp] auth = wsse (hint: set the environment variable "
        "CONNECTOR_ESP_PASSWORD or esp.password in the [service] secrets_file)",
        "service.ini:1 [esp] endpoint: required when [esp] auth = wsse (hint: set endpoint to the SOAP URL, e.g. "
        "https://<subdomain>.soap.marketingcloudapis.com/Service.asmx)"]),
    ("sftp without credentials", "[sftp]\nhost = ftp.example\nusername = u\n", [
        "service.ini:1 [sftp] password: a password or a private_key_file is required (hint: set private_key_file, "
        "or the environment variable CONNECTOR_SFTP_PASSWORD)"]),
    ("missing files", "[sftp]\nhost = h\nusername = u\nprivate_key_file = id_rsa\n", [
        "service.ini:4 [sftp] private_key_file: file not found: {dir}/id_rsa (hint: relative paths are read from "
        "the folder of service.ini)"]),
    ("default campaign not a GUID", "[tracking]\ndefault_campaign = Spring\n", [
        "service.ini:2 [tracking] default_campaign: not a CRM record id: 'Spring' (hint: give the campaign's GUID, "
        "e.g. 2f1c6a3e-0b6d-4a8e-9d6e-1c2b3a4d5e6f)"]),
    ("mapping of an unknown table", "[mapping.contacts]\nA = b\n", [
        "service.ini:1 [mapping.contacts]: no CRM table 'contacts' to map (hint: did you mean 'contact'?)"]),
    ("mapping lookup without transform", "[mapping.contact]\nCountry = address1_country | lookup:countrys\n"
     "[transform.countries]\nAustria = Österreich\n", [
        "service.ini:2 [mapping.contact] Country: lookup 'countrys' has no [transform.countrys] section "
        "(hint: did you mean 'countries'?)"]),
    ("mapping unknown step", "[mapping.lead]\nName = lastname | uper\n", [
        "service.ini:2 [mapping.lead] Name: unknown mapping step 'uper' (hint: did you mean 'upper'?)"]),
    ("mapping date without a directive", "[mapping.contact]\nBorn = birthdate | date:dd.mm.yyyy\n", [
        "service.ini:2 [mapping.contact] Born: date format 'dd.mm.yyyy' has no % directive (hint: write a strftime "
        "format, e.g. date:%d.%m.%Y or date:%Y-%m-%d %H:%M)"]),
    ("mapping unknown time zone", "[mapping.contact]\nBorn = birthdate | tz:Europe/Wien\n", [
        "service.ini:2 [mapping.contact] Born: unknown time zone 'Europe/Wien' (hint: use an IANA zone name, e.g. "
        "tz:Europe/Vienna, tz:America/New_York or tz:UTC)"]),
    ("mapping label with a date format", "[mapping.contact]\nBorn = birthdate | label | date:%d.%m.%Y\n", [
        "service.ini:2 [mapping.contact] Born: label and date:/tz: on one line (hint: label takes CRM's display "
        "text as it is (dates already formatted for the user); use date:/tz: without label to format a date "
        "yourself)"]),
    ("mapping label given twice", "[mapping.contact]\nGender = gendercode | label | label\n", [
        "service.ini:2 [mapping.contact] Gender: label given twice (hint: keep one label: step)"]),
    ("mapping not a column", "[mapping.lead]\nName = last name\n", [
        "service.ini:2 [mapping.lead] Name: 'last name' is not a CRM column name (hint: use the column's logical "
        "name, e.g. address1_country; the steps after it are separated by |)"]),
    ("mapping without a column", "[mapping.lead]\nName = | upper\n", [
        "service.ini:2 [mapping.lead] Name: no CRM column (hint: write ESP attribute = crm_column [| step ...])"]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_file(write_ini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: list[str]) -> None:
    path = write_ini(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("service.ini", env=ENV)
    assert [str(p) for p in info.value.problems] == [e.format(dir=tmp_path) for e in expected]
    assert str(info.value) == "\n".join(e.format(dir=tmp_path) for e in expected)
    assert path.exists()


def test_all_problems_at_once(write_ini) -> None:
    text = "[sends]\npoll_minute = 5\nworkers = x\n[trackin]\n[tracking]\nmode = bad\n" + CRM_OK
    with pytest.raises(ConfigError) as info:
        load_config(write_ini(text), env=ENV)
    problems = info.value.problems
    assert [(p.section, p.key, p.line) for p in problems] == [
        ("sends", "poll_minute", 2), ("sends", "workers", 3), ("trackin", "", 4), ("tracking", "mode", 6)]
    assert all(isinstance(p, ConfigProblem) and p.hint for p in problems)


def test_oauth_secret_missing(write_ini) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_ini(CRM_OK), env={})
    assert [(p.key, p.hint) for p in info.value.problems] == [
        ("client_secret", "set the environment variable CONNECTOR_CRM_CLIENT_SECRET or crm.client_secret in the "
         "[service] secrets_file")]


def test_secret_in_a_readable_ini(write_ini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_ini(CRM_OK + "client_secret = abc\n", mode=0o644)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("service.ini", env={})
    assert [str(p) for p in info.value.problems] == [
        "service.ini:5 [crm] client_secret: a secret in a file others can read (hint: move it to the environment "
        "variable CONNECTOR_CRM_CLIENT_SECRET or to the [service] secrets_file, or make the file readable by its "
        "owner only (chmod 600 service.ini))"]


def test_password_in_a_database_url_of_a_readable_ini(write_ini) -> None:
    path = write_ini("[state]\nurl = postgresql://u:pw@db/x\n[staging]\nurl = postgresql://u@db/x\n", mode=0o640)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [(p.section, p.key, p.message) for p in info.value.problems] == [
        ("state", "url", "a password in this URL in a file others can read")]


def test_secrets_file_problems(write_ini, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.ini"
    secrets.write_text("crm.client_secret = a\nesp.pasword = b\nsends.workers = 3\njunk\ncrm.client_secret = c\n")
    os.chmod(secrets, 0o600)
    with pytest.raises(ConfigError) as info:
        load_config(write_ini("[service]\nsecrets_file = secrets.ini\n"), env={})
    assert [str(p) for p in info.value.problems] == [
        f"{secrets}:2 [esp] pasword: unknown secret esp.pasword (hint: did you mean 'esp.password'?)",
        f"{secrets}:3 [sends] workers: not a secret; the secrets file holds secrets only (hint: set it in service.ini)",
        f"{secrets}:4 [service] junk: not a 'section.key = value' line (hint: write e.g. crm.client_secret = ...)",
        f"{secrets}:5 [service] crm.client_secret: given twice (first at line 1) (hint: keep one of them)",
    ]


def test_missing_secrets_file(write_ini, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_ini("[service]\nsecrets_file = nope.ini\n"), env={})
    (problem,) = info.value.problems
    assert (problem.section, problem.key, problem.line) == ("service", "secrets_file", 2)
    assert problem.message == f"cannot read {tmp_path / 'nope.ini'}: No such file or directory"


def test_group_readable_secrets_file(write_ini, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.ini"
    secrets.write_text("crm.client_secret = a\n")
    os.chmod(secrets, 0o640)
    with pytest.raises(ConfigError) as info:
        load_config(write_ini("[service]\nsecrets_file = secrets.ini\n"), env={})
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'service.ini'}:2 [service] secrets_file: {secrets} is readable "
        f"by others (mode -rw-r-----); it holds secrets (hint: run: chmod 600 {secrets})"]


def test_secret_values_never_in_problems(write_ini) -> None:
    path = write_ini("[crm]\nurl = https://o.crm.dynamics.com\nauth = ntlm\nusername = u\n", mode=0o600)
    with pytest.raises(ConfigError):
        load_config(path, env={"CONNECTOR_CRM_PASSWORD": ""})  # blank = unset
    config = load_config(path, env={"CONNECTOR_CRM_PASSWORD": "hunter2hunter2"})
    assert "hunter2hunter2" not in repr(config) and "hunter2hunter2" not in str(config)


def test_unreadable_files(write_ini, tmp_path: Path) -> None:
    (tmp_path / "secrets.ini").write_bytes(b"crm.client_secret = \xff\xfe\n")
    os.chmod(tmp_path / "secrets.ini", 0o600)
    with pytest.raises(ConfigError) as info:
        load_config(write_ini("[service]\nsecrets_file = secrets.ini\n"), env={})
    assert info.value.problems[0].message.startswith(f"cannot read {tmp_path / 'secrets.ini'}: 'utf-8' codec")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert info.value.problems[0].message.startswith("cannot read the configuration")
