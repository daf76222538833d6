"""load_config: defaults, secrets from env and file, paths, mappings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from connector import defaults as d
from connector.config import Config, FieldMapping, load_config
from connector.errors import ConfigError
from tests.fixtures.config import pem_certificate

CRM = """
[crm]
url = https://contoso.crm.dynamics.com
authority = https://login.microsoftonline.com/tenant
client_id = app
"""


def test_empty_file_gives_the_defaults(write_ini) -> None:
    config = load_config(write_ini(""), env={})
    assert config.sends.poll_minutes == d.SEND_POLL_MINUTES == 5
    assert config.tracking.poll_minutes == 60
    assert config.batching.threshold == 25_000 and config.batching.batch_size == 5_000
    assert config.crm.url == ""


def test_relative_paths_resolve_against_the_ini_folder(write_ini, tmp_path: Path) -> None:
    path = write_ini("[service]\ndata_dir = data\n[logging]\nfolder = logs\n[state]\nurl = sqlite:///db/state.db\n")
    config = load_config(path, env={})
    assert config.service.data_dir == tmp_path / "data"
    assert config.logging.folder == tmp_path / "logs"
    assert config.state.url == f"sqlite:///{tmp_path / 'db/state.db'}"
    assert config.state_url() == config.state.url
    defaults = load_config(write_ini("", name="other.ini"), env={})
    assert defaults.service.data_dir == tmp_path / "var"
    assert defaults.logging.folder == tmp_path / "var" / "log"


def test_absolute_and_memory_sqlite_urls_are_kept(write_ini) -> None:
    path = write_ini("[state]\nurl = sqlite:////abs/state.db\n[staging]\nurl = sqlite:///:memory:\n")
    config = load_config(path, env={})
    assert config.state.url == "sqlite:////abs/state.db"
    assert config.staging.url == "sqlite:///:memory:"


def test_secret_from_environment(write_ini) -> None:
    config = load_config(write_ini(CRM), env={"CONNECTOR_CRM_CLIENT_SECRET": "s3cret-env"})
    assert config.crm.client_secret == SecretStr("s3cret-env")
    assert "s3cret-env" in config.secret_values()


def test_secret_from_owner_only_secrets_file(write_ini, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.ini"
    secrets.write_text("# secrets\ncrm.client_secret = from-file\nesp.password = pw-file\n")
    os.chmod(secrets, 0o600)
    config = load_config(write_ini("[service]\nsecrets_file = secrets.ini\n" + CRM), env={})
    assert config.crm.client_secret.get_secret_value() == "from-file"
    assert config.esp.password.get_secret_value() == "pw-file"
    # the environment wins over the file
    config = load_config(write_ini("[service]\nsecrets_file = secrets.ini\n" + CRM),
                         env={"CONNECTOR_CRM_CLIENT_SECRET": "env-wins"})
    assert config.crm.client_secret.get_secret_value() == "env-wins"


def test_world_readable_secrets_file_is_refused(write_ini, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.ini"
    secrets.write_text("crm.client_secret = x\n")
    os.chmod(secrets, 0o644)
    with pytest.raises(ConfigError) as info:
        load_config(write_ini("[service]\nsecrets_file = secrets.ini\n" + CRM), env={})
    messages = [str(p) for p in info.value.problems]
    assert any("readable by others" in m and f"chmod 600 {secrets}" in m for m in messages), messages


def test_secret_in_owner_only_ini_is_accepted(write_ini) -> None:
    config = load_config(write_ini(CRM + "client_secret = in-ini\n", mode=0o600), env={})
    assert config.crm.client_secret.get_secret_value() == "in-ini"


def test_database_url_with_password_counts_as_secret(write_ini) -> None:
    config = load_config(write_ini("[state]\nurl = postgresql+psycopg://u:pg-pass@db/x\n"), env={})
    assert "pg-pass" in config.secret_values()
    config = load_config(write_ini(""), env={"CONNECTOR_STATE_URL": "postgresql://u:p2@db/x"})
    assert config.state.url == "postgresql://u:p2@db/x"


def test_mapping_and_transform_sections(write_ini) -> None:
    path = write_ini(
        """
        [mapping.contact]
        Country = address1_country | lookup:countries | default:Unknown
        First Name = firstname | strip | title
        [mapping.lead]
        EmailAddress = emailaddress1 | lower
        [transform.countries]
        Austria = Österreich
        Germany = Deutschland
        """
    )
    config = load_config(path, env={})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert config.mappings["contact"] == (
        FieldMapping(esp_attribute="Country", crm_column="address1_country", lookup="countries", default="Unknown",
                     line=1 + next(i for i, text in enumerate(lines) if text.strip().startswith("Country ="))),
        FieldMapping(esp_attribute="First Name", crm_column="firstname", transforms=("strip", "title"),
                     line=1 + next(i for i, text in enumerate(lines) if text.strip().startswith("First Name ="))),
    )
    assert config.mappings["lead"][0].transforms == ("lower",)
    assert config.transforms == {"countries": {"Austria": "Österreich", "Germany": "Deutschland"}}


def test_comma_lists_and_booleans(write_ini) -> None:
    path = write_ini("[sends]\nallowed_roles = System Administrator, Marketing Pro\n"
                     "[tracking]\nevent_types = open,click\nresponses_closed = yes\n")
    config = load_config(path, env={})
    assert config.sends.allowed_roles == ("System Administrator", "Marketing Pro")
    assert config.tracking.event_types == ("open", "click")
    assert config.tracking.responses_closed is True


def test_keys_are_case_insensitive_and_comments_ignored(write_ini) -> None:
    config = load_config(write_ini("; comment\n[Sends]\n# another\nPoll_Minutes = 2.5\n"), env={})
    assert config.sends.poll_minutes == 2.5


def test_config_is_a_config(write_ini) -> None:
    assert isinstance(load_config(str(write_ini("")), env={}), Config)


def test_choices_ignore_case(write_ini) -> None:
    config = load_config(write_ini("[logging]\nlevel = debug\n[tracking]\nmode = ALL\n[crm]\nauth = NTLM\n"), env={})
    assert (config.logging.level, config.tracking.mode, config.crm.auth) == ("DEBUG", "all", "ntlm")


def test_a_complete_production_file(write_ini, tmp_path: Path) -> None:
    for name in ("id_ed25519", "known_hosts", "suppressed.txt"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "ca.pem").write_bytes(pem_certificate())
    secrets = tmp_path / "secrets.ini"
    secrets.write_text("esp.client_secret = esp-secret\nsftp.private_key_passphrase = pass-phrase\n")
    os.chmod(secrets, 0o600)
    path = write_ini(
        """
        [service]
        instance_id = node-1
        secrets_file = secrets.ini
        data_dir = /var/lib/connector
        [logging]
        folder = /var/log/connector
        [state]
        url = postgresql+psycopg://connector@db/connector
        [sends]
        suppression_file = suppressed.txt
        default_email_key = welcome
        [tracking]
        mode = all
        default_campaign = 2F1C6A3E-0B6D-4A8E-9D6E-1C2B3A4D5E6F
        [crm]
        url = https://contoso.crm4.dynamics.com
        authority = https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555
        client_id = 0000-app
        ca_bundle = ca.pem
        [esp]
        wsdl = https://webservice.exacttarget.com/etframework.wsdl
        auth_url = https://mc123.auth.marketingcloudapis.com
        client_id = pkg
        account_id = 5000123
        [sftp]
        host = mc123.ftp.marketingcloudops.com
        username = 5000123
        private_key_file = id_ed25519
        known_hosts = known_hosts
        """,
        mode=0o644,
    )
    config = load_config(path, env={"CONNECTOR_CRM_CLIENT_SECRET": "crm-secret"})
    assert config.crm.ca_bundle == tmp_path / "ca.pem"
    assert config.sftp.private_key_file == tmp_path / "id_ed25519"
    assert config.sends.suppression_file == tmp_path / "suppressed.txt"
    assert config.service.secrets_file == tmp_path / "secrets.ini"
    assert config.service.data_dir == Path("/var/lib/connector")
    assert config.secret_values() == {"crm-secret", "esp-secret", "pass-phrase"}
    assert config.secret_sources == {
        "crm.client_secret": "environment CONNECTOR_CRM_CLIENT_SECRET",
        "esp.client_secret": f"secrets file {secrets}",
        "sftp.private_key_passphrase": f"secrets file {secrets}",
    }
