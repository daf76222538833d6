"""Secrets: where they come from, and the owner-only rule for files that hold them.

A secret option of ``service.ini`` (a ``SecretStr`` field, or a database URL that
carries a password) is taken, first found wins, from:

1. the environment variable ``CONNECTOR_<SECTION>_<KEY>`` (e.g. ``CONNECTOR_CRM_CLIENT_SECRET``);
2. the ``[service] secrets_file``: ini-like lines ``section.key = value``;
3. ``service.ini`` itself, accepted only when that file is readable by its owner alone.

A file holding secrets that its group or the world can read is refused, with the
``chmod 600`` that fixes it. On Windows the mode bits mean nothing; NTFS ACLs
protect the file and the check is skipped.

This module only reads and checks; ``connector.config.load_config`` turns what it
finds into ``ConfigProblem`` entries.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENV_PREFIX = "CONNECTOR_"

URL_SECRET_KEYS: frozenset[tuple[str, str]] = frozenset({
    ("state", "url"), ("staging", "url"), ("kpi", "source_url"), ("suppression", "source_url")})
"""Database URLs may carry a password, so they may come from the environment or the secrets file too."""


def hide_url_passwords(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` anywhere in ``text``."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def env_var_name(section: str, key: str) -> str:
    """``("crm", "client_secret")`` -> ``CONNECTOR_CRM_CLIENT_SECRET``."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def from_environment(section: str, key: str, env: Mapping[str, str]) -> str | None:
    """The value of the option's environment variable, or None when unset or blank."""
    value = env.get(env_var_name(section, key))
    return value if value else None


def permission_problem(path: Path) -> str | None:
    """Why ``path`` may not hold secrets (readable by group/others), or None when it is fine."""
    if os.name == "nt":  # pragma: no cover - NTFS ACLs, not mode bits
        return None
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} is readable by others (mode {stat.filemode(mode)}); it holds secrets"
    return None


def is_owner_only(path: Path) -> bool:
    try:
        return permission_problem(path) is None
    except OSError:
        return False


@dataclass
class SecretsFile:
    """What a secrets file held: ``values[(section, key)] = (value, line)`` and its syntax problems."""

    path: Path
    values: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    problems: list[tuple[int, str, str, str]] = field(default_factory=list)  # (line, key, message, hint)


def read_secrets_file(path: Path) -> SecretsFile:
    """Parse ``section.key = value`` lines; ``#``/``;`` comments and blank lines are ignored.

    Raises OSError when the file cannot be read. Does not check the permissions
    (see ``permission_problem``) nor whether the keys exist (the loader does).
    """
    result = SecretsFile(path)
    text = path.read_text(encoding="utf-8-sig")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        name = name.strip().lower()
        if not sep or "." not in name:
            result.problems.append(
                (number, name, "not a 'section.key = value' line", "write e.g. crm.client_secret = ...")
            )
            continue
        section, _, key = name.partition(".")
        if (section, key) in result.values:
            first = result.values[(section, key)][1]
            result.problems.append((number, name, f"given twice (first at line {first})", "keep one of them"))
            continue
        result.values[(section, key)] = (value.strip(), number)
    return result
