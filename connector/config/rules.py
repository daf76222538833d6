"""Rules between options, checked once every section is valid on its own."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from connector import secrets as _secrets
from connector.config.fields import secret_keys
from connector.config.models import Config, CrmSettings, EspSettings, KpiSettings, SftpSettings

if TYPE_CHECKING:
    from connector.config.loader import Loader

MAX_PEM_BYTES = 4 * 1024 * 1024
"""Largest CA bundle read for the check (the whole Mozilla bundle is about 250 KB)."""


_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def check_rules(config: Config, loader: Loader) -> None:
    """Rules between options, checked only for the parts in use (no [crm] url = no CRM checks)."""
    _check_crm(config.crm, loader)
    _check_esp(config.esp, loader)
    _check_sftp(config.sftp, loader)
    _check_kpi(config.kpi, loader)
    _check_suppression(config, loader)
    for section, key in (("crm", "ca_bundle"), ("esp", "ca_bundle"), ("sends", "suppression_file"),
                         ("kpi", "query_file"),
                         ("suppression", "file"),
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


def _require(loader: Loader, section: str, keys: list[str], values: object, why: str) -> None:
    for key in keys:
        value = getattr(values, key)
        if value is None or value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
            secret = (section, key) in secret_keys()
            hint = (f"set the environment variable {_secrets.env_var_name(section, key)} "
                    f"or {section}.{key} in the [service] secrets_file") if secret else f"set {key} in [{section}]"
            loader.problem(section, key, loader.line_of(section), f"required {why}", hint)


def _check_url(loader: Loader, section: str, key: str, url: str) -> None:
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


def _check_crm(crm: CrmSettings, loader: Loader) -> None:
    if not crm.url:
        return
    _check_url(loader, "crm", "url", crm.url)
    if crm.auth == "oauth":
        _require(loader, "crm", ["authority", "client_id", "client_secret"], crm, "when [crm] auth = oauth")
        if crm.authority:
            _check_url(loader, "crm", "authority", crm.authority)
    else:
        _require(loader, "crm", ["username", "password"], crm, "when [crm] auth = ntlm")


def _check_esp(esp: EspSettings, loader: Loader) -> None:
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


def _check_sftp(sftp: SftpSettings, loader: Loader) -> None:
    if not sftp.host:
        return
    _require(loader, "sftp", ["username"], sftp, "when [sftp] host is set")
    if sftp.password is None and sftp.private_key_file is None:
        loader.problem("sftp", "password", loader.line_of("sftp"), "a password or a private_key_file is required",
                       f"set private_key_file, or the environment variable {_secrets.env_var_name('sftp', 'password')}")


def _check_kpi(kpi: KpiSettings, loader: Loader) -> None:
    """A KPI source needs its query and the CRM column customers are matched on (docs/kpi.md)."""
    used = [key for key in ("query", "query_file", "match_column") if getattr(kpi, key)]
    if kpi.poll_minutes > 0:
        used.append("poll_minutes")
    if not kpi.source_url:
        env = _secrets.env_var_name("kpi", "source_url")
        for key in used:
            loader.problem("kpi", key, loader.line_of("kpi", key), "needs [kpi] source_url, which is not set",
                           f"set the environment variable {env} or kpi.source_url in the [service] secrets_file "
                           f"(or remove {key})")
        return
    _check_database_url(loader, "kpi", "source_url", kpi.source_url)
    if bool(kpi.query) == (kpi.query_file is not None):
        loader.problem("kpi", "query", loader.line_of("kpi", "query" if kpi.query else ""),
                       "give exactly one of query and query_file",
                       "query holds one line of SQL; a longer one goes in a file named by query_file")
    _require(loader, "kpi", ["match_column"], kpi, "once [kpi] source_url is set (the CRM column customer_key "
             "is matched on, e.g. emailaddress1, accountnumber or an external id column)")


def _check_suppression(config: Config, loader: Loader) -> None:
    """The suppression list has one source: a file, or a database URL with its query."""
    cfg = config.suppression
    if cfg.file is not None and cfg.source_url:
        loader.problem("suppression", "source_url", loader.line_of("suppression", "source_url"),
                       "give either file or source_url, not both", "the list comes from one source")
    if cfg.source_url:
        _check_database_url(loader, "suppression", "source_url", cfg.source_url)
        if not cfg.query.strip():
            loader.problem("suppression", "query", loader.line_of("suppression", "query"),
                           "needs a query once source_url is set",
                           "e.g. query = SELECT email FROM robinson_list (its first column: an address or a domain)")
    elif cfg.query:
        env = _secrets.env_var_name("suppression", "source_url")
        loader.problem("suppression", "query", loader.line_of("suppression", "query"),
                       "needs [suppression] source_url, which is not set",
                       f"set the environment variable {env} or suppression.source_url in the [service] "
                       "secrets_file (or remove query)")


def _check_database_url(loader: Loader, section: str, key: str, url: str) -> None:
    """A SQLAlchemy URL whose dialect exists; the error never shows its password."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
        parsed.get_dialect()
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as exc:
        shown = _secrets.hide_url_passwords(url)
        loader.problem(section, key, loader.line_of(section, key), f"not a usable database URL: {shown} "
                       f"({type(exc).__name__})", "write it as dialect+driver://user@host[:port]/database, e.g. "
                       "postgresql://kpi@db.example.com/erp or mssql+pyodbc://kpi@dsn (the password from the "
                       f"environment variable {_secrets.env_var_name(section, key)})")
