"""Values check-config used to pass that broke the service (issue 19.7).

Every number is bounded, control characters are refused, a non-UTF-8 file names its first
bad byte, a CA bundle must be PEM certificates, and the problem list is capped. Whatever
the value, loading gives a Config or a ConfigError naming the key: never another exception.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from connector.cli import EXIT_CONFIG, main
from connector.config import MAX_PROBLEMS, load_config, number_range, secret_keys, section_models
from connector.errors import ConfigError
from tests.fixtures.config import pem_certificate

NASTY_NUMBERS = ("inf", "-inf", "nan", "Infinity", "1e308", "-1e308", "1e-320", "-1", "0",
                 "99999999999999999999999999999", "1" * 5000, "0x10", "1_000", "")
NUMERIC = [(section, key, info) for section, model in section_models().items()
           for key, info in model.model_fields.items() if info.annotation in (int, float)]


def _problems_for(exc: ConfigError, section: str, key: str) -> list[str]:
    return [str(p) for p in exc.problems if (p.section, p.key) == (section, key)]


@pytest.mark.parametrize(("section", "key", "info"), NUMERIC, ids=[f"{s}.{k}" for s, k, _ in NUMERIC])
def test_every_number_is_bounded_and_nothing_but_config_errors_escape(write_ini, section, key, info) -> None:
    allowed = number_range(info)
    assert allowed, f"[{section}] {key} has no range"
    for value in NASTY_NUMBERS:
        path = write_ini(f"[{section}]\n{key} = {value}\n")
        try:
            config = load_config(path, env={})
        except ConfigError as exc:
            assert _problems_for(exc, section, key), (value, str(exc))
            continue
        got = getattr(getattr(config, section), key)
        low, high = (re.sub(r"[^0-9.]", "", part) for part in re.split(r" to |, up to ", allowed))
        assert float(low) <= got <= float(high) and got == got, (value, got)  # finite and in range


def test_inf_and_huge_timeouts_are_refused_with_the_range(write_ini) -> None:
    path = write_ini("[imports]\npoll_seconds = inf\n[timeouts]\ncrm_seconds = 1e308\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    text = str(caught.value)
    assert f"{path}:2 [imports] poll_seconds: should be a finite number, got 'inf' " \
           "(hint: write a plain number from more than 0, up to 3,600; the default is 30.0)" in text
    assert f"{path}:4 [timeouts] crm_seconds: should be less than or equal to 3600, got '1e308' " \
           "(hint: allowed: more than 0, up to 3,600; the default is 120.0)" in text


def test_connector_run_refuses_inf_without_a_traceback(write_ini, capsys) -> None:
    path = write_ini("[imports]\npoll_seconds = inf\n[logging]\nconsole = off\n")
    assert main(["run", "--once", "-c", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "[imports] poll_seconds: should be a finite number" in err and "Traceback" not in err


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85", "\t"])
def test_control_characters_are_refused_in_every_text_option(write_ini, char: str) -> None:
    texts = [(section, key) for section, model in section_models().items()
             for key, info in model.model_fields.items() if info.annotation not in (int, float, bool)
             and "Literal" not in str(info.annotation)]
    for section, key in texts:
        path = write_ini(f"[{section}]\n{key} = a{char}b\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        found = _problems_for(caught.value, section, key)
        assert found, (section, key, str(caught.value))
        assert f"control character U+{ord(char):04X}" in found[0] or "should match pattern" in found[0], found
        if (section, key) in secret_keys():
            assert f"a{char}b" not in str(caught.value)


def test_a_nul_in_instance_id_names_the_key(write_ini) -> None:
    path = write_ini("[service]\ninstance_id = conn\x00ector\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == (
        f"{path}:2 [service] instance_id: holds the control character U+0000 (character 5), got 'conn\\x00ector' "
        "(hint: retype the value: it holds an invisible character (copied from a document?))")


def test_control_characters_in_a_secret_from_the_environment(write_ini) -> None:
    path = write_ini("[crm]\nurl = https://contoso.crm.dynamics.com\nauthority = https://login.example/t\n"
                     "client_id = app\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"CONNECTOR_CRM_CLIENT_SECRET": "s3cr\x00t"})
    assert "[crm] client_secret: holds the control character U+0000" in str(caught.value)
    assert "s3cr" not in str(caught.value)


def test_control_characters_in_mapping_and_transform_lines(write_ini) -> None:
    path = write_ini("[mapping.contact]\nCountry = address1_country | default:N\x00A\n"
                     "[transform.countries]\nAustria = \x1b[31mÖsterreich\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert {(p.section, p.key, p.line) for p in caught.value.problems} == {
        ("mapping.contact", "Country", 2), ("transform.countries", "Austria", 4)}


def test_identifiers_have_a_length_limit(write_ini) -> None:
    path = write_ini(f"[service]\ninstance_id = {'x' * 61}\n[esp]\nname = {'y' * 51}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert {(p.section, p.key) for p in caught.value.problems} == {("service", "instance_id"), ("esp", "name")}


def test_a_latin1_file_names_the_line_of_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "service.ini"
    path.write_bytes("[service]\n# Zürich office\ninstance_id = x\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert str(problem) == (f"{path}:2: not UTF-8: byte 0xFC at line 2, column 4 is not valid UTF-8 "
                            "(hint: save it as UTF-8 (in Notepad: Save as, Encoding UTF-8; in vim: :set fenc=utf-8 "
                            "then :w))")


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "service.ini"
    path.write_bytes("[service]\ninstance_id = x\n".encode("utf-16"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "saved as UTF-16, not UTF-8 (hint: save it as UTF-8" in str(caught.value)


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "service.ini"
    path.write_bytes("\ufeff[service]\ninstance_id = Zürich\n".encode("utf-8"))
    assert load_config(path, env={}).service.instance_id == "Zürich"


@pytest.mark.parametrize(("content", "says"), [
    (b"not a certificate\n", "is not a PEM certificate file: no certificate in it"),
    (b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "a private key in it"),
    (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "holds a damaged PEM certificate"),
    (b"\x30\x82\x01\x0a\x02\x82", "is not a PEM certificate file"),  # DER
])
def test_a_ca_bundle_that_is_not_pem_certificates_is_caught(write_ini, tmp_path: Path, content: bytes,
                                                             says: str) -> None:
    (tmp_path / "ca.pem").write_bytes(content)
    path = write_ini("[esp]\nca_bundle = ca.pem\n[crm]\nca_bundle = ca.pem\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    found = {(p.section, p.key): p for p in caught.value.problems}
    assert set(found) == {("esp", "ca_bundle"), ("crm", "ca_bundle")}
    assert says in found["esp", "ca_bundle"].message
    assert "openssl x509 -inform der" in found["esp", "ca_bundle"].hint


def test_a_pem_ca_bundle_passes(write_ini, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(pem_certificate() + pem_certificate())
    config = load_config(write_ini("[esp]\nca_bundle = ca.pem\n"), env={})
    assert config.esp.ca_bundle == tmp_path / "ca.pem"


def test_the_problem_list_is_capped_and_counts_the_rest(tmp_path: Path, capsys) -> None:
    path = tmp_path / "service.ini"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(100_000):
            handle.write(f"[section{i}]\nkey = value\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    exc = caught.value
    assert len(exc.problems) == MAX_PROBLEMS and exc.total == 100_000
    assert str(exc).endswith(f"... and {100_000 - MAX_PROBLEMS} more problems not listed "
                             f"(only the first {MAX_PROBLEMS} are): fix these, then check again")
    assert main(["check-config", "-c", str(path)]) == EXIT_CONFIG
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == MAX_PROBLEMS + 1 and "100000 problems" in err
    assert main(["check-config", "-c", str(path), "--json"]) == EXIT_CONFIG
    data = json.loads(capsys.readouterr().out)
    assert len(data["problems"]) == MAX_PROBLEMS and data["more"] == 100_000 - MAX_PROBLEMS


def test_folders_that_can_never_exist_are_caught(write_ini, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    path = write_ini("[service]\ndata_dir = afile/data\n[logging]\nfolder = afile\n"
                     "[state]\nurl = sqlite:///afile/state.db\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert {(p.section, p.key) for p in caught.value.problems} == {
        ("service", "data_dir"), ("logging", "folder"), ("state", "url")}
    assert "is a file" in str(caught.value)


@pytest.mark.parametrize("url", ["https://[::1", "https://127.0.0.1:99999", "https://exa mple.com"])
def test_malformed_urls_are_config_problems(write_ini, url: str) -> None:
    path = write_ini(f"[crm]\nurl = {url}\nauthority = {url}\nclient_id = app\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"CONNECTOR_CRM_CLIENT_SECRET": "x"})
    assert {(p.section, p.key) for p in caught.value.problems} == {("crm", "url"), ("crm", "authority")}


NASTY_TEXTS = ("=", "[", "]", "x" * 5000, "%s%n", "{0}", "../../..", "sqlite:///", "sqlite:////", "C:\\x",
               "*", "https://", "https://[::1", "https://h:0", "postgresql://", "\u202e", "💥", "a,,b", ",", "|")
ALL_OPTIONS = [(section, key) for section, model in section_models().items() for key in model.model_fields]


@pytest.mark.parametrize(("section", "key"), ALL_OPTIONS, ids=[f"{s}.{k}" for s, k in ALL_OPTIONS])
def test_any_text_gives_a_config_or_a_config_error(write_ini, tmp_path: Path, section: str, key: str) -> None:
    for value in NASTY_TEXTS:
        path = write_ini(f"[{section}]\n{key} = {value}\n[mapping.contact]\nX = {value}\n[transform.t]\n{value} = 1\n")
        try:
            load_config(path, env={})
        except ConfigError:
            pass


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc: a folder nobody, not even root, may create")
@pytest.mark.parametrize(("ini", "code", "says"), [
    ("[logging]\nfolder = /proc/connector-logs\nconsole = off\n", EXIT_CONFIG,
     "[logging] folder: cannot write the log file /proc/connector-logs/connector.log"),
    ("[service]\ndata_dir = /proc/connector-data\n[logging]\nconsole = off\nfolder = logs\n", 1,
     "cannot create the SQLite state database /proc/connector-data/state.db"),
])
def test_a_folder_the_service_cannot_create_is_a_message_not_a_traceback(write_ini, capsys, ini: str, code: int,
                                                                         says: str) -> None:
    from connector.logs import close_logging

    path = write_ini(ini)
    try:
        assert main(["run", "--once", "-c", str(path)]) == code
    finally:
        close_logging()
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
