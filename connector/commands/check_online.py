"""``connector check-config --online``: check the configuration against the peers themselves.

A service.ini can be valid and still not fit the organization and the account it
points at. These checks ask the peers, read-only except for one probe file on the
SFTP drop that is removed again:

- CRM: every mapped column exists on its table; every ``[sends] allowed_roles`` role exists;
  every ``[sync.*]`` column exists and, when the rule writes CRM, is writable
  (``connector.sync.checks``);
- ESP: every ``[mapping.*]`` and ``[sync.*]`` target is a profile attribute of the account;
  the ``[sends] default_email_key`` e-mail exists; with ``[sync] crm_deleted = remove_from_lists``,
  every ``[sync] synced_lists`` key is a list of the account;
- SFTP: the import folder takes a file (upload, then remove);
- KPI (``[kpi] source_url`` set): the source answers the query with the columns it must return
  (the query runs, one row is read); in CRM the ``[kpi] match_column`` exists on the customer
  table and the KPI table's alternate key is Active (``connector crm-setup`` makes it).

Each problem names the service.ini line (or section.key) and what to do. A peer that
cannot be reached is a problem too, with the reason (credentials, TLS, host key).
"""

from __future__ import annotations

import re

import secrets
import tempfile
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from connector.config import Config
from connector.crm.base import CrmClient
from connector.errors import ConnectorError
from connector.esp.base import EspClient
from connector.mapping import columns_to_read, unknown_attribute_mappings
from connector.models import CrmTable
from connector.sync.checks import crm_rule_problems, esp_rule_problems
from connector.transfer.base import FileDrop

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps.kpi.source import KpiSource


@dataclass
class PeerCheck:
    """The outcome of one check: what was checked, and every problem found (none = OK)."""

    peer: str
    what: str
    problems: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def online_checks(config: Config) -> list[PeerCheck]:
    """Run every check whose peer is configured; a peer that fails to answer is reported, not raised.

    The adapters' log lines go to stderr (``[logging] console``), redacted, never into the report.
    """
    from connector.logs import close_logging, setup_logging

    setup_logging(config, to_file=False)
    try:
        return _run_checks(config)
    finally:
        close_logging()


def _run_checks(config: Config) -> list[PeerCheck]:
    checks: list[PeerCheck] = []
    if config.crm.url:
        crm_checks = (_crm_columns, _crm_roles, _sync_columns) + ((_kpi_crm,) if config.kpi.enabled else ())
        checks += _with_client("CRM", _crm_client, config, crm_checks)
    if config.esp.wsdl:
        checks += _with_client("ESP", _esp_client, config, (_esp_attributes, _esp_email, _sync_attributes,
                                                                    _synced_lists))
    if config.sftp.host:
        checks += _with_client("SFTP", _sftp_client, config, (_sftp_writable,))
    if config.kpi.enabled:
        checks += _with_client("KPI", _kpi_source, config, (_kpi_query,))
    return checks


def _with_client(peer: str, build: Callable, config: Config, steps: tuple[Callable, ...]) -> list[PeerCheck]:
    try:
        client = build(config)
    except ConnectorError as exc:
        return [PeerCheck(peer, "connection", [f"cannot use {peer}: {exc}"])]
    out = []
    try:
        for step in steps:
            check = PeerCheck(peer, step.__doc__ or step.__name__)
            try:
                step(config, client, check)
            except ConnectorError as exc:
                check.problems.append(f"{peer} did not answer the check: {exc}")
            out.append(check)
    finally:
        client.close()
    return out


def _crm_client(config: Config) -> CrmClient:
    from connector.crm.dataverse import DataverseCrmClient

    return DataverseCrmClient.from_config(config)


def _esp_client(config: Config) -> EspClient:
    from connector.esp.marketing_cloud import MarketingCloudEspClient

    return MarketingCloudEspClient.from_config(config)


def _sftp_client(config: Config) -> FileDrop:
    from connector.transfer.sftp import SftpFileDrop

    return SftpFileDrop.from_config(config)


def _kpi_source(config: Config) -> "KpiSource":
    from connector.steps.kpi import open_source

    return open_source(config)


def _where(config: Config) -> str:
    return str(config.source_path) if config.source_path else "service.ini"


def _crm_columns(config: Config, crm: CrmClient, check: PeerCheck) -> None:
    """mapped CRM columns exist"""
    count = 0
    for table, columns in columns_to_read(config).items():
        if not columns:
            continue
        have = crm.column_names(table)
        count += len([c for c in columns if "@" not in c])
        labelled = [m for m in config.mappings.get(table.value, ()) if m.label]
        types = ({name: info.type for name, info in crm.column_definitions(table).items()} if labelled else {})
        for mapping in config.mappings.get(table.value, ()):
            where = f"{_where(config)}:{mapping.line} [mapping.{table.value}] {mapping.esp_attribute}"
            lookup = re.fullmatch(r"_(\w+)_value", mapping.crm_column)  # a lookup, read as _<name>_value
            column = lookup.group(1) if lookup and lookup.group(1) in have else mapping.crm_column
            if column not in have:
                check.problems.append(
                    f"{where}: CRM table {table.value!r} has no column {mapping.crm_column!r} (hint: use the column's "
                    "logical name, as shown in the table's columns in Power Apps; a lookup as _<name>_value)")
            elif mapping.label and types.get(column) in TEXT_TYPES:
                check.problems.append(
                    f"{where}: label on {mapping.crm_column!r}, a text column: it has no display label but its "
                    "text (hint: drop label; it is for choices, lookups, yes/no, dates and numbers)")
    check.detail = f"{count} mapped column(s)"


TEXT_TYPES = ("String", "Memo")
"""Column types whose formatted value is their own text: a ``label`` on them is a mistake."""


def _sync_columns(config: Config, crm: CrmClient, check: PeerCheck) -> None:
    """synced CRM columns exist and can be written"""
    problems, count = crm_rule_problems(config, crm)
    check.problems += problems
    check.detail = f"{count} sync rule(s)" if count else "no [sync.*] rules"


def _sync_attributes(config: Config, esp: EspClient, check: PeerCheck) -> None:
    """synced ESP attributes exist"""
    if not any(config.sync_rules.values()):
        check.detail = "no [sync.*] rules"
        return
    check.problems += esp_rule_problems(config, esp.profile_attributes())
    check.detail = f"{sum(len(r) for r in config.sync_rules.values())} sync rule(s)"


def _crm_roles(config: Config, crm: CrmClient, check: PeerCheck) -> None:
    """allowed roles exist"""
    have = {name.casefold() for name in crm.role_names()}
    for role in config.sends.allowed_roles:
        if role.casefold() not in have:
            check.problems.append(f"{_where(config)} [sends] allowed_roles: the CRM organization has no security "
                                  f"role {role!r} (hint: write the role's name as CRM shows it under Security Roles)")
    check.detail = f"{len(config.sends.allowed_roles)} role(s)"


def _esp_attributes(config: Config, esp: EspClient, check: PeerCheck) -> None:
    """mapped ESP attributes exist"""
    attributes = esp.profile_attributes()
    check.problems += [str(p) for p in unknown_attribute_mappings(config, attributes, config.esp.name)]
    check.detail = f"{len(attributes)} profile attribute(s) in the account"


def _esp_email(config: Config, esp: EspClient, check: PeerCheck) -> None:
    """default e-mail exists"""
    key = config.sends.default_email_key
    if not key:
        check.detail = "no [sends] default_email_key (each request names its e-mail)"
        return
    if esp.find_email(key) is None:
        check.problems.append(f"{_where(config)} [sends] default_email_key: the ESP account has no e-mail with the "
                              f"customer key {key!r} (hint: Marketing Cloud shows it as the e-mail's External Key)")
    check.detail = f"e-mail {key!r}"


def _synced_lists(config: Config, esp: EspClient, check: PeerCheck) -> None:
    """synced lists exist"""
    keys = config.sync.synced_list_keys
    if config.sync.crm_deleted != "remove_from_lists" or not keys:
        check.detail = "no [sync] synced_lists in use (crm_deleted is not remove_from_lists)"
        return
    found = esp.find_lists(keys)
    for key in keys:
        if key not in found:
            check.problems.append(f"{_where(config)} [sync] synced_lists: the ESP account has no list with the "
                                  f"customer key {key!r} (hint: Marketing Cloud shows it as the list's External Key; "
                                  "fix the key or create the list)")
    check.detail = f"{len(keys)} list(s): " + ", ".join(keys)


def _kpi_crm(config: Config, crm: CrmClient, check: PeerCheck) -> None:
    """KPI customers' column and the KPI table's key"""
    kpi = config.kpi
    table = CrmTable(kpi.customer_table)
    if kpi.match_column not in crm.column_names(table):
        check.problems.append(f"{_where(config)} [kpi] match_column: CRM table {table.value!r} has no column "
                              f"{kpi.match_column!r} (hint: use the column's logical name, e.g. emailaddress1)")
    status, key = crm.kpi_key_status(table)
    if status != "Active":
        check.problems.append(f"{_where(config)} [kpi]: the KPI table's alternate key {key} is {status} (hint: run "
                              "`connector crm-setup -c service.ini`: it creates the table and waits for the key)")
    check.detail = f"{table.value}.{kpi.match_column}, key {status}"


def _kpi_query(config: Config, source: "KpiSource", check: PeerCheck) -> None:
    """the query answers with customer_key, kpi, value"""
    with closing(source.slices(1)) as slices:
        first = next(slices, [])
    check.detail = f"{source.where}: " + ("a first row came back" if first else "no rows (yet)")


def _sftp_writable(config: Config, drop: FileDrop, check: PeerCheck) -> None:
    """import folder writable"""
    name = f"cesp-check-{secrets.token_hex(6)}.tmp"
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / name
        probe.write_bytes(b"connector check-config --online\n")
        drop.upload(probe, name)
    drop.remove(name)
    check.detail = f"{config.sftp.import_folder} took and gave back a probe file"


__all__ = ["PeerCheck", "online_checks"]
