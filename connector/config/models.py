"""The ``service.ini`` schema: one pydantic model per section, and ``Config`` for the whole file.

Every model forbids unknown keys, so a typo is an error rather than a silent
default. Secrets are ``SecretStr`` and are never required in the ini: they come
from environment variables or a secrets file readable only by its owner (see
``connector.secrets``). The defaults are the original product's, kept as named
constants in ``connector.defaults``.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connector import defaults as d


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters and DEL: never valid in a name, a path, a URL or a secret."""


class Section(BaseModel):
    # allow_inf_nan: "inf" and "nan" are numbers to Python, never a sane interval or timeout
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        for text in _texts(value):
            found = CONTROL_CHARACTERS.search(text)
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
    preview_max_change: float = Field(d.PREVIEW_MAX_CHANGE, ge=0, le=1)
    preview_sample: int = Field(d.PREVIEW_SAMPLE, ge=0, le=500)


class ImportsSettings(Section):
    poll_seconds: float = Field(d.IMPORT_POLL_SECONDS, gt=0, le=3600)
    workers: int = Field(d.IMPORT_WORKERS, ge=1, le=64)
    timeout_minutes: float = Field(d.IMPORT_TIMEOUT_MINUTES, gt=0, le=10_080)


class EmailsSettings(Section):
    refresh_minutes: float = Field(d.EMAIL_REFRESH_MINUTES, ge=0, le=10_080,
                                   description="How often CRM's e-mail picker is refreshed from the ESP; 0 = never")


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


class SyncSettings(Section):
    """``[sync]``: the two-way subscriber sync (``connector.sync``); its rules are ``[sync.<table>]``."""

    poll_minutes: float = Field(d.SYNC_POLL_MINUTES, gt=0, le=1440, description="Minutes between differential sync runs")
    workers: int = Field(d.SYNC_WORKERS, ge=1, le=3, description="Tables synced at once")
    test_mode: bool = Field(False, description="Scheduled runs only simulate: nothing written anywhere, a report per run")
    conflict: Literal["newest", "crm", "esp"] = Field("newest", description="Who wins when both sides changed a field")
    conflict_contact: Literal["", "newest", "crm", "esp"] = ""
    conflict_lead: Literal["", "newest", "crm", "esp"] = ""
    conflict_account: Literal["", "newest", "crm", "esp"] = ""
    crm_deleted: Literal["leave", "unsubscribe", "remove_from_lists"] = Field("leave", description="What a CRM record deleted or deactivated does at the ESP")
    synced_lists: str = Field("", max_length=4000, description="Customer keys of the lists crm_deleted = remove_from_lists takes a subscriber off, comma-separated")
    esp_held_column: str = Field(d.SYNC_HELD_COLUMN, pattern=r"^([a-z_][a-z0-9_]*)?$",
                                 description="CRM Boolean column set when the ESP holds or deletes the subscriber; blank = only logged")
    data_extension: str = Field("", max_length=200, description="Customer key of a sendable data extension synced instead of the profile attributes")
    data_extension_modified_field: str = Field("", max_length=128, description="Date field of that data extension holding each row's last change")
    overlap_minutes: float = Field(d.SYNC_OVERLAP_MINUTES, ge=0, le=1440)
    change_log_keep_days: int = Field(d.SYNC_CHANGE_LOG_KEEP_DAYS, ge=1, le=36_500)
    report_folder: Path | None = Field(None, description="Where test-mode runs write their report; blank = <data_dir>/sync-reports")

    @property
    def synced_list_keys(self) -> list[str]:
        """``synced_lists`` as customer keys, in order, without blanks and repeats."""
        return list(dict.fromkeys(k.strip() for k in self.synced_lists.split(",") if k.strip()))

    def conflict_rule(self, table: str) -> str:
        """The table's conflict rule (its own, else ``conflict``)."""
        return getattr(self, f"conflict_{table}", "") or self.conflict


class KpiSettings(Section):
    poll_minutes: float = Field(d.KPI_POLL_MINUTES, ge=0, le=10_080, description="Minutes between scheduled KPI loads; 0 = not scheduled")
    source_url: str = Field("", description="SQLAlchemy URL of the external database the KPIs come from")
    query: str = Field("", description="SQL returning customer_key, kpi, value [, period]: one line")
    query_file: Path | None = Field(None, description="File holding the query (instead of query)")
    source_name: str = Field(d.KPI_SOURCE_NAME, pattern=r"^[A-Za-z0-9_.-]{1,50}$")
    customer_table: Literal["contact", "account"] = "contact"
    match_column: str = Field("", pattern=r"^([a-z_][a-z0-9_]{0,99})?$", description="CRM column of the customer table that customer_key is matched on")
    removed: Literal["deactivate", "delete", "keep"] = "deactivate"
    slice_rows: int = Field(d.KPI_SLICE_ROWS, ge=1, le=50_000)

    @property
    def enabled(self) -> bool:
        """A source is configured (``connector kpi`` may run; check-config wants the rest)."""
        return bool(self.source_url)

    @property
    def scheduled(self) -> bool:
        """The service runs the KPI load on its own schedule."""
        return self.enabled and self.poll_minutes > 0

    def query_text(self) -> str:
        """The query, from ``query`` or ``query_file`` (read now: an edited file counts at the next run)."""
        if self.query_file is not None:
            return self.query_file.read_text(encoding="utf-8-sig")
        return self.query


class SuppressionSettings(Section):
    """``[suppression]``: the statutory suppression list, refreshed on a schedule (docs/sends.md)."""

    file: Path | None = Field(None, description="List file: one address or domain a line, or a CSV with an e-mail column")
    source_url: str = Field("", description="SQLAlchemy URL of a database holding the list (instead of file)")
    query: str = Field("", description="SQL whose first column is an address or a domain: one line")
    refresh_minutes: float = Field(d.SUPPRESSION_REFRESH_MINUTES, ge=0, le=10_080,
                                   description="Minutes between refreshes; 0 = only by hand and before a send's first use")
    opt_out_records: bool = Field(False, description="Addresses new to the list opt their CRM contacts/leads out and unsubscribe them at the ESP")

    @property
    def enabled(self) -> bool:
        """A source is configured: sends check the stored list, refreshes read the source."""
        return self.file is not None or bool(self.source_url)

    @property
    def scheduled(self) -> bool:
        """The service refreshes the list on its own schedule."""
        return self.enabled and self.refresh_minutes > 0


class FieldMapping(Section):
    """One ESP attribute from one CRM column, with optional transforms."""

    esp_attribute: str
    crm_column: str
    lookup: str = ""  # name of a [transform.NAME] section
    default: str = ""
    transforms: tuple[str, ...] = ()  # lower, upper, strip, title, ...
    label: bool = False  # the display label (Dataverse formatted value) instead of the code or GUID
    date_format: str = ""  # strftime format of a date/time column (`date:%d.%m.%Y`)
    time_zone: str = ""  # IANA zone the date/time is shown in (`tz:Europe/Vienna`); UTC when empty
    line: int = 0  # where service.ini gives it (0 when built in code)


class Config(Section):
    """The whole ``service.ini``."""

    service: ServiceSettings = ServiceSettings()
    logging: LoggingSettings = LoggingSettings()
    state: StateSettings = StateSettings()
    staging: StagingSettings = StagingSettings()
    sends: SendsSettings = SendsSettings()
    imports: ImportsSettings = ImportsSettings()
    emails: EmailsSettings = EmailsSettings()
    tracking: TrackingSettings = TrackingSettings()
    batching: BatchingSettings = BatchingSettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    crm: CrmSettings = CrmSettings()
    esp: EspSettings = EspSettings()
    sftp: SftpSettings = SftpSettings()
    sync: SyncSettings = SyncSettings()
    # [sync.contact], [sync.lead], [sync.account]: connector.sync.rules.SyncRule per line
    sync_rules: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    kpi: KpiSettings = KpiSettings()
    suppression: SuppressionSettings = SuppressionSettings()
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
        for name in section_names():
            section = getattr(self, name)
            for key in type(section).model_fields:
                value = getattr(section, key)
                if isinstance(value, SecretStr) and value.get_secret_value():
                    found.add(value.get_secret_value())
        for url in (self.state.url, self.staging.url, self.kpi.source_url, self.suppression.source_url):
            password = url_password(url)
            if password:
                found.add(password)
        return found


def section_names() -> list[str]:
    """Names of the plain sections (``[service]`` ... ``[sftp]``), from the ``Config`` model."""
    names = []
    for name, info in Config.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            names.append(name)
    return names


def url_password(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).password if "://" in url else None
    except ValueError:
        return None
