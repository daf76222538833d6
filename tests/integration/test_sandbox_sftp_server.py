"""The SFTP sandbox server with a real paramiko client over loopback."""

from __future__ import annotations

import io
from pathlib import Path

import paramiko
import pytest

from connector.sandbox.sftp import start_sftp_server


@pytest.fixture
def server(tmp_path: Path):
    srv = start_sftp_server(tmp_path / "root", tmp_path / "data", username="drop-user", password="drop-pass")
    yield srv
    srv.stop()


def connect(srv, known_hosts: Path | None = None, **auth) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or srv.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    auth.setdefault("password", srv.password)
    client.connect(srv.host, port=srv.port, username=srv.username, look_for_keys=False, allow_agent=False,
                   timeout=10, **auth)
    return client


def test_folders_upload_rename_stat_remove(server):
    client = connect(server)
    try:
        sftp = client.open_sftp()
        assert sftp.listdir("/") == ["Export", "Import", "Reports"]
        sftp.putfo(io.BytesIO("SubscriberKey,EmailAddress\nk,ä@example.com\n".encode()), "/Import/a.csv.part")
        sftp.posix_rename("/Import/a.csv.part", "/Import/a.csv")
        assert sftp.listdir("/Import") == ["a.csv"]
        assert sftp.stat("/Import/a.csv").st_size == len("SubscriberKey,EmailAddress\nk,ä@example.com\n".encode())
        sftp.putfo(io.BytesIO(b"x"), "/Import/b.csv")
        with pytest.raises(IOError):
            sftp.rename("/Import/b.csv", "/Import/a.csv")  # plain rename does not overwrite
        sftp.remove("/Import/b.csv")
        with pytest.raises(FileNotFoundError):
            sftp.stat("/Import/b.csv")
        with sftp.open("/Import/a.csv", "a") as handle:  # append, as a resumed upload does
            handle.write(b"k2,b@example.com\n")
        assert (server.root / "Import" / "a.csv").read_bytes().endswith(b"k2,b@example.com\n")
        sftp.close()
    finally:
        client.close()


def test_paths_cannot_escape_the_root(server, tmp_path):
    (tmp_path / "secret.txt").write_text("no")
    client = connect(server)
    try:
        sftp = client.open_sftp()
        with pytest.raises(IOError):
            sftp.stat("/../secret.txt")
        assert sftp.normalize("../..") == "/"
        sftp.close()
    finally:
        client.close()


def test_wrong_password_is_refused(server):
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, password="wrong").close()


def test_unknown_host_key_is_rejected(server, tmp_path):
    other = tmp_path / "other_known_hosts"
    key = paramiko.ECDSAKey.generate(bits=256)
    other.write_text(f"[127.0.0.1]:{server.port} {key.get_name()} {key.get_base64()}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(server, known_hosts=other).close()


def test_public_key_auth_and_host_key_kept_across_restarts(tmp_path):
    user_key = paramiko.ECDSAKey.generate(bits=256)
    pub = tmp_path / "id.pub"
    pub.write_text(f"{user_key.get_name()} {user_key.get_base64()} test@host\n")
    first = start_sftp_server(tmp_path / "root", tmp_path / "data", username="u", password="p", authorized_key_files=[pub])
    first_key = first.host_key.get_base64()
    first.stop()
    srv = start_sftp_server(tmp_path / "root", tmp_path / "data", username="u", password="p", authorized_key_files=[pub])
    try:
        assert srv.host_key.get_base64() == first_key
        client = connect(srv, pkey=user_key, password=None)
        client.open_sftp().listdir("/")
        client.close()
    finally:
        srv.stop()


def test_drop_fault_closes_the_connection_mid_upload(server):
    client = connect(server)
    try:
        sftp = client.open_sftp()
        server.faults.set("drop", next_n=1)
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            sftp.putfo(io.BytesIO(b"x" * 200_000), "/Import/big.csv")
    finally:
        client.close()
    client = connect(server)  # the server keeps serving new connections
    try:
        assert "Import" in client.open_sftp().listdir("/")
    finally:
        client.close()


def test_repeated_bad_passwords_lock_the_account(server):
    for _ in range(server.lockout_after):
        with pytest.raises(paramiko.AuthenticationException):
            connect(server, password="wrong").close()
    with pytest.raises(paramiko.AuthenticationException):
        connect(server).close()  # the right password is refused while locked out
    server.unlock()
    connect(server).close()


def test_connections_beyond_the_limit_are_refused(server):
    server.max_connections = 2
    clients = [connect(server), connect(server)]
    try:
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            connect(server).close()
    finally:
        for client in clients:
            client.close()
