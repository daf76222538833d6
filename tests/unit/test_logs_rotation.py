"""Daily rotation at midnight keeps [logging] keep_days old files; console formats."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from pathlib import Path

import pytest
import structlog

from connector.config import Config, LoggingSettings
from connector.logs import LOG_FILE, close_logging, console_handler, file_handler, setup_logging

DAY = 86_400


def test_rotation_keeps_keep_days_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = 3
    handler = file_handler(tmp_path, keep)
    logger = logging.getLogger("connector.test.rotation")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert handler.when == "MIDNIGHT" and handler.utc
        start = handler.rolloverAt  # the coming UTC midnight
        assert start % DAY == 0
        for day in range(keep + 4):
            now = start + day * DAY + 60  # one minute past each midnight
            monkeypatch.setattr(time, "time", lambda now=now: now)
            logger.info("day %d", day)
        names = sorted(p.name for p in tmp_path.iterdir())
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = True
    rotated = [n for n in names if n != LOG_FILE]
    assert LOG_FILE in names
    assert len(rotated) == keep, names
    # the newest rotation holds the day before the current one
    newest = max(rotated)
    assert (tmp_path / newest).read_text().strip().endswith(f'"day {keep + 2}"}}')
    assert (tmp_path / LOG_FILE).read_text().count("\n") == 1
    assert all((tmp_path / n).stat().st_mode & 0o777 == 0o640 for n in names)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("mode", "stream", "json_expected"), [
    ("auto", _Tty, False), ("auto", io.StringIO, True), ("text", io.StringIO, False), ("json", _Tty, True),
])
def test_console_format(tmp_path: Path, mode: str, stream: type, json_expected: bool) -> None:
    out = stream()
    config = Config(logging=LoggingSettings(folder=tmp_path, console=mode))
    setup_logging(config, stream=out, to_file=False)
    try:
        with structlog.contextvars.bound_contextvars(step="tracking", run="r9"):
            structlog.get_logger("connector.x").info("watermark_advanced", event_type="open")
    finally:
        close_logging()
        structlog.reset_defaults()
    line = out.getvalue().strip()
    if json_expected:
        data = json.loads(line)
        assert data["event"] == "watermark_advanced" and data["step"] == "tracking" and data["run"] == "r9"
    else:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
        assert "watermark_advanced" in plain and "step=tracking" in plain and "run=r9" in plain
        with pytest.raises(ValueError):
            json.loads(line)


def test_console_off_and_level(tmp_path: Path) -> None:
    assert console_handler("off", io.StringIO()) is None
    config = Config(logging=LoggingSettings(folder=tmp_path, console="off", level="WARNING"))
    setup_logging(config)
    try:
        structlog.get_logger("connector.x").info("hidden")
        structlog.get_logger("connector.x").warning("shown")
    finally:
        close_logging()
        structlog.reset_defaults()
    text = (tmp_path / LOG_FILE).read_text()
    assert "shown" in text and "hidden" not in text


def test_setup_twice_replaces_handlers(tmp_path: Path) -> None:
    config = Config(logging=LoggingSettings(folder=tmp_path, console="off"))
    before = len(logging.getLogger().handlers)
    setup_logging(config)
    setup_logging(config)
    try:
        assert len(logging.getLogger().handlers) == before + 1
    finally:
        close_logging()
        structlog.reset_defaults()
    assert len(logging.getLogger().handlers) == before
