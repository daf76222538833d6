"""start_sandbox, write_service_ini, the generator and the `connector sandbox` command."""

from __future__ import annotations

import argparse
import os
import re
import stat
import threading
import time

from connector.sandbox.dataverse.generate import seed_organization
from connector.sandbox.dataverse.store import DataverseStore


def test_generator_is_deterministic_and_varied():
    a, b = DataverseStore(), DataverseStore()
    try:
        org_a = seed_organization(a, seed=7, contacts=500)
        org_b = seed_organization(b, seed=7, contacts=500)
        rows_a, rows_b = list(a.rows("contacts")), list(b.rows("contacts"))
        strip = lambda rows: [{k: v for k, v in r.items() if k not in ("createdon", "modifiedon")} for r in rows]  # noqa: E731
        assert strip(rows_a) == strip(rows_b)
        assert org_a.lists == org_b.lists
        emails = [r["emailaddress1"] for r in rows_a]
        valid = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
        assert any(e is None for e in emails) and any(e and not valid.match(e) for e in emails)
        assert len({e.lower() for e in emails if e}) < len([e for e in emails if e])  # duplicates
        assert any(r["donotbulkemail"] for r in rows_a) and any(r["statecode"] == 1 for r in rows_a)
        assert any(not r["fullname"].isascii() for r in rows_a)
        assert a.count("leads") == 100 and len(a.list_members(org_a.lists["newsletter"])) == 300
        dyn = a.get("lists", org_a.lists["oslo"])
        assert dyn["type"] is True and "<fetch" in dyn["query"]
        mia_roles = a.associated_ids("systemuserroles_association", org_a.users["mia"])
        sam_roles = a.associated_ids("systemuserroles_association", org_a.users["sam"])
        assert org_a.roles["Marketing Manager"] in mia_roles and org_a.roles["Marketing Manager"] not in sam_roles
    finally:
        a.close()
        b.close()


def test_start_sandbox_writes_a_loadable_service_ini(tmp_path):
    from connector.config import load_config
    from connector.sandbox import start_sandbox

    with start_sandbox(tmp_path / "sb", contacts=20, esp=False, sftp=False) as sb:
        ini = sb.write_service_ini(tmp_path / "conf" / "service.ini", batching__threshold=10,
                                   tracking={"mode": "aggregate"})
        secrets = tmp_path / "conf" / "secrets.ini"
        assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o600
        assert sb.crm.client_secret not in ini.read_text()
        config = load_config(ini, env={})
        assert config.crm.url == sb.crm.url
        assert config.crm.client_secret.get_secret_value() == sb.crm.client_secret
        assert config.batching.threshold == 10 and config.tracking.mode == "aggregate"
        assert sb.crm.store.count("contacts") == 20


def test_sandbox_command_serves_until_stopped(tmp_path, capsys):
    from connector.commands.sandbox import sandbox_command

    stop = threading.Event()
    args = argparse.Namespace(data_dir=tmp_path / "data", contacts=10, seed=1, plain_http=False,
                              no_customizations=False, fresh=False, write_ini=tmp_path / "svc" / "service.ini")
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(sandbox_command(args, stop)))
    t.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "svc" / "service.ini").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop.set()
    t.join(60)
    assert result == [0]
    assert (tmp_path / "data" / "ca" / "ca.pem").exists()
    assert (tmp_path / "data" / "crm.sqlite").exists()
    out = capsys.readouterr().out
    assert "CA certificate" in out and "sandbox stopped" in out


def test_full_sandbox_fixture(sandbox, tmp_path):
    import requests

    from connector.config import load_config

    assert sandbox.ca_file.exists() and sandbox.crm.store.count("contacts") == 50
    assert sandbox.esp is not None and sandbox.sftp is not None, sandbox.missing
    r = requests.get(sandbox.esp.wsdl_url, verify=str(sandbox.ca_file), timeout=30)
    assert r.status_code == 200
    config = load_config(sandbox.write_service_ini(tmp_path / "c" / "service.ini"), env={})
    assert config.sftp.port == sandbox.sftp.port and config.esp.client_id == sandbox.esp.client_id
    assert config.tracking.default_campaign == sandbox.seeded.campaigns["default"]


def test_plain_http_only_when_asked(tmp_path):
    import requests

    from connector.sandbox.dataverse import start_crm_sandbox

    with start_crm_sandbox(tmp_path / "plain", None, tls=False) as crm:
        assert crm.url.startswith("http://127.0.0.1:") and crm.authority.startswith("http://")
        token = requests.post(f"{crm.authority}/oauth2/v2.0/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": crm.client_id, "client_secret": crm.client_secret,
            "scope": crm.scope}).json()["access_token"]
        r = requests.get(crm.api_url + "WhoAmI", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200


def test_kept_organization_keeps_its_default_campaign(tmp_path):
    from connector.config import load_config
    from connector.sandbox import start_sandbox

    with start_sandbox(tmp_path / "sb", contacts=10, esp=False, sftp=False, persist=True) as first:
        campaign, client_id = first.seeded.campaigns["default"], first.crm.client_id
    creds = tmp_path / "sb" / "crm" / "crm-credentials.json"
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    with start_sandbox(tmp_path / "sb", contacts=10, esp=False, sftp=False, persist=True) as again:
        assert again.seeded is None  # the kept organization is not generated again
        assert again.crm.client_id == client_id  # same app registration: a written service.ini keeps working
        assert again.crm.store.count("contacts") == 10
        config = load_config(again.write_service_ini(tmp_path / "conf" / "service.ini"), env={})
    assert campaign and config.tracking.default_campaign == campaign
