"""Logging: structlog through stdlib logging, JSON lines to a daily rotating file, redaction.

Every line is one JSON object with ``timestamp`` (UTC, ISO 8601), ``level``,
``logger``, ``event`` and whatever ids are bound with
``structlog.contextvars.bound_contextvars(step=..., run=..., send=..., batch=...)``.
Library loggers (zeep, urllib3, paramiko, APScheduler ...) go through the same
handlers and get the same fields.

Secrets never reach a log line: every secret of the configuration and of the
``CONNECTOR_*`` environment (also URL-encoded, JSON/XML-escaped and as HTTP basic
auth in base64) is replaced by ``***`` three times over: in structlog's event dict,
by a ``logging.Filter`` on each handler for stdlib records, and in the final
rendered text (which also covers tracebacks).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, TextIO

import structlog

from connector.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from connector.config import Config

REDACTED = "***"
LOG_FILE = "connector.log"
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSPHRASE|TOKEN|PRIVATE_KEY|APIKEY|API_KEY)", re.I)
_QUIET_LOGGERS = ("zeep.transports",)
"""Always at WARNING: zeep logs whole SOAP envelopes at DEBUG (redacted anyway)."""
_NOISY_LOGGERS = ("urllib3", "paramiko", "apscheduler.scheduler", "msal", "zeep", "alembic")
"""At WARNING unless [logging] level = DEBUG."""


def secret_values(config: "Config", env: dict[str, str] | None = None) -> set[str]:
    """Every secret to keep out of the logs: the config's, and those of the ``CONNECTOR_*`` environment."""
    from connector.config import secret_keys, url_password
    from connector.secrets import env_var_name

    env = dict(os.environ if env is None else env)
    found = set(config.secret_values())
    secret_env = {env_var_name(s, k): (s, k) for s, k in secret_keys()}
    for name, value in env.items():
        if not name.startswith("CONNECTOR_") or not value:
            continue
        if name in secret_env and secret_env[name][1] == "url":
            password = url_password(value)
            if password:
                found.add(password)
        elif name in secret_env or _SECRET_NAME.search(name):
            found.add(value)
    for section in ("crm", "esp", "sftp"):
        user = getattr(getattr(config, section), "username", "")
        password = getattr(getattr(config, section), "password", None)
        if user and password is not None and password.get_secret_value():
            found.add(f"{user}:{password.get_secret_value()}")  # -> its base64 form below
    return found


def _variants(secret: str) -> set[str]:
    """The forms a secret takes in a log line: raw, URL-encoded, escaped, base64."""
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret, quote=False),
        html.escape(secret),
    }
    if len(secret) >= 6:  # base64 of short strings would match too much random text
        forms.add(base64.b64encode(secret.encode()).decode().rstrip("="))
    return {f for f in forms if f}


_SHAPES = re.compile(
    r"(?P<keep>Bearer\s+|Basic\s+"
    r"|\"(?:access_token|refresh_token|id_token|client_secret|password|assertion)\"\s*:\s*\""
    r"|<(?:[\w-]+:)?(?:Password|client_secret|access_token|fueloauth|oAuthToken)(?:\s[^>]*)?>"
    r"|\b(?:client_secret|password|access_token|refresh_token|assertion)=)"
    r"(?P<value>[^\s\"<&,;]+)",
    re.I,
)
"""Secrets we were never told about (tokens obtained at run time) recognized by their shape."""


class Redactor:
    """Replaces every form of every known secret in a text by ``***``. Thread-safe."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self.set(secrets)

    def set(self, secrets: Iterable[str]) -> None:
        forms = set()
        for secret in secrets:
            if secret:
                forms |= _variants(secret)
        ordered = sorted(forms, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None
        with self._lock:
            self._pattern = pattern

    def text(self, value: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            value = pattern.sub(REDACTED, value)
        return _SHAPES.sub(lambda m: m.group("keep") + REDACTED, value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set)):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, (bytes, bytearray)):
            return self.text(bytes(value).decode("utf-8", "replace"))
        return value


REDACTOR = Redactor()
"""The process-wide redactor; ``setup_logging`` loads it with the secrets."""


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``***``: for error messages stored in state or CRM."""
    return REDACTOR.text(text)


def redact_processor(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact every value of the event (exceptions are still objects here)."""
    return {k: (v if k == "exc_info" else REDACTOR.value(v)) for k, v in event_dict.items()}


class RedactionFilter(logging.Filter):
    """Handler filter for stdlib records (library loggers): redacts the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):  # a structlog record; redacted by the processor
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = REDACTOR.text(message)
        record.args = None
        return True


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """The last line of defence: redact the rendered text (JSON escapes, tracebacks)."""

    def format(self, record: logging.LogRecord) -> str:
        return REDACTOR.text(super().format(record))


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    redact_processor,
]

_installed: list[logging.Handler] = []
_FIRST_KEYS = ("timestamp", "level", "logger", "event", "step", "run", "send", "batch")


def _order_keys(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """timestamp, level, logger, event and the ids first, so a person can scan the file."""
    first = {k: event_dict[k] for k in _FIRST_KEYS if k in event_dict}
    return {**first, **{k: v for k, v in event_dict.items() if k not in first}}


def _formatter(renderer: Any) -> logging.Formatter:
    return _RedactingFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_SHARED],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            *([structlog.processors.format_exc_info] if isinstance(renderer, structlog.processors.JSONRenderer) else []),
            _order_keys,
            renderer,
        ],
    )


def _json_renderer() -> Any:
    return structlog.processors.JSONRenderer(serializer=lambda obj, **kw: json.dumps(obj, ensure_ascii=False, default=str))


class _PrivateRotatingFileHandler(logging.handlers.TimedRotatingFileHandler):
    """Log files hold e-mail addresses: created rw for the owner, r for the group, nothing for others."""

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_FILE_MODE)
        return os.fdopen(fd, self.mode, encoding=self.encoding, errors=self.errors)


LOG_FILE_MODE = 0o640


def file_handler(folder: Path, keep_days: int) -> logging.handlers.TimedRotatingFileHandler:
    """JSON lines to ``<folder>/connector.log``, rotated at UTC midnight, ``keep_days`` old files kept."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        handler = _PrivateRotatingFileHandler(
            folder / LOG_FILE, when="midnight", backupCount=keep_days, encoding="utf-8", utc=True
        )
    except OSError as exc:
        raise ConfigError(f"[logging] folder: cannot write the log file {folder / LOG_FILE}: {exc.strerror or exc}; "
                          "give a folder the service user may create and write", "logging", "folder") from exc
    handler.setFormatter(_formatter(_json_renderer()))
    handler.addFilter(RedactionFilter())
    return handler


def console_handler(mode: str, stream: TextIO) -> logging.Handler | None:
    """``text`` (readable), ``json``, ``off``, or ``auto``: text on a terminal, JSON otherwise."""
    if mode == "off":
        return None
    tty = bool(getattr(stream, "isatty", lambda: False)())
    text = mode == "text" or (mode == "auto" and tty)
    renderer = structlog.dev.ConsoleRenderer(colors=tty) if text else _json_renderer()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(renderer))
    handler.addFilter(RedactionFilter())
    return handler


def setup_logging(config: "Config", *, secrets: Iterable[str] = (), stream: TextIO | None = None,
                  to_file: bool = True) -> None:
    """Configure structlog and the root logger from ``[logging]``; safe to call again (replaces handlers)."""
    REDACTOR.set({*secret_values(config), *secrets})
    close_logging()
    settings = config.logging
    handlers = [console_handler(settings.console, stream if stream is not None else sys.stderr)]
    if to_file:
        handlers.append(file_handler(Path(settings.folder), settings.keep_days))
    root = logging.getLogger()
    root.setLevel(settings.level)
    for handler in handlers:
        if handler is not None:
            root.addHandler(handler)
            _installed.append(handler)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if settings.level == "DEBUG" else logging.WARNING)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def close_logging() -> None:
    """Remove and close the handlers ``setup_logging`` installed (tests, reloads)."""
    root = logging.getLogger()
    while _installed:
        handler = _installed.pop()
        root.removeHandler(handler)
        handler.close()
