"""A local Salesforce Marketing Cloud (ExactTarget SOAP API) for tests, the demo and benchmarks.

``start_esp_sandbox(data_dir, ca, import_root=...)`` starts the SOAP endpoint with its
WSDL and the OAuth token endpoint on 127.0.0.1 and returns an ``EspSandbox``:

    esp = start_esp_sandbox(tmp, ca, import_root=sftp_root)
    esp.soap_url, esp.wsdl_url, esp.auth_url          # endpoints
    esp.client_id, esp.client_secret, esp.account_id  # OAuth
    esp.username, esp.password                         # WS-Security UsernameToken
    esp.faults.set("has_errors", next_n=1)             # fault knobs
    esp.store.generate_events(100_000)                 # tracking data for benchmarks
    esp.advance(hours=6)                               # let simulated time pass
    esp.stop()

Only the demo command and the tests import this package.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from connector.sandbox.faults import FaultKnobs
from connector.sandbox.marketing_cloud.app import Credentials, MarketingCloudApp
from connector.sandbox.marketing_cloud.events import EventRates
from connector.sandbox.marketing_cloud.latency import Latency
from connector.sandbox.marketing_cloud.persist import load_credentials, load_store, save_credentials, save_store
from connector.sandbox.marketing_cloud.records import DEFAULT_ATTRIBUTES, AttributeRec, SimClock
from connector.sandbox.marketing_cloud.store import EspStore

__all__ = ["DEFAULT_ATTRIBUTES", "AttributeRec", "EspSandbox", "EventRates", "Latency", "start_esp_sandbox"]


@dataclass
class EspSandbox:
    """A running Marketing Cloud sandbox (see the module docstring)."""

    url: str
    app: MarketingCloudApp
    server: Any
    store: EspStore
    faults: FaultKnobs
    credentials: Credentials
    import_root: Path
    data_dir: Path | None = None

    @property
    def auth_url(self) -> str:
        return self.url + "/"

    @property
    def soap_url(self) -> str:
        return self.url + "/Service.asmx"

    @property
    def wsdl_url(self) -> str:
        return self.soap_url + "?wsdl"

    @property
    def client_id(self) -> str:
        return self.credentials.client_id

    @property
    def client_secret(self) -> str:
        return self.credentials.client_secret

    @property
    def account_id(self) -> str:
        return self.credentials.account_id

    @property
    def username(self) -> str:
        return self.credentials.username

    @property
    def password(self) -> str:
        return self.credentials.password

    def advance(self, hours: float) -> None:
        """Move simulated time forward; events dated before the new 'now' become visible."""
        self.store.clock.advance(hours)
        self.store.apply_due_changes()

    def advance_past_delays(self) -> None:
        """Move simulated time past the visibility delays of sends and import results
        (``store.latency``), so what was started so far is retrievable."""
        latency = self.store.latency
        self.advance((max(latency.send_delay, latency.import_delay) + 1) / 3600)

    def expire_tokens(self) -> None:
        """Make every OAuth token issued so far expired (the next SOAP call gets "Token Expired")."""
        self.credentials.expire_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until started imports and send simulations have finished."""
        return self.store.wait_idle(timeout)

    def save(self) -> Path | None:
        """Write the account to ``<data_dir>/esp-state.json`` (done by ``stop()`` too)."""
        return save_store(self.store, self.data_dir) if self.data_dir is not None else None

    def stop(self) -> None:
        self.server.stop()
        self.store.wait_idle(10.0)
        self.save()

    def __enter__(self) -> "EspSandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_esp_sandbox(data_dir: Path, ca: Any, *, tls: bool = True, import_root: Path, seed: int = 1,
                      rates: EventRates | None = None, speed: float = 1.0, client_id: str | None = None,
                      client_secret: str | None = None, username: str | None = None,
                      password: str | None = None, account_id: str | None = None,
                      import_delay: float = 0.2, persist: bool = False,
                      attributes: Iterable[AttributeRec | str] | None = None,
                      calls_per_minute: int | None = None, latency: Latency | None = None) -> EspSandbox:
    """Start the sandbox on 127.0.0.1 (a free port). ``import_root`` is the SFTP root (has ``Import/``).

    ``attributes``: the account's profile attributes (default ``DEFAULT_ATTRIBUTES``);
    ``calls_per_minute``: throttle (HTTP 500 "Rate Limited") above that many SOAP calls a minute;
    ``latency``: how late sends, import results and events become retrievable (default:
    the realistic ``Latency()``; ``Latency(scale=0.01)`` keeps the behaviour in less time).

    With ``persist=True`` the account and its credentials are kept in ``data_dir`` and
    found again by the next start on the same folder (``connector sandbox``); without it
    every start is a fresh account (tests, benchmarks).
    """
    from connector.sandbox.httpserver import SandboxHttpServer

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    import_root = Path(import_root)
    (import_root / "Import").mkdir(parents=True, exist_ok=True)
    credentials = _credentials(data_dir if persist else None, client_id=client_id, client_secret=client_secret,
                               username=username, password=password, account_id=account_id)
    store = EspStore(import_root=import_root, clock=SimClock(speed), rates=rates, seed=seed,
                     account_id=int(credentials.account_id), import_delay=import_delay, attributes=attributes,
                     latency=latency)
    if persist:
        load_store(store, data_dir)
    faults = FaultKnobs(seed)
    app = MarketingCloudApp(store, credentials, faults, calls_per_minute=calls_per_minute)
    server = SandboxHttpServer(app, ca=ca if tls else None, tls=tls, faults=faults)
    server.start()
    return EspSandbox(server.url, app, server, store, faults, credentials, import_root,
                      data_dir if persist else None)


def _credentials(data_dir: Path | None, **given: str | None) -> Credentials:
    """Given values win; then the ones kept in data_dir; then fresh random ones (kept for next time)."""
    kept = (load_credentials(data_dir) if data_dir is not None else None) or {}
    fresh = {"client_id": "cesp" + secrets.token_hex(10), "client_secret": secrets.token_urlsafe(24),
             "account_id": "7281698", "username": "cesp-api-user", "password": secrets.token_urlsafe(16)}
    values = {k: given.get(k) or kept.get(k) or fresh[k] for k in fresh}
    credentials = Credentials(**values)
    if data_dir is not None:
        save_credentials(data_dir, credentials)
    return credentials
