"""The SFTP file drop against a real OpenSSH server (sshd on a high loopback port)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from connector.config import Config, SftpSettings, TimeoutSettings
from connector.errors import AuthError, PermanentPeerError
from connector.transfer.sftp import SftpFileDrop

pytestmark = pytest.mark.sshd


def _drop(server, **overrides) -> SftpFileDrop:  # noqa: ANN001 - fixture dataclass
    kwargs = dict(key_file=server.client_key, known_hosts=server.known_hosts, folder=str(server.root), timeout=10,
                  max_retries=2, backoff_seconds=0.01)
    kwargs.update(overrides)
    return SftpFileDrop(server.host, server.port, server.username, **kwargs)


def _payload(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def test_upload_goes_through_a_part_file_and_lands_complete(sshd_server, tmp_path: Path) -> None:
    local = _payload(tmp_path, "cesp_s1_1.csv", 700_000)
    drop = _drop(sshd_server)
    try:
        assert drop.upload(local, "cesp_s1_1.csv") == 700_000
        assert drop.size("cesp_s1_1.csv") == 700_000
        assert drop.size("cesp_s1_1.csv.part") is None
    finally:
        drop.close()
    assert (sshd_server.root / "cesp_s1_1.csv").read_bytes() == local.read_bytes()


def test_repeated_upload_leaves_a_complete_file_alone(sshd_server, tmp_path: Path) -> None:
    local = _payload(tmp_path, "cesp_s2_1.csv", 10_000)
    with_config = SftpFileDrop.from_config(Config(
        sftp=SftpSettings(host=sshd_server.host, port=sshd_server.port, username=sshd_server.username,
                          private_key_file=sshd_server.client_key, known_hosts=sshd_server.known_hosts,
                          import_folder=str(sshd_server.root)),
        timeouts=TimeoutSettings(sftp_seconds=10),
    ))
    try:
        with_config.upload(local, "cesp_s2_1.csv")
        remote = sshd_server.root / "cesp_s2_1.csv"
        os.utime(remote, (1_000_000, 1_000_000))
        with_config.upload(local, "cesp_s2_1.csv")
        assert remote.stat().st_mtime == 1_000_000
        with_config.remove("cesp_s2_1.csv")
        assert with_config.size("cesp_s2_1.csv") is None
        with_config.remove("cesp_s2_1.csv")  # absent: no error
    finally:
        with_config.close()


def test_upload_resumes_from_what_the_server_already_has(sshd_server, tmp_path: Path) -> None:
    local = _payload(tmp_path, "cesp_s3_1.csv", 300_000)
    # an earlier attempt died after 123,457 bytes
    (sshd_server.root / "cesp_s3_1.csv.part").write_bytes(local.read_bytes()[:123_457])
    drop = _drop(sshd_server)
    try:
        drop.upload(local, "cesp_s3_1.csv")
    finally:
        drop.close()
    assert (sshd_server.root / "cesp_s3_1.csv").read_bytes() == local.read_bytes()
    assert not (sshd_server.root / "cesp_s3_1.csv.part").exists()


def test_a_newer_file_replaces_an_older_one(sshd_server, tmp_path: Path) -> None:
    drop = _drop(sshd_server)
    try:
        drop.upload(_payload(tmp_path, "a", 5_000), "cesp_s4_1.csv")
        newer = _payload(tmp_path, "b", 6_000)
        drop.upload(newer, "cesp_s4_1.csv")
    finally:
        drop.close()
    assert (sshd_server.root / "cesp_s4_1.csv").read_bytes() == newer.read_bytes()


def test_unknown_host_key_is_refused_with_a_clear_error(sshd_server, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    drop = _drop(sshd_server, known_hosts=empty)
    with pytest.raises(PermanentPeerError) as caught:
        drop.size("x.csv")
    message = str(caught.value)
    assert "[sftp] known_hosts" in message and str(sshd_server.port) in message and "127.0.0.1" in message


def test_changed_host_key_is_refused(sshd_server, tmp_path: Path) -> None:
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd_server.port} {other}\n")
    drop = _drop(sshd_server, known_hosts=wrong)
    with pytest.raises(PermanentPeerError, match="does not match"):
        drop.size("x.csv")


def test_wrong_client_key_is_an_auth_error(sshd_server, tmp_path: Path) -> None:
    key = tmp_path / "other_key"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    drop = _drop(sshd_server, key_file=key)
    with pytest.raises(AuthError, match=r"\[sftp\]"):
        drop.size("x.csv")


def test_missing_folder_is_a_permanent_error(sshd_server, tmp_path: Path) -> None:
    drop = _drop(sshd_server, folder=str(sshd_server.root / "nope"))
    try:
        with pytest.raises(PermanentPeerError, match="import_folder"):
            drop.upload(_payload(tmp_path, "c", 10), "cesp_s5_1.csv")
    finally:
        drop.close()


def test_key_with_a_passphrase(sshd_server, tmp_path: Path) -> None:
    from pydantic import SecretStr

    from connector.errors import ConfigError

    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "client_locked"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.BestAvailableEncryption(b"open sesame")))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    authorized = sshd_server.client_key.parent / "authorized_keys"
    authorized.write_text(authorized.read_text() + public + "\n")

    def drop_with(passphrase: str) -> SftpFileDrop:
        return SftpFileDrop.from_config(Config(sftp=SftpSettings(
            host=sshd_server.host, port=sshd_server.port, username=sshd_server.username, private_key_file=path,
            private_key_passphrase=SecretStr(passphrase), known_hosts=sshd_server.known_hosts,
            import_folder=str(sshd_server.root))))

    drop = drop_with("open sesame")
    try:
        assert drop.size("nothing-here.csv") is None
    finally:
        drop.close()
    with pytest.raises(ConfigError, match="private_key_file") as caught:
        drop_with("wrong guess").size("nothing-here.csv")
    assert "wrong guess" not in str(caught.value)
