"""The line-numbered ini reader: ``service.ini`` (+ environment + secrets file) into a ``Config``.

It reports every problem at once, each naming its file, line, ``section.key``, what is
wrong and what to do: a file that is not UTF-8 (with the line of the first bad byte),
control characters, unknown sections and options, values the models refuse, and the
rules across options (``connector.config.rules``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from connector import secrets as _secrets
from connector.config.fields import (
    MAPPING_TABLES,
    coerce,
    is_path,
    is_secret,
    is_tuple,
    known_section,
    number_range,
    secret_keys,
    section_models,
)
from connector.config.mappings import build_mappings, build_transforms
from connector.config.sync import build_sync_rules
from connector.config.models import CONTROL_CHARACTERS, Config, Section, section_names, url_password
from connector.config.problems import MAX_PROBLEMS, ConfigProblem, did_you_mean, format_problems
from connector.config.rules import check_rules
from connector.errors import ConfigError

MAX_INI_BYTES = 16 * 1024 * 1024
"""Largest service.ini read: a real one is a few KB, transform tables included."""


@dataclass
class Item:
    key: str  # as written (case kept)
    value: str
    line: int


@dataclass
class RawSection:
    name: str
    line: int
    items: dict[str, Item] = field(default_factory=dict)  # lower-cased key -> item
    known: bool = True  # False: an unknown section, already reported; its lines are skipped


class Loader:
    """Turns one ini file (+ environment + secrets file) into a ``Config`` or a list of problems."""

    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.file = str(path)
        self.base = path.resolve().parent
        self.env = env
        self.problems: list[ConfigProblem] = []
        self.more = 0  # problems past MAX_PROBLEMS, counted only
        self.raw: dict[str, RawSection] = {}
        self.secrets_file: _secrets.SecretsFile | None = None
        self.secret_sources: dict[str, str] = {}

    # -- helpers
    def problem(self, section: str, key: str, line: int, message: str, hint: str = "", file: str = "") -> None:
        if self.full:
            self.more += 1
            return
        self.problems.append(ConfigProblem(section, key, line, message, hint, file or self.file))

    @property
    def full(self) -> bool:
        """No room for more problems: callers may skip working out a hint."""
        return len(self.problems) >= MAX_PROBLEMS

    def line_of(self, section: str, key: str = "") -> int:
        raw = self.raw.get(section)
        if raw is None:
            return 0
        item = raw.items.get(key.lower()) if key else None
        return item.line if item else raw.line

    def resolve(self, value: Path) -> Path:
        value = value.expanduser()
        return value if value.is_absolute() else self.base / value

    # -- parsing
    def parse(self, text: str) -> None:
        current: RawSection | None = None
        # split on \n only: str.splitlines() also splits on NEL, FS, VT ... which belong to the value
        for number, raw_line in enumerate(text.split("\n"), start=1):
            line = raw_line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                current = self._start_section(line, number)
                continue
            if current is not None and not current.known:
                continue
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not key:
                self.problem(current.name if current else "", "", number, f"{line!r} is not a 'key = value' line",
                             "one option per line, written key = value; comments start with # or ;")
                continue
            if current is None:
                self.problem("", key, number, "option outside any section", "put it under its [section] header")
                continue
            if current.name.startswith(("mapping.", "transform.", "sync.")):
                name = key
            else:
                name = key.lower()
            first = current.items.get(name.lower())
            if first is not None:
                self.problem(current.name, key, number, f"given twice (first at line {first.line})",
                             "keep one of them; keys are compared ignoring case")
                continue
            current.items[name.lower()] = Item(name, value.strip(), number)

    def _start_section(self, line: str, number: int) -> RawSection | None:
        if not line.endswith("]"):
            self.problem("", "", number, f"malformed section header {line!r}", "write it as [section]")
            return None
        name = line[1:-1].strip().lower()
        name = re.sub(r"\s*\.\s*", ".", name)
        if not known_section(name):
            self.unknown_section(name, number)
            return RawSection(name, number, known=False)  # its lines are skipped, not kept
        if name in self.raw:
            self.problem(name, "", number, f"section given twice (first at line {self.raw[name].line})",
                         "merge the two sections into one")
            return self.raw[name]
        self.raw[name] = RawSection(name, number)
        return self.raw[name]

    # -- secrets
    def load_secrets_file(self) -> None:
        item = self.raw.get("service", RawSection("service", 0)).items.get("secrets_file")
        if item is None or not item.value or CONTROL_CHARACTERS.search(item.value):  # the [service] checks report it
            return
        path = self.resolve(Path(item.value))
        try:
            self.secrets_file = _secrets.read_secrets_file(path)
            bad = _secrets.permission_problem(path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            self.problem("service", "secrets_file", item.line, f"cannot read {path}: {reason}",
                         "create it, or remove the option and give secrets as CONNECTOR_<SECTION>_<KEY> "
                         "environment variables")
            return
        if bad:
            self.problem("service", "secrets_file", item.line, bad, f"run: chmod 600 {path}")
            self.secrets_file = None
            return
        allowed = secret_keys()
        known = {(s, k) for s, m in section_models().items() for k in m.model_fields}
        for line, key, message, hint in self.secrets_file.problems:
            self.problem("service", key, line, message, hint, file=str(path))
        for (section, key), (_, line) in list(self.secrets_file.values.items()):
            if (section, key) in allowed:
                continue
            del self.secrets_file.values[(section, key)]
            if (section, key) in known:
                self.problem(section, key, line, "not a secret; the secrets file holds secrets only",
                             "set it in service.ini", file=str(path))
            else:
                names = sorted(f"{s}.{k}" for s, k in allowed)
                self.problem(section, key, line, f"unknown secret {section}.{key}",
                             did_you_mean(f"{section}.{key}", names, "secrets are " + ", ".join(names)),
                             file=str(path))

    def secret_for(self, section: str, key: str) -> str | None:
        value = _secrets.from_environment(section, key, self.env)
        if value is not None:
            self.secret_sources[f"{section}.{key}"] = f"environment {_secrets.env_var_name(section, key)}"
        elif self.secrets_file is not None:
            found = self.secrets_file.values.get((section, key))
            value = found[0] if found and found[0] else None
            if value is not None:
                self.secret_sources[f"{section}.{key}"] = f"secrets file {self.secrets_file.path}"
        return value

    def check_secret_in_ini(self, section: str, item: Item, is_url: bool) -> None:
        if not item.value or (is_url and not url_password(item.value)):
            return
        if _secrets.is_owner_only(self.path):
            return
        what = "a password in this URL" if is_url else "a secret"
        env = _secrets.env_var_name(section, item.key)
        self.problem(section, item.key, item.line, f"{what} in a file others can read",
                     f"move it to the environment variable {env} or to the [service] secrets_file, "
                     f"or make the file readable by its owner only (chmod 600 {self.file})")

    # -- sections
    def build_section(self, name: str, model: type[Section]) -> Section | None:
        raw = self.raw.get(name, RawSection(name, 0))
        fields = model.model_fields
        secrets = {key for section, key in secret_keys() if section == name}
        values: dict[str, object] = {}
        for key, item in raw.items.items():
            info = fields.get(key)
            if info is None:
                self.problem(name, item.key, item.line, "unknown option",
                             did_you_mean(key, list(fields), f"options of [{name}]: {', '.join(fields)}"))
                continue
            if key in secrets:
                self.check_secret_in_ini(name, item, is_url=not is_secret(info))
                if item.value and is_secret(info):
                    self.secret_sources[f"{name}.{key}"] = f"{self.file} line {item.line}"
            values[key] = coerce(info, item.value)
        for key in secrets:
            value = self.secret_for(name, key)
            if value is not None:
                values[key] = value
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            bad = set()
            for err in exc.errors():
                key = str(err["loc"][0]) if err["loc"] else ""
                bad.add(key)
                item = raw.items.get(key)
                message, hint = describe(err, item, fields.get(key), secret=key in secrets)
                self.problem(name, key, item.line if item else raw.line, message, hint)
            try:
                return model.model_validate({k: v for k, v in values.items() if k not in bad})
            except ValidationError:
                return None

    def unknown_section(self, name: str, line: int) -> None:
        if self.full:
            self.more += 1
            return
        choices = [f"[{c}]" for c in (*section_names(), *(f"mapping.{t}" for t in MAPPING_TABLES),
                                      *(f"sync.{t}" for t in MAPPING_TABLES), "transform.NAME")]
        self.problem(name, "", line, "unknown section",
                     did_you_mean(f"[{name}]", choices, "sections are " + ", ".join(choices)))

    # -- after building
    def resolve_paths(self, section: Section) -> Section:
        update: dict[str, object] = {}
        for key, info in type(section).model_fields.items():
            value = getattr(section, key)
            if isinstance(value, Path) and is_path(info):
                update[key] = self.resolve(value)
            elif key == "url" and isinstance(value, str) and value.startswith("sqlite:///"):
                update[key] = self.resolve_sqlite(value)
            elif key == "wsdl" and isinstance(value, str) and value and "://" not in value:
                update[key] = str(self.resolve(Path(value)))
        return section.model_copy(update=update) if update else section

    def resolve_sqlite(self, url: str) -> str:
        rest = url[len("sqlite:///"):]
        path, sep, query = rest.partition("?")
        if not path or path == ":memory:" or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
            return url
        return f"sqlite:///{self.resolve(Path(path))}{sep}{query}"


def describe(err: dict, item: Item | None, info: FieldInfo | None, *, secret: bool) -> tuple[str, str]:
    """A pydantic error as (message, hint) a person can act on."""
    message = err["msg"].replace("Input should be", "should be", 1).removeprefix("Value error, ")
    if len(err["loc"]) > 1 and isinstance(err["loc"][1], int):
        message = f"item {err['loc'][1] + 1} ({err['input']!r}) {message}"
    elif item is not None and not secret:
        message = f"{message}, got {item.value!r}"
    elif item is None:
        message = "required" if err["type"] == "missing" else message
    kind = err["type"]
    value = item.value if item else ""
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        return message, did_you_mean(str(err["input"]), expected, "one of " + ", ".join(expected))
    if ("#" in value or ";" in value) and kind.endswith(("parsing", "type")):
        return message, "comments must be on their own line, not after a value"
    if kind == "bool_parsing":
        return message, "write true or false"
    allowed = number_range(info) if info is not None else ""
    if kind in ("int_parsing", "float_parsing", "int_from_float", "finite_number"):
        hint = "write a plain number" + (f" from {allowed}" if allowed else "")
        return message, hint + (f"; the default is {info.default}" if info else "")
    if allowed and kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return message, f"allowed: {allowed}; the default is {info.default}"  # type: ignore[union-attr]
    if kind == "value_error" and "control character" in message:
        return message, "retype the value: it holds an invisible character (copied from a document?)"
    if kind == "too_short" and info is not None and is_tuple(info):
        return "needs at least one value", "separate values with commas"
    if info is not None and info.default not in (None, PydanticUndefined):
        default = ", ".join(info.default) if isinstance(info.default, tuple) else info.default
        return message, f"the default is {default}; delete the line to use it"
    return message, ""


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read ``service.ini`` (+ environment and secrets file) into a ``Config``.

    Raises ``ConfigError`` listing every problem (``.problems``), each with its file,
    line, section, key, message and hint; ``str(error)`` is the full report.
    """
    path = Path(path)
    loader = Loader(path, os.environ if env is None else env)
    text = read_ini(path)
    loader.parse(text)
    del text
    loader.load_secrets_file()
    sections = {name: loader.build_section(name, model) for name, model in section_models().items()}
    transforms = build_transforms(loader)
    mappings = build_mappings(loader, transforms)
    sync_rules = build_sync_rules(loader, transforms)
    config = None
    if all(s is not None for s in sections.values()):
        resolved = {name: loader.resolve_paths(s) for name, s in sections.items()}  # type: ignore[arg-type]
        config = Config(**resolved, mappings=mappings, transforms=transforms, sync_rules=sync_rules,
                        source_path=path.resolve(),
                        secret_sources=loader.secret_sources)
        check_rules(config, loader)
    if loader.problems:
        problems = sorted(loader.problems, key=lambda p: (p.file != loader.file, p.file, p.line))
        report = format_problems(problems)
        if loader.more:
            report += (f"\n... and {loader.more} more problem{'s' if loader.more != 1 else ''} not listed "
                       f"(only the first {MAX_PROBLEMS} are): fix these, then check again")
        error = ConfigError(report, problems=problems)
        error.total = len(problems) + loader.more  # type: ignore[attr-defined]
        raise error
    assert config is not None
    return config


def read_ini(path: Path) -> str:
    """The text of ``service.ini``, or ConfigError naming what is wrong with the file itself."""
    def fail(message: str, hint: str, line: int = 0, cause: BaseException | None = None) -> ConfigError:
        problem = ConfigProblem("", "", line, message, hint, str(path))
        error = ConfigError(str(problem), problems=[problem])
        error.total = 1  # type: ignore[attr-defined]
        error.__cause__ = cause
        return error

    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INI_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read the configuration: {exc.strerror or exc}", "check the path given with -c",
                   cause=exc) from exc
    if len(data) > MAX_INI_BYTES:
        raise fail(f"larger than {MAX_INI_BYTES // (1024 * 1024)} MB: not a service.ini",
                   "check the path given with -c; a service.ini is a few KB")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise fail("saved as UTF-16, not UTF-8", "save it as UTF-8 (in Notepad: Save as, Encoding UTF-8)", 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fail(f"not UTF-8: byte 0x{data[exc.start]:02X} at line {line}, column {column} is not valid UTF-8",
                   "save it as UTF-8 (in Notepad: Save as, Encoding UTF-8; in vim: :set fenc=utf-8 then :w)",
                   line, exc) from exc
