"""The Dataverse (Dynamics 365) sandbox: a loopback Web API with an Entra ID authority.

``start_crm_sandbox(data_dir, ca)`` starts it on ``https://127.0.0.1:<port>`` and
returns a :class:`CrmSandbox` handle with the org URL, the authority, credentials,
fault knobs, service-protection limits and direct data access (``.store``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from connector.sandbox import private_json
from connector.sandbox.dataverse.app import DataverseApp
from connector.sandbox.dataverse.entra import EntraAuthority
from connector.sandbox.dataverse.metadata import KeyActivation
from connector.sandbox.dataverse.protection import Costs, Limits
from connector.sandbox.dataverse.records import Records
from connector.sandbox.dataverse.schema import Attribute, Entity, Key, connector_customizations
from connector.sandbox.dataverse.store import DataverseStore
from connector.sandbox.faults import FaultKnobs
from connector.sandbox.httpserver import SandboxHttpServer
from connector.sandbox.tls import SandboxCA

__all__ = ["CrmSandbox", "Costs", "KeyActivation", "Limits", "start_crm_sandbox", "apply_customizations"]


def apply_customizations(store: DataverseStore) -> list[str]:
    """Pre-apply the connector's customizations (what ``connector crm-setup`` creates)."""
    done = []
    for kind, payload in connector_customizations():
        if kind == "entity":
            assert isinstance(payload, Entity)
            if payload.logical_name not in store.schema.entities:
                store.add_entity(payload)
                done.append(f"table {payload.logical_name}")
        elif kind == "attribute":
            table, attr = payload  # type: ignore[misc]
            assert isinstance(attr, Attribute)
            if attr.logical_name not in store.schema.entities[table].attributes:
                store.add_attribute(table, attr)
                done.append(f"column {table}.{attr.logical_name}")
        elif kind == "key":
            table, key = payload  # type: ignore[misc]
            assert isinstance(key, Key)
            if key.logical_name not in store.schema.entities[table].keys:
                store.add_key(table, key)  # Active at once: an organization set up long ago
                done.append(f"key {table}.{key.logical_name}")
        elif kind == "many_to_many":
            name, one, two = payload  # type: ignore[misc]
            if name not in store.schema.many_to_many:
                store.add_many_to_many(name, one, two, name)
                done.append(f"relationship {name}")
        elif kind == "change_tracking":
            assert isinstance(payload, str)
            if not store.schema.entities[payload].change_tracking:
                store.set_change_tracking(payload, True)
                done.append(f"change tracking {payload}")
    return done


class CrmSandbox:
    """Handle on a running Dataverse sandbox."""

    def __init__(self, server: SandboxHttpServer, app: DataverseApp, authority: EntraAuthority,
                 store: DataverseStore, authority_server: SandboxHttpServer) -> None:
        self._server = server
        self._authority_server = authority_server
        self.authority_faults = authority_server.faults
        self.app = app
        self.store = store
        self.faults = app.faults
        self.limits = app.limits
        self.protection = app.protection
        self.key_activation = app.key_activation
        self.url = server.url
        self.tenant_id = authority.tenant_id
        # the authority is another host in reality: its own port, its own fault knobs
        self.authority_url = authority_server.url
        self.authority = f"{authority_server.url}/{authority.tenant_id}"
        self.client_id = authority.client_id
        self.client_secret = authority.client_secret
        self.entra = authority
        self.api_url = f"{server.url}/api/data/v9.2/"
        self.scope = f"{server.url}/.default"
        self.app_user_id = app.app_user_id

    @property
    def records(self) -> Records | None:  # the Web API record layer (change-tracking knobs)
        return self.app.records

    def expire_tokens(self) -> None:
        """Make every token issued so far expired (the next call with one gets 401)."""
        self.entra.expire_all()

    def expire_delta_tokens(self) -> None:
        """Make every change-tracking token issued so far expired (full sync needed)."""
        assert self.app.records is not None
        self.app.records.min_delta_version = self.store.version + 1

    def stop(self) -> None:
        self._server.stop()
        self._authority_server.stop()
        self.store.close()

    def __enter__(self) -> "CrmSandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _credentials(data_dir: Path) -> dict:
    """Tenant, client id and secret: stable per data folder (owner-only file)."""
    return private_json(data_dir / "crm-credentials.json", lambda: {
        "tenant_id": str(uuid.uuid4()), "client_id": str(uuid.uuid4()),
        "client_secret": uuid.uuid4().hex + uuid.uuid4().hex[:8], "app_object_id": str(uuid.uuid4())})


def _ensure_app_user(store: DataverseStore, client_id: str, object_id: str) -> tuple[str, str]:
    bu = store.schema.entity("businessunit")
    rows = store.execute("SELECT businessunitid FROM e_businessunit LIMIT 1")
    bu_id = rows[0][0] if rows else store.insert_many(bu, [{"name": "Sandbox Org"}])[0]
    su = store.schema.entity("systemuser")
    found = store.execute("SELECT systemuserid FROM e_systemuser WHERE applicationid = ?", (client_id,))
    if found:
        return found[0][0], bu_id
    uid = store.insert_many(su, [{"firstname": "# Connector", "lastname": "Application User",
                                  "applicationid": client_id, "azureactivedirectoryobjectid": object_id,
                                  "domainname": f"{client_id}@sandbox.local", "businessunitid": bu_id}])[0]
    return uid, bu_id


def start_crm_sandbox(data_dir: Path, ca: SandboxCA | None, *, seed: int = 1, contacts: int = 0, tls: bool = True,
                      customizations: bool = False, db_file: Path | None = None,
                      limits: Limits | None = None, token_lifetime: int | None = None,
                      faults: FaultKnobs | None = None, key_activation: KeyActivation | None = None,
                      **seed_options: Any) -> CrmSandbox:
    """Start the Dataverse sandbox on 127.0.0.1 (seeded when the store is new and ``contacts`` > 0)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = _credentials(data_dir)
    store = DataverseStore(db_file)
    fresh = store.count("contacts") == 0 and store.count("lists") == 0
    if customizations:
        apply_customizations(store)
    authority = EntraAuthority(tenant_id=creds["tenant_id"], client_id=creds["client_id"],
                               client_secret=creds["client_secret"], app_object_id=creds["app_object_id"])
    if token_lifetime is not None:
        authority.token_lifetime = token_lifetime
    knobs = faults or FaultKnobs()
    app = DataverseApp(store, authority, knobs, limits)
    if key_activation is not None:
        app.key_activation = key_activation
    app.app_user_id, app.business_unit_id = _ensure_app_user(store, creds["client_id"], creds["app_object_id"])
    if fresh and (contacts > 0 or seed_options):
        from connector.sandbox.dataverse.generate import seed_organization

        seed_organization(store, seed=seed, contacts=contacts, **seed_options)
    server = SandboxHttpServer(app, ca=ca, tls=tls, faults=knobs)
    authority_server = SandboxHttpServer(authority, ca=ca, tls=tls, faults=FaultKnobs())
    authority.base_url = authority_server.url
    authority.org_url = server.url
    app.bind(server.url)
    authority_server.start()
    server.start()
    return CrmSandbox(server, app, authority, store, authority_server)
