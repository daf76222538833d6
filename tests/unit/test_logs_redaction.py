"""Invariant 6: no secret from the config or the environment reaches a log line, at any level."""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import urllib.parse
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from connector.config import Config, CrmSettings, EspSettings, LoggingSettings, SftpSettings, StateSettings
from connector.logs import REDACTED, close_logging, secret_values, setup_logging

CLIENT_SECRET = 'cl!ent"sec\\ret&<x>'
ESP_PASSWORD = "esp-Pässword/42+="
SFTP_PASSWORD = "sftp-pw-12345"
ENV_SECRET = "env-only-secret-777"
PG_PASSWORD = "pg-pw-314159"
ALL = (CLIENT_SECRET, ESP_PASSWORD, SFTP_PASSWORD, ENV_SECRET, PG_PASSWORD)


@pytest.fixture
def logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONNECTOR_CRM_PASSWORD", ENV_SECRET)
    config = Config(
        logging=LoggingSettings(folder=tmp_path / "log", level="DEBUG", console="json"),
        state=StateSettings(url=f"postgresql+psycopg://connector:{PG_PASSWORD}@db/state"),
        crm=CrmSettings(url="https://org.example", client_secret=SecretStr(CLIENT_SECRET)),
        esp=EspSettings(auth="wsse", username="api-user", password=SecretStr(ESP_PASSWORD)),
        sftp=SftpSettings(host="sftp.example", username="u", password=SecretStr(SFTP_PASSWORD)),
    )
    console = io.StringIO()
    setup_logging(config, stream=console)
    yield config, console, tmp_path / "log" / "connector.log"
    close_logging()
    structlog.reset_defaults()
    logging.getLogger("zeep.transports").setLevel(logging.NOTSET)


def _forms(secret: str) -> list[str]:
    return [
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        html.escape(secret, quote=False),
    ]


def _emit_everything() -> None:
    log = structlog.get_logger("connector.test")
    zeep = logging.getLogger("zeep.transports")
    zeep.setLevel(logging.DEBUG)  # as if someone turned it on to debug SOAP
    basic = base64.b64encode(f"api-user:{ESP_PASSWORD}".encode()).decode()
    envelope = (
        "<soap:Envelope><soap:Header><wsse:Security><wsse:UsernameToken>"
        f"<wsse:Username>api-user</wsse:Username><wsse:Password>{html.escape(ESP_PASSWORD)}</wsse:Password>"
        "</wsse:UsernameToken></wsse:Security></soap:Header></soap:Envelope>"
    )
    for level in ("debug", "info", "warning", "error", "critical"):
        with structlog.contextvars.bound_contextvars(step="sends", run="r1", send="s1", batch=3):
            getattr(log, level)("call_made", secret=CLIENT_SECRET, nested={"p": [ESP_PASSWORD]},
                                url=f"https://x/?client_secret={urllib.parse.quote_plus(CLIENT_SECRET)}")
            getattr(log, level)(f"text with {SFTP_PASSWORD} and {ENV_SECRET} and {PG_PASSWORD}")
            getattr(zeep, level)("HTTP Post to %s:\n%s", "https://mc/Service.asmx", envelope)
            getattr(logging.getLogger("urllib3.connectionpool"), level)("Authorization: Basic %s", basic)
            getattr(logging.getLogger("requests"), level)("body %s", json.dumps({"client_secret": CLIENT_SECRET}))
    try:
        raise RuntimeError(f"login failed with {ESP_PASSWORD}")
    except RuntimeError:
        log.exception("call_failed")
        logging.getLogger("paramiko.transport").exception("auth %s", SFTP_PASSWORD)


def test_no_secret_in_any_form_at_any_level(logged) -> None:
    config, console, log_file = logged
    _emit_everything()
    close_logging()
    for text in (console.getvalue(), log_file.read_text(encoding="utf-8")):
        assert text.count("\n") >= 5 * 5
        assert REDACTED in text
        for secret in ALL:
            for form in _forms(secret):
                assert form not in text, f"{form!r} leaked"
        assert base64.b64encode(f"api-user:{ESP_PASSWORD}".encode()).decode().rstrip("=") not in text
        assert "api-user" in text  # user names are not secrets


def test_every_line_is_json_with_the_bound_ids(logged) -> None:
    _, console, log_file = logged
    _emit_everything()
    close_logging()
    lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        assert {"timestamp", "level", "logger", "event"} <= set(line)
        assert line["timestamp"].endswith("Z")
    bound = [line for line in lines if line["logger"] != "connector.test" or line["event"] == "call_made"]
    assert all(line.get("step") == "sends" and line.get("send") == "s1" and line.get("batch") == 3
               for line in bound if line["event"] != "auth ***")
    zeep_lines = [line for line in lines if line["logger"] == "zeep.transports"]
    assert len(zeep_lines) == 5 and "***" in zeep_lines[0]["event"]


def test_secret_values_collects_config_and_environment(logged) -> None:
    config, _, _ = logged
    found = secret_values(config, env={"CONNECTOR_ESP_CLIENT_SECRET": "e1", "CONNECTOR_OTHER_TOKEN": "t1",
                                       "CONNECTOR_CRASH_AT": "not-a-secret", "PATH": "/bin",
                                       "CONNECTOR_STAGING_URL": "postgresql://u:stg-pw@h/d"})
    assert {CLIENT_SECRET, ESP_PASSWORD, SFTP_PASSWORD, PG_PASSWORD, "e1", "t1", "stg-pw"} <= found
    assert "not-a-secret" not in found and "/bin" not in found


def test_secret_values_skips_a_malformed_url_in_the_environment(logged) -> None:
    config, _, _ = logged
    found = secret_values(config, env={"CONNECTOR_STATE_URL": "postgresql://u:pw@[bad/db",
                                       "CONNECTOR_STAGING_URL": "postgresql://u:stg-pw@h/d"})
    assert "stg-pw" in found
    assert "postgresql://u:pw@[bad/db" not in found


def test_zeep_transport_logger_is_quiet_by_default(tmp_path: Path) -> None:
    config = Config(logging=LoggingSettings(folder=tmp_path, level="DEBUG", console="off"))
    setup_logging(config)
    try:
        assert logging.getLogger("zeep.transports").getEffectiveLevel() == logging.WARNING
    finally:
        close_logging()
        structlog.reset_defaults()


def test_redact_helper_for_stored_messages(logged) -> None:
    from connector.logs import redact

    assert redact(f"login refused for {ESP_PASSWORD}") == "login refused for ***"
    assert redact("nothing to hide") == "nothing to hide"


@pytest.mark.parametrize(("text", "expected"), [
    ("Authorization: Bearer eyJhbGciOi.abc-123_x", "Authorization: Bearer ***"),
    ('{"access_token": "tok123", "expires_in": 1079}', '{"access_token": "***", "expires_in": 1079}'),
    ("<wsse:Password Type=\"...#PasswordText\">p4ss</wsse:Password>", "<wsse:Password Type=\"...#PasswordText\">***</wsse:Password>"),
    ("grant_type=client_credentials&client_secret=abc%21&x=1", "grant_type=client_credentials&client_secret=***&x=1"),
    ('<fueloauth xmlns="http://exacttarget.com">tok</fueloauth>', '<fueloauth xmlns="http://exacttarget.com">***</fueloauth>'),
    ("no password here; password reset", "no password here; password reset"),
])
def test_unknown_tokens_are_redacted_by_shape(text: str, expected: str) -> None:
    from connector.logs import redact

    assert redact(text) == expected
