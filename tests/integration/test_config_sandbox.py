"""The service.ini the sandbox writes is valid, and its secrets never reach the log."""

from __future__ import annotations

import logging
from pathlib import Path

import structlog

from connector.cli import main
from connector.config import load_config
from connector.logs import close_logging, setup_logging


def test_sandbox_ini_is_valid_and_its_secrets_are_redacted(sandbox, tmp_path: Path, capsys) -> None:
    ini = sandbox.write_service_ini(tmp_path / "conf" / "service.ini", logging__console="off")
    assert main(["check-config", "-c", str(ini)]) == 0
    out = capsys.readouterr().out
    assert "crm.client_secret from secrets file" in out
    config = load_config(ini, env={})
    secrets = sorted(config.secret_values())
    assert sandbox.crm.client_secret in secrets and len(secrets) >= 2
    assert config.logging.folder == tmp_path / "conf" / "var" / "log"

    setup_logging(config)
    try:
        structlog.get_logger("connector.test").info("token_requested", body=f"client_secret={sandbox.crm.client_secret}")
        logging.getLogger("zeep.transports").warning("envelope %s", " ".join(secrets))
    finally:
        close_logging()
        structlog.reset_defaults()
    text = (config.logging.folder / "connector.log").read_text(encoding="utf-8")
    assert "token_requested" in text and "envelope" in text
    for secret in secrets:
        assert secret not in text
