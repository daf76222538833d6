"""The SFTP file drop against the sandbox SFTP server (password auth, dropped connections)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connector.config import Config, SftpSettings, TimeoutSettings
from connector.errors import AuthError, PermanentPeerError, TransientPeerError
from connector.transfer.sftp import SftpFileDrop


@pytest.fixture
def sftp(sftp_sandbox):  # noqa: ANN001, ANN201 - the SFTP sandbox of tests/fixtures/sandbox.py
    from connector.sandbox.faults import FaultKnobs

    sftp_sandbox.faults = FaultKnobs(seed=7)  # rate-based drops repeat exactly from run to run
    return sftp_sandbox


def _drop(server, **overrides) -> SftpFileDrop:  # noqa: ANN001
    settings = dict(host=server.host, port=server.port, username=server.username,
                    password=server.password, known_hosts=server.known_hosts, import_folder="/Import")
    settings.update(overrides)
    drop = SftpFileDrop.from_config(Config(sftp=SftpSettings(**settings), timeouts=TimeoutSettings(sftp_seconds=10)))
    drop._sleep = lambda seconds: None  # noqa: SLF001 - no real backoff in tests
    return drop


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / f"local-{size}.csv"
    path.write_bytes(os.urandom(size))
    return path


def test_upload_with_password_auth(sftp, tmp_path: Path) -> None:
    local = _file(tmp_path, 200_000)
    drop = _drop(sftp)
    try:
        assert drop.upload(local, "cesp_p1_1.csv") == 200_000
        assert drop.size("cesp_p1_1.csv") == 200_000
    finally:
        drop.close()
    assert (sftp.import_folder / "cesp_p1_1.csv").read_bytes() == local.read_bytes()
    assert not (sftp.import_folder / "cesp_p1_1.csv.part").exists()


def test_upload_survives_dropped_connections_and_resumes(sftp, tmp_path: Path) -> None:
    local = _file(tmp_path, 800_000)
    sftp.faults.set("drop", rate=0.1)
    drop = _drop(sftp)
    drop._max_retries = 40  # noqa: SLF001 - a very flaky line
    try:
        with capture_logs() as logs:
            drop.upload(local, "cesp_p2_1.csv")
    finally:
        drop.close()
        dropped = sftp.faults.taken("drop")
        sftp.faults.clear()
    assert dropped >= 2
    resumed = [e for e in logs if e["event"] == "sftp_upload_resumed"]
    assert resumed and all(0 < e["offset"] < 800_000 for e in resumed)  # resumed, not started over
    assert (sftp.import_folder / "cesp_p2_1.csv").read_bytes() == local.read_bytes()


def test_drop_on_first_write_then_resume(sftp, tmp_path: Path) -> None:
    local = _file(tmp_path, 100_000)
    sftp.faults.set("drop", next_n=1)
    drop = _drop(sftp)
    try:
        drop.upload(local, "cesp_p3_1.csv")
    finally:
        drop.close()
    assert sftp.faults.taken("drop") == 1  # the drop did happen
    assert (sftp.import_folder / "cesp_p3_1.csv").read_bytes() == local.read_bytes()


def test_persistent_drops_end_in_a_transient_error(sftp, tmp_path: Path) -> None:
    sftp.faults.set("drop", rate=1.0)
    drop = _drop(sftp)
    drop._max_retries = 2  # noqa: SLF001
    try:
        with pytest.raises(TransientPeerError, match="SFTP server 127.0.0.1"):
            drop.upload(_file(tmp_path, 10), "cesp_p4_1.csv")
    finally:
        drop.close()
        sftp.faults.clear()


def test_wrong_password_is_an_auth_error_without_the_password(sftp) -> None:
    from pydantic import SecretStr

    drop = _drop(sftp, password=SecretStr("not-the-pa55word"))
    with pytest.raises(AuthError) as caught:
        drop.size("x")
    assert "not-the-pa55word" not in str(caught.value)


def test_sandbox_host_key_missing_from_known_hosts_is_refused(sftp, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    drop = _drop(sftp, known_hosts=other)
    with pytest.raises(PermanentPeerError, match=r"not in \[sftp\] known_hosts"):
        drop.size("x")


def test_names_with_paths_are_refused(sftp) -> None:
    drop = _drop(sftp)
    with pytest.raises(ValueError):
        drop.size("../etc/passwd")


def test_a_connection_closed_while_idle_is_reopened(sftp, tmp_path: Path) -> None:
    drop = _drop(sftp)
    try:
        assert drop.size("nothing.csv") is None
        drop._ssh.get_transport().close()  # noqa: SLF001 - as the server's idle timeout would
        assert drop.upload(_file(tmp_path, 1000), "cesp_p5_1.csv") == 1000
    finally:
        drop.close()
