"""Loopback sandboxes that speak the real protocols of the connector's peers.

``start_sandbox(data_dir)`` starts the Dataverse Web API (with its Entra ID
authority), the Marketing Cloud SOAP endpoint (with ``/v2/token``) and the SFTP
file drop on 127.0.0.1, all over TLS with one CA kept in ``<data_dir>/ca``; the
handle writes a complete ``service.ini`` for the connector pointed at them. Only
the ``sandbox`` and ``demo`` commands and the tests import this package.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import structlog

from connector.sandbox.tls import SandboxCA, write_private

log = structlog.get_logger(__name__)

__all__ = ["Sandbox", "SandboxCA", "start_sandbox"]

SFTP_USERNAME = "connector"


def private_json(path: Path, make: Any) -> dict:
    """The JSON kept in ``path``; on first use ``make()``, written owner-only (credentials)."""
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    write_private(path, json.dumps(value, indent=2).encode())
    return value


class Sandbox:
    """The three sandboxes together, sharing one CA (context manager)."""

    def __init__(self, data_dir: Path, ca: SandboxCA | None, crm: Any, esp: Any = None, sftp: Any = None,
                 seeded: Any = None, missing: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.ca = ca
        self.crm = crm
        self.esp = esp
        self.sftp = sftp
        self.seeded = seeded
        self.missing = missing or []

    @property
    def ca_file(self) -> Path | None:
        return self.ca.ca_file if self.ca else None

    def service_ini_sections(self) -> dict[str, dict[str, str]]:
        ca = str(self.ca_file) if self.ca_file else ""
        default_campaign = self.seeded.campaigns.get("default", "") if self.seeded else ""
        if not default_campaign:  # a kept organization: find the generated default campaign by name
            from connector.sandbox.dataverse.generate import DEFAULT_CAMPAIGN_NAME

            hit = self.crm.store.execute("SELECT campaignid FROM e_campaign WHERE name = ? LIMIT 1",
                                         (DEFAULT_CAMPAIGN_NAME,))
            default_campaign = hit[0][0] if hit else ""
        sections: dict[str, dict[str, str]] = {
            "service": {"data_dir": "var", "secrets_file": "secrets.ini", "drain_seconds": "30"},
            "logging": {"folder": "var/log", "keep_days": "14", "level": "INFO", "console": "auto"},
            "state": {"url": ""},
            "staging": {"url": "", "table": "connector_tracking_events"},
            "sends": {"poll_minutes": "1", "allowed_roles": "System Administrator, Marketing Manager",
                      "default_email_key": "cesp-demo-email",
                      "default_send_classification_key": "Default Commercial"},
            "imports": {"poll_seconds": "2"},
            "tracking": {"poll_minutes": "5", "mode": "responders", "default_campaign": default_campaign,
                         "overlap_minutes": "120"},
            "batching": {"enabled": "true" if self.sftp else "false", "threshold": "25000", "batch_size": "5000"},
            "timeouts": {"crm_seconds": "60", "esp_seconds": "60", "sql_seconds": "30", "sftp_seconds": "60"},
            "crm": {"url": self.crm.url, "auth": "oauth", "authority": self.crm.authority,
                    "client_id": self.crm.client_id, "ca_bundle": ca if self.crm.url.startswith("https") else "",
                    "prefix": "cesp"},
        }
        if self.esp is not None:
            sections["esp"] = {"name": "sandbox", "wsdl": self.esp.wsdl_url, "endpoint": "", "auth": "oauth",
                               "auth_url": self.esp.auth_url, "client_id": self.esp.client_id,
                               "account_id": str(self.esp.account_id),
                               "ca_bundle": ca if self.esp.url.startswith("https") else ""}
        if self.sftp is not None:
            sections["sftp"] = {"host": self.sftp.host, "port": str(self.sftp.port), "username": self.sftp.username,
                                "known_hosts": str(self.sftp.known_hosts), "import_folder": "/Import"}
        sections["mapping.contact"] = {"First Name": "firstname | strip", "Last Name": "lastname | strip",
                                       "City": "address1_city", "Country": "address1_country | default:Unknown"}
        sections["mapping.lead"] = {"First Name": "firstname | strip", "Last Name": "lastname | strip",
                                    "Company": "companyname"}
        sections["mapping.account"] = {"Company": "name"}
        return sections

    def secrets(self) -> dict[str, str]:
        out = {"crm.client_secret": self.crm.client_secret}
        if self.esp is not None:
            out["esp.client_secret"] = self.esp.client_secret
            out["esp.password"] = self.esp.password
        if self.sftp is not None:
            out["sftp.password"] = self.sftp.password
        return out

    def write_service_ini(self, path: Path | str, **overrides: Any) -> Path:
        """Write a complete service.ini for the sandbox (+ an owner-only ``secrets.ini`` next to it).

        ``overrides``: ``section__key="value"`` (e.g. ``batching__threshold=10``) or
        ``section={"key": "value"}``; a dotted section is written with ``_`` for ``.``
        in the keyword and given as a dict (``mapping_contact={...}`` -> ``[mapping.contact]``).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sections = self.service_ini_sections()
        for name, value in overrides.items():
            if isinstance(value, dict):
                section = name.replace("_", ".", 1) if name.startswith(("mapping_", "transform_")) else name
                sections.setdefault(section, {}).update({k: str(v) for k, v in value.items()})
            else:
                section, _, key = name.partition("__")
                if not key:
                    raise ValueError(f"override {name!r}: use section__key=value or section={{...}}")
                sections.setdefault(section, {})[key] = "" if value is None else str(value).lower() \
                    if isinstance(value, bool) else str(value)
        lines = ["# service.ini written by the connector sandbox; secrets are in secrets.ini", ""]
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {v}" for k, v in values.items()]
            lines.append("")
        path.write_text("\n".join(lines), encoding="utf-8")
        secrets_path = path.parent / sections["service"].get("secrets_file", "secrets.ini")
        write_private(secrets_path, "".join(f"{k} = {v}\n" for k, v in self.secrets().items()).encode("utf-8"))
        return path

    def describe(self) -> str:
        lines = [f"CA certificate (trust it with ca_bundle): {self.ca_file or '(plain HTTP)'}",
                 "", "Dynamics 365 / Dataverse sandbox",
                 f"  org URL:      {self.crm.url}", f"  Web API:      {self.crm.api_url}",
                 f"  authority:    {self.crm.authority}", f"  tenant id:    {self.crm.tenant_id}",
                 f"  client id:    {self.crm.client_id}", f"  client secret: {self.crm.client_secret}"]
        if self.esp is not None:
            lines += ["", "Marketing Cloud sandbox", f"  auth URL:     {self.esp.auth_url}",
                      f"  SOAP:         {self.esp.soap_url}", f"  WSDL:         {self.esp.wsdl_url}",
                      f"  client id:    {self.esp.client_id}", f"  client secret: {self.esp.client_secret}",
                      f"  account (MID): {self.esp.account_id}",
                      f"  API user:     {self.esp.username} / {self.esp.password}"]
        if self.sftp is not None:
            lines += ["", "SFTP sandbox", f"  host:         {self.sftp.host}:{self.sftp.port}",
                      f"  user:         {self.sftp.username} / {self.sftp.password}",
                      f"  known_hosts:  {self.sftp.known_hosts}"]
        for item in self.missing:
            lines += ["", f"not started: {item}"]
        return "\n".join(lines)

    def stop(self) -> None:
        for part in (self.sftp, self.esp, self.crm):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # noqa: BLE001 - stop the others anyway
                    log.warning("sandbox_stop_failed", part=type(part).__name__, exc_info=True)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_sandbox(data_dir: Path | str, *, seed: int = 1, contacts: int = 200, tls: bool = True,
                  customizations: bool = True, persist: bool = False, esp: bool = True, sftp: bool = True,
                  esp_latency: Any = None, **crm_options: Any) -> Sandbox:
    """Start CRM + ESP + SFTP sandboxes on 127.0.0.1 with one CA in ``<data_dir>/ca``.

    ``esp_latency``: a ``marketing_cloud.Latency`` (default: the realistic delays).

    ``persist``: keep the CRM organization in ``<data_dir>/crm.sqlite`` across restarts.
    """
    from connector.sandbox.dataverse import start_crm_sandbox

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ca = SandboxCA(data_dir / "ca") if tls else None
    db_file = data_dir / "crm.sqlite" if persist else None
    crm = start_crm_sandbox(data_dir / "crm", ca, seed=seed, contacts=0, tls=tls, customizations=customizations,
                            db_file=db_file, **crm_options)
    started: list[Any] = [crm]
    missing: list[str] = []
    try:
        seeded = None
        if contacts > 0 and crm.store.count("contacts") == 0:
            from connector.sandbox.dataverse.generate import seed_organization

            seeded = seed_organization(crm.store, seed=seed, contacts=contacts)
        crm.ca_file = ca.ca_file if ca else None
        sftp_root = data_dir / "sftp-root"
        (sftp_root / "Import").mkdir(parents=True, exist_ok=True)
        esp_handle = sftp_handle = None
        if esp:
            try:
                from connector.sandbox.marketing_cloud import start_esp_sandbox
            except ImportError as exc:
                missing.append(f"Marketing Cloud sandbox ({exc})")
            else:
                creds = private_json(data_dir / "esp-credentials.json", lambda: {
                    "client_id": "cesp" + secrets.token_hex(10), "client_secret": secrets.token_urlsafe(24),
                    "password": secrets.token_urlsafe(16)})
                esp_handle = start_esp_sandbox(data_dir / "esp", ca, tls=tls, import_root=sftp_root, seed=seed,
                                               client_id=creds["client_id"], client_secret=creds["client_secret"],
                                               password=creds["password"], latency=esp_latency)
                esp_handle.ca_file = crm.ca_file
                started.append(esp_handle)
        if sftp:
            try:
                from connector.sandbox.sftp import start_sftp_server
            except ImportError as exc:
                missing.append(f"SFTP sandbox ({exc})")
            else:
                creds = private_json(data_dir / "sftp-credentials.json",
                                      lambda: {"username": SFTP_USERNAME, "password": secrets.token_urlsafe(18)})
                sftp_handle = start_sftp_server(sftp_root, data_dir / "sftp", username=creds["username"],
                                                password=creds["password"])
                started.append(sftp_handle)
    except BaseException:
        for part in reversed(started):
            part.stop()
        raise
    return Sandbox(data_dir, ca, crm, esp_handle, sftp_handle, seeded, missing)
