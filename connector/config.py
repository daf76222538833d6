"""Configuration: one pydantic model per ``service.ini`` section.

Every model forbids unknown keys, so a typo is an error rather than a silent
default. Secrets are ``SecretStr`` and are never required in the ini: they come
from environment variables or a secrets file readable only by its owner (see
``connector.secrets``). ``load_config`` reports every problem at once, each
naming ``section.key`` and its line.

The defaults are the original product's, kept as named constants in
``connector.defaults``.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from connector import defaults as d
from connector import secrets as _secrets
from connector.errors import ConfigError
from connector.models import CrmTable


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters and DEL: never valid in a name, a path, a URL or a secret."""


class Section(BaseModel):
    # allow_inf_nan: "inf" and "nan" are numbers to Python, never a sane interval or timeout
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        for text in _texts(value):
            found = _CONTROL.search(text)
            if found:
                raise ValueError(f"holds the control character U+{ord(found.group()):04X} "
                                 f"(character {found.start() + 1})")
        return value


def _texts(value: Any) -> list[str]:
    """The text a field value holds, to check for control characters (secrets included)."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, tuple):
        return [str(v) for v in value if isinstance(v, (str, Path))]
    return []


class ServiceSettings(Section):
    instance_id: str = Field("", max_length=60, description="Label of this instance in logs and status; leases know each process by host, pid and a random token")
    drain_seconds: int = Field(d.DRAIN_SECONDS, ge=0, le=3600, description="Grace period after the first SIGTERM")
    secrets_file: Path | None = Field(None, description="Owner-only file with secrets, one section.key = value a line")
    data_dir: Path = Field(Path(d.DATA_DIR), description="Folder for batch files and the default SQLite databases")


class LoggingSettings(Section):
    folder: Path = Field(Path(d.LOG_FOLDER), description="Folder of connector.log and its daily rotations")
    keep_days: int = Field(d.LOG_KEEP_DAYS, ge=1, le=3650)
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    console: Literal["auto", "json", "text", "off"] = "auto"


class StateSettings(Section):
    url: str = Field("", description="SQLAlchemy URL; blank = SQLite at <data_dir>/state.db")
    lease_seconds: int = Field(d.LEASE_SECONDS, ge=10, le=86_400)


class StagingSettings(Section):
    url: str = Field("", description="SQLAlchemy URL of the staging database; blank = SQLite at <data_dir>/staging.db")
    table: str = Field(d.STAGING_TABLE, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    schema_name: str = Field("", description="Database schema of the staging table (blank = default)")


class SendsSettings(Section):
    poll_minutes: float = Field(d.SEND_POLL_MINUTES, gt=0, le=1440)
    workers: int = Field(d.SEND_WORKERS, ge=1, le=64)
    allowed_roles: tuple[str, ...] = Field(d.ALLOWED_ROLES, min_length=1)
    max_requests_per_poll: int = Field(d.MAX_REQUESTS_PER_POLL, ge=1, le=10_000)
    default_email_key: str = ""
    default_send_classification_key: str = d.SEND_CLASSIFICATION_KEY
    subscriber_key: Literal["record_id", "email"] = "record_id"
    suppression_file: Path | None = None
    soap_chunk_size: int = Field(d.SOAP_CHUNK_SIZE, ge=1, le=50)
    invalid_targets: Literal["fail", "skip"] = d.INVALID_TARGETS
    time_slice_seconds: float = Field(d.SEND_TIME_SLICE_SECONDS, ge=0, le=86_400)


class ImportsSettings(Section):
    poll_seconds: float = Field(d.IMPORT_POLL_SECONDS, gt=0, le=3600)
    workers: int = Field(d.IMPORT_WORKERS, ge=1, le=64)
    timeout_minutes: float = Field(d.IMPORT_TIMEOUT_MINUTES, gt=0, le=10_080)


class TrackingSettings(Section):
    poll_minutes: float = Field(d.TRACKING_POLL_MINUTES, gt=0, le=1440)
    workers: int = Field(d.TRACKING_WORKERS, ge=1, le=64)
    mode: Literal["none", "aggregate", "responders", "all"] = d.TRACKING_MODE
    responses_closed: bool = False
    default_campaign: str = Field("", description="CRM campaign id for sends without a campaign")
    overlap_minutes: float = Field(d.TRACKING_OVERLAP_MINUTES, ge=0, le=1440)
    initial_lookback_days: float = Field(d.TRACKING_LOOKBACK_DAYS, gt=0, le=365)
    event_types: tuple[Literal["sent", "open", "click", "bounce", "unsub", "notsent"], ...] = d.EVENT_TYPES
    only_connector_sends: bool = True


class BatchingSettings(Section):
    enabled: bool = True
    threshold: int = Field(d.BATCH_THRESHOLD, ge=0, le=100_000_000)
    batch_size: int = Field(d.BATCH_SIZE, ge=1, le=1_000_000)


class TimeoutSettings(Section):
    crm_seconds: float = Field(d.CRM_TIMEOUT, gt=0, le=3600)
    esp_seconds: float = Field(d.ESP_TIMEOUT, gt=0, le=3600)
    sql_seconds: float = Field(d.SQL_TIMEOUT, gt=0, le=3600)
    sftp_seconds: float = Field(d.SFTP_TIMEOUT, gt=0, le=3600)


class CrmSettings(Section):
    url: str = Field("", description="Organization URL, e.g. https://contoso.crm.dynamics.com")
    auth: Literal["oauth", "ntlm"] = "oauth"
    authority: str = Field("", description="Entra ID authority, e.g. https://login.microsoftonline.com/<tenant-id>")
    client_id: str = ""
    client_secret: SecretStr | None = None
    username: str = ""
    password: SecretStr | None = None
    api_version: str = "9.2"
    ca_bundle: Path | None = None
    page_size: int = Field(d.CRM_PAGE_SIZE, ge=1, le=5000)
    batch_size: int = Field(d.CRM_BATCH_SIZE, ge=1, le=1000)
    max_retries: int = Field(d.MAX_RETRIES, ge=0, le=20)
    prefix: str = Field(d.CRM_PREFIX, pattern=r"^[a-z][a-z0-9]{1,7}$", description="Publisher prefix of the custom tables")


class EspSettings(Section):
    name: str = Field("default", min_length=1, max_length=50, description="Label of this ESP account in state and logs")
    wsdl: str = Field("", description="URL or file of the PartnerAPI WSDL (etframework.wsdl)")
    endpoint: str = Field("", description="SOAP endpoint; blank = learned from the OAuth token reply")
    auth: Literal["oauth", "wsse"] = "oauth"
    auth_url: str = Field("", description="Tenant auth base URL, e.g. https://<subdomain>.auth.marketingcloudapis.com")
    client_id: str = ""
    client_secret: SecretStr | None = None
    account_id: str = Field("", description="MID of the business unit (optional)")
    username: str = ""
    password: SecretStr | None = None
    ca_bundle: Path | None = None
    max_retries: int = Field(d.MAX_RETRIES, ge=0, le=20)
    visibility_minutes: float = Field(d.ESP_VISIBILITY_MINUTES, gt=0, le=1440)


class SftpSettings(Section):
    host: str = ""
    port: int = Field(22, ge=1, le=65535)
    username: str = ""
    password: SecretStr | None = None
    private_key_file: Path | None = None
    private_key_passphrase: SecretStr | None = None
    known_hosts: Path | None = Field(None, description="known_hosts file the host key is checked against")
    import_folder: str = "/Import"


class FieldMapping(Section):
    """One ESP attribute from one CRM column, with optional transforms."""

    esp_attribute: str
    crm_column: str
    lookup: str = ""  # name of a [transform.NAME] section
    default: str = ""
    transforms: tuple[str, ...] = ()  # lower, upper, strip, title, ...
    line: int = 0  # where service.ini gives it (0 when built in code)


class Config(Section):
    """The whole ``service.ini``."""

    service: ServiceSettings = ServiceSettings()
    logging: LoggingSettings = LoggingSettings()
    state: StateSettings = StateSettings()
    staging: StagingSettings = StagingSettings()
    sends: SendsSettings = SendsSettings()
    imports: ImportsSettings = ImportsSettings()
    tracking: TrackingSettings = TrackingSettings()
    batching: BatchingSettings = BatchingSettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    crm: CrmSettings = CrmSettings()
    esp: EspSettings = EspSettings()
    sftp: SftpSettings = SftpSettings()
    # [mapping.contact], [mapping.lead], [mapping.account]: ESP attribute -> CRM column
    mappings: dict[str, tuple[FieldMapping, ...]] = Field(default_factory=dict)
    # [transform.NAME]: CRM value -> ESP value lookup tables
    transforms: dict[str, dict[str, str]] = Field(default_factory=dict)
    source_path: Path | None = None
    # where each secret given came from: {"crm.client_secret": "environment CONNECTOR_CRM_CLIENT_SECRET"}
    secret_sources: dict[str, str] = Field(default_factory=dict)

    def state_url(self) -> str:
        return self.state.url or f"sqlite:///{self.service.data_dir / 'state.db'}"

    def staging_url(self) -> str:
        return self.staging.url or f"sqlite:///{self.service.data_dir / 'staging.db'}"

    def secret_values(self) -> set[str]:
        """Every secret this configuration holds (for log redaction); never log the result."""
        found: set[str] = set()
        for name in _section_names():
            section = getattr(self, name)
            for key in type(section).model_fields:
                value = getattr(section, key)
                if isinstance(value, SecretStr) and value.get_secret_value():
                    found.add(value.get_secret_value())
        for url in (self.state.url, self.staging.url):
            password = _url_password(url)
            if password:
                found.add(password)
        return found


# --------------------------------------------------------------------------- loading

VALUE_TRANSFORMS = ("strip", "lower", "upper", "title", "capitalize")
"""Transforms a mapping line may name, applied in the order written (``connector.mapping``), then
the lookup, then the default when the value is blank."""

MAX_PROBLEMS = 200
"""Problems reported for one file; past it they are only counted ("and N more")."""
MAX_INI_BYTES = 16 * 1024 * 1024
"""Largest service.ini read: a real one is a few KB, transform tables included."""
MAX_PEM_BYTES = 4 * 1024 * 1024
"""Largest CA bundle read for the check (the whole Mozilla bundle is about 250 KB)."""

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRANSFORM_NAME = re.compile(r"^[a-z0-9_-]+$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the configuration, located by file, line, section and key."""

    section: str
    key: str
    line: int
    message: str
    hint: str = ""
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        section = f" [{self.section}]" if self.section else ""
        key = f" {self.key}" if self.key else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{section}{key}: {self.message}{hint}"


def format_problems(problems: list[ConfigProblem]) -> str:
    """One line per problem, in file and line order."""
    return "\n".join(str(p) for p in problems)


def _section_names() -> list[str]:
    """Names of the plain sections (``[service]`` ... ``[sftp]``), from the ``Config`` model."""
    names = []
    for name, info in Config.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            names.append(name)
    return names


def section_models() -> dict[str, type[Section]]:
    """``{"service": ServiceSettings, ...}`` for every plain section."""
    return {name: Config.model_fields[name].annotation for name in _section_names()}  # type: ignore[misc]


def secret_keys() -> set[tuple[str, str]]:
    """(section, key) of every option that may come from the environment or the secrets file."""
    keys = set(_secrets.URL_SECRET_KEYS)
    for name, model in section_models().items():
        for key, info in model.model_fields.items():
            if _is_secret(info):
                keys.add((name, key))
    return keys


def _is_secret(info: FieldInfo) -> bool:
    return SecretStr in (info.annotation, *typing.get_args(info.annotation))


def _is_optional(info: FieldInfo) -> bool:
    return type(None) in typing.get_args(info.annotation)


def _is_tuple(info: FieldInfo) -> bool:
    return typing.get_origin(info.annotation) is tuple


def _is_path(info: FieldInfo) -> bool:
    return Path in (info.annotation, *typing.get_args(info.annotation))


def _url_password(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).password if "://" in url else None
    except ValueError:
        return None


@dataclass
class _Item:
    key: str  # as written (case kept)
    value: str
    line: int


@dataclass
class _RawSection:
    name: str
    line: int
    items: dict[str, _Item] = field(default_factory=dict)  # lower-cased key -> item
    known: bool = True  # False: an unknown section, already reported; its lines are skipped


class _Loader:
    """Turns one ini file (+ environment + secrets file) into a ``Config`` or a list of problems."""

    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.file = str(path)
        self.base = path.resolve().parent
        self.env = env
        self.problems: list[ConfigProblem] = []
        self.more = 0  # problems past MAX_PROBLEMS, counted only
        self.raw: dict[str, _RawSection] = {}
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
        current: _RawSection | None = None
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
            if current.name.startswith("mapping.") or current.name.startswith("transform."):
                name = key
            else:
                name = key.lower()
            first = current.items.get(name.lower())
            if first is not None:
                self.problem(current.name, key, number, f"given twice (first at line {first.line})",
                             "keep one of them; keys are compared ignoring case")
                continue
            current.items[name.lower()] = _Item(name, value.strip(), number)

    def _start_section(self, line: str, number: int) -> _RawSection | None:
        if not line.endswith("]"):
            self.problem("", "", number, f"malformed section header {line!r}", "write it as [section]")
            return None
        name = line[1:-1].strip().lower()
        name = re.sub(r"\s*\.\s*", ".", name)
        if not _known_section(name):
            self.unknown_section(name, number)
            return _RawSection(name, number, known=False)  # its lines are skipped, not kept
        if name in self.raw:
            self.problem(name, "", number, f"section given twice (first at line {self.raw[name].line})",
                         "merge the two sections into one")
            return self.raw[name]
        self.raw[name] = _RawSection(name, number)
        return self.raw[name]

    # -- secrets
    def load_secrets_file(self) -> None:
        item = self.raw.get("service", _RawSection("service", 0)).items.get("secrets_file")
        if item is None or not item.value or _CONTROL.search(item.value):  # the [service] checks report it
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
                             _did_you_mean(f"{section}.{key}", names, "secrets are " + ", ".join(names)),
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

    def check_secret_in_ini(self, section: str, item: _Item, is_url: bool) -> None:
        if not item.value or (is_url and not _url_password(item.value)):
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
        raw = self.raw.get(name, _RawSection(name, 0))
        fields = model.model_fields
        secrets = {key for section, key in secret_keys() if section == name}
        values: dict[str, object] = {}
        for key, item in raw.items.items():
            info = fields.get(key)
            if info is None:
                self.problem(name, item.key, item.line, "unknown option",
                             _did_you_mean(key, list(fields), f"options of [{name}]: {', '.join(fields)}"))
                continue
            if key in secrets:
                self.check_secret_in_ini(name, item, is_url=not _is_secret(info))
                if item.value and _is_secret(info):
                    self.secret_sources[f"{name}.{key}"] = f"{self.file} line {item.line}"
            values[key] = _coerce(info, item.value)
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
                message, hint = _describe(err, item, fields.get(key), secret=key in secrets)
                self.problem(name, key, item.line if item else raw.line, message, hint)
            try:
                return model.model_validate({k: v for k, v in values.items() if k not in bad})
            except ValidationError:
                return None

    def build_mappings(self, transforms: Mapping[str, object]) -> dict[str, tuple[FieldMapping, ...]]:
        mappings: dict[str, tuple[FieldMapping, ...]] = {}
        for name, raw in self.raw.items():
            if not name.startswith("mapping."):
                continue
            table = name.partition(".")[2]
            if table not in _MAPPING_TABLES:
                self.problem(name, "", raw.line, f"no CRM table {table!r} to map",
                             _did_you_mean(table, list(_MAPPING_TABLES),
                                           "mapping sections are " + ", ".join(f"[mapping.{t}]" for t in _MAPPING_TABLES)))
                continue
            parsed = (self.parse_mapping_line(name, item, transforms) for item in raw.items.values())
            mappings[table] = tuple(m for m in parsed if m is not None)
        return mappings

    def parse_mapping_line(self, section: str, item: _Item, transforms: Mapping[str, object]) -> FieldMapping | None:
        found = _CONTROL.search(item.key + item.value)
        if found:
            self.problem(section, item.key, item.line, f"holds the control character U+{ord(found.group()):04X}",
                         "retype the line: it holds an invisible character (copied from a document?)")
            return None
        parts = [p.strip() for p in item.value.split("|")]
        column, options = parts[0], parts[1:]
        lookup = default = None
        steps: list[str] = []
        ok = True
        for option in options:
            kind, colon, arg = option.partition(":")
            kind = kind.strip().lower()
            if colon and kind == "lookup":
                lookup, ok = (arg.strip(), ok) if lookup is None else (lookup, self._twice(section, item, "lookup"))
                if lookup and lookup.lower() not in transforms:
                    self.problem(section, item.key, item.line, f"lookup {lookup!r} has no [transform.{lookup}] section",
                                 _did_you_mean(lookup.lower(), list(transforms), "add the section, or fix the name"))
                    ok = False
            elif colon and kind == "default":
                default, ok = (arg.strip(), ok) if default is None else (default, self._twice(section, item, "default"))
            elif not colon and kind in VALUE_TRANSFORMS:
                steps.append(kind)
            else:
                self.problem(section, item.key, item.line, f"unknown mapping step {option!r}",
                             _did_you_mean(kind, [*VALUE_TRANSFORMS, "lookup:", "default:"],
                                           "steps are lookup:NAME, default:TEXT, " + ", ".join(VALUE_TRANSFORMS)))
                ok = False
        if not column:
            self.problem(section, item.key, item.line, "no CRM column",
                         "write ESP attribute = crm_column [| step ...]")
            ok = False
        elif not _COLUMN.match(column):
            self.problem(section, item.key, item.line, f"{column!r} is not a CRM column name",
                         "use the column's logical name, e.g. address1_country; "
                         "the steps after it are separated by |")
            ok = False
        if not ok:
            return None
        try:
            return FieldMapping(esp_attribute=item.key, crm_column=column, lookup=(lookup or "").lower(),
                                default=default or "", transforms=tuple(steps), line=item.line)
        except ValidationError as exc:  # never a traceback for a config value
            self.problem(section, item.key, item.line, exc.errors()[0]["msg"].removeprefix("Value error, "))
            return None

    def _twice(self, section: str, item: _Item, what: str) -> bool:
        self.problem(section, item.key, item.line, f"{what} given twice", f"keep one {what}: step")
        return False

    def build_transforms(self) -> dict[str, dict[str, str]]:
        transforms: dict[str, dict[str, str]] = {}
        for name, raw in self.raw.items():
            if not name.startswith("transform."):
                continue
            table = name.partition(".")[2]
            if not _TRANSFORM_NAME.match(table):
                self.problem(name, "", raw.line, f"bad transform name {table!r}",
                             "use letters, digits, - and _ only, e.g. [transform.countries]")
                continue
            values = {}
            for item in raw.items.values():
                found = _CONTROL.search(item.key + item.value)
                if found:
                    self.problem(name, item.key, item.line, f"holds the control character U+{ord(found.group()):04X}",
                                 "retype the line: it holds an invisible character (copied from a document?)")
                    continue
                values[item.key] = item.value
            transforms[table] = values
        return transforms

    def unknown_section(self, name: str, line: int) -> None:
        if self.full:
            self.more += 1
            return
        choices = [f"[{c}]" for c in (*_section_names(), *(f"mapping.{t}" for t in _MAPPING_TABLES), "transform.NAME")]
        self.problem(name, "", line, "unknown section",
                     _did_you_mean(f"[{name}]", choices, "sections are " + ", ".join(choices)))

    # -- after building
    def resolve_paths(self, section: Section) -> Section:
        update: dict[str, object] = {}
        for key, info in type(section).model_fields.items():
            value = getattr(section, key)
            if isinstance(value, Path) and _is_path(info):
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


_MAPPING_TABLES = tuple(t.value for t in CrmTable)


def _known_section(name: str) -> bool:
    return name in _plain_sections() or name.startswith(("mapping.", "transform."))


@functools.cache
def _plain_sections() -> frozenset[str]:
    return frozenset(_section_names())


def _coerce(info: FieldInfo, value: str) -> object:
    """Raw ini text -> what pydantic validates: comma lists for tuples, blank optional = None."""
    if _is_tuple(info):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not value and _is_optional(info):
        return None
    if typing.get_origin(info.annotation) is Literal:  # level = info -> INFO
        matches = [c for c in typing.get_args(info.annotation) if str(c).casefold() == value.casefold()]
        return matches[0] if len(matches) == 1 else value
    return value


def number_range(info: FieldInfo) -> str:
    """The allowed range of a numeric option as written in the docs, e.g. ``1 to 64``; "" if none."""
    low = high = None
    low_open = False
    for item in info.metadata:
        if getattr(item, "ge", None) is not None:
            low = item.ge
        elif getattr(item, "gt", None) is not None:
            low, low_open = item.gt, True
        if getattr(item, "le", None) is not None:
            high = item.le
    if low is None or high is None:
        return ""
    return f"more than {_number(low)}, up to {_number(high)}" if low_open else f"{_number(low)} to {_number(high)}"


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _did_you_mean(word: str, choices: list[str], otherwise: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else otherwise


def _describe(err: dict, item: _Item | None, info: FieldInfo | None, *, secret: bool) -> tuple[str, str]:
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
        return message, _did_you_mean(str(err["input"]), expected, "one of " + ", ".join(expected))
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
    if kind == "too_short" and info is not None and _is_tuple(info):
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
    loader = _Loader(path, os.environ if env is None else env)
    text = _read_ini(path)
    loader.parse(text)
    del text
    loader.load_secrets_file()
    sections = {name: loader.build_section(name, model) for name, model in section_models().items()}
    transforms = loader.build_transforms()
    mappings = loader.build_mappings(transforms)
    config = None
    if all(s is not None for s in sections.values()):
        resolved = {name: loader.resolve_paths(s) for name, s in sections.items()}  # type: ignore[arg-type]
        config = Config(**resolved, mappings=mappings, transforms=transforms, source_path=path.resolve(),
                        secret_sources=loader.secret_sources)
        _check_rules(config, loader)
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


def _read_ini(path: Path) -> str:
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


# --------------------------------------------------------------------------- rules across options


def _check_rules(config: Config, loader: _Loader) -> None:
    """Rules between options, checked only for the parts in use (no [crm] url = no CRM checks)."""
    _check_crm(config.crm, loader)
    _check_esp(config.esp, loader)
    _check_sftp(config.sftp, loader)
    for section, key in (("crm", "ca_bundle"), ("esp", "ca_bundle"), ("sends", "suppression_file"),
                         ("sftp", "private_key_file"), ("sftp", "known_hosts")):
        value = getattr(getattr(config, section), key)
        if value is None:
            continue
        try:
            is_file = Path(value).is_file()
        except OSError as exc:  # e.g. a name too long
            loader.problem(section, key, loader.line_of(section, key), f"unusable path: {exc.strerror or exc}",
                           "give the path of an existing file")
            continue
        if not is_file:
            loader.problem(section, key, loader.line_of(section, key), f"file not found: {value}",
                           "relative paths are read from the folder of service.ini")
        elif key == "ca_bundle":
            bad = pem_certificates_problem(Path(value))
            if bad:
                loader.problem(section, key, loader.line_of(section, key), bad,
                               "give the CA certificate(s) in PEM form (-----BEGIN CERTIFICATE-----); convert a "
                               "DER .cer with: openssl x509 -inform der -in ca.cer -out ca.pem")
    for section, key, folder in (("service", "data_dir", config.service.data_dir),
                                 ("logging", "folder", config.logging.folder),
                                 ("state", "url", _sqlite_folder(config.state.url)),
                                 ("staging", "url", _sqlite_folder(config.staging.url))):
        bad = folder_problem(folder) if folder is not None else ""
        if bad:
            loader.problem(section, key, loader.line_of(section, key), bad,
                           "give a folder path (relative paths are read from the folder of service.ini)")
    campaign = config.tracking.default_campaign
    if campaign and not _GUID.match(campaign):
        loader.problem("tracking", "default_campaign", loader.line_of("tracking", "default_campaign"),
                       f"not a CRM record id: {campaign!r}",
                       "give the campaign's GUID, e.g. 2f1c6a3e-0b6d-4a8e-9d6e-1c2b3a4d5e6f")


def folder_problem(folder: Path) -> str:
    """Why ``folder`` can never be a folder (it, or the nearest existing parent, is not one); "" if it can.

    Whether the service user may write there is left to the service (check-config often
    runs as another user); it reports that without a traceback.
    """
    path = Path(folder)
    try:
        while not path.exists() and path.parent != path:
            path = path.parent
        if path.exists() and not path.is_dir():
            return f"{folder} cannot be a folder: {path} is a file"
    except OSError as exc:  # e.g. a name too long
        return f"unusable folder path: {exc.strerror or exc}"
    return ""


def _sqlite_folder(url: str) -> Path | None:
    """The folder of a ``sqlite:///PATH`` database URL, else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].partition("?")[0]
    return Path(path).parent if path and path != ":memory:" and not path.startswith("file:") else None


def pem_certificates_problem(path: Path) -> str:
    """Why ``path`` is not a file of PEM certificates TLS can trust; "" when it is one."""
    from cryptography import x509

    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if len(data) > MAX_PEM_BYTES:
        return f"{path} is larger than {MAX_PEM_BYTES // (1024 * 1024)} MB: not a CA bundle"
    if b"-----BEGIN CERTIFICATE-----" not in data:
        found = "a private key" if b"PRIVATE KEY-----" in data else "no certificate"
        return f"{path} is not a PEM certificate file: {found} in it"
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        return f"{path} holds a damaged PEM certificate: {exc}"
    return ""


def _require(loader: _Loader, section: str, keys: list[str], values: object, why: str) -> None:
    for key in keys:
        value = getattr(values, key)
        if value is None or value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
            secret = (section, key) in secret_keys()
            hint = (f"set the environment variable {_secrets.env_var_name(section, key)} "
                    f"or {section}.{key} in the [service] secrets_file") if secret else f"set {key} in [{section}]"
            loader.problem(section, key, loader.line_of(section), f"required {why}", hint)


def _check_url(loader: _Loader, section: str, key: str, url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        loader.problem(section, key, loader.line_of(section, key), f"not a valid URL: {url!r} ({exc})",
                       "write it as https://host[:port][/path]")
        return
    if any(c.isspace() for c in url):
        loader.problem(section, key, loader.line_of(section, key), f"a URL holds no spaces: {url!r}",
                       "remove the spaces, or write them as %20 in a path")
        return
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        if parts.hostname:
            return
    hint = "use https://; plain http is accepted for 127.0.0.1/localhost only"
    loader.problem(section, key, loader.line_of(section, key), f"not an https URL: {url!r}", hint)


def _check_crm(crm: CrmSettings, loader: _Loader) -> None:
    if not crm.url:
        return
    _check_url(loader, "crm", "url", crm.url)
    if crm.auth == "oauth":
        _require(loader, "crm", ["authority", "client_id", "client_secret"], crm, "when [crm] auth = oauth")
        if crm.authority:
            _check_url(loader, "crm", "authority", crm.authority)
    else:
        _require(loader, "crm", ["username", "password"], crm, "when [crm] auth = ntlm")


def _check_esp(esp: EspSettings, loader: _Loader) -> None:
    if not (esp.wsdl or esp.endpoint or esp.auth_url or esp.client_id or esp.username):
        return
    _require(loader, "esp", ["wsdl"], esp, "once the ESP is configured")
    if esp.auth == "oauth":
        _require(loader, "esp", ["auth_url", "client_id", "client_secret"], esp, "when [esp] auth = oauth")
        if esp.auth_url:
            _check_url(loader, "esp", "auth_url", esp.auth_url)
    else:
        _require(loader, "esp", ["username", "password"], esp, "when [esp] auth = wsse")
        if not (esp.endpoint or esp.wsdl):
            loader.problem("esp", "endpoint", loader.line_of("esp"), "required when [esp] auth = wsse",
                           "set endpoint to the SOAP URL, e.g. https://<subdomain>.soap.marketingcloudapis.com/Service.asmx")
    if esp.endpoint:
        _check_url(loader, "esp", "endpoint", esp.endpoint)


def _check_sftp(sftp: SftpSettings, loader: _Loader) -> None:
    if not sftp.host:
        return
    _require(loader, "sftp", ["username"], sftp, "when [sftp] host is set")
    if sftp.password is None and sftp.private_key_file is None:
        loader.problem("sftp", "password", loader.line_of("sftp"), "a password or a private_key_file is required",
                       f"set private_key_file, or the environment variable {_secrets.env_var_name('sftp', 'password')}")
