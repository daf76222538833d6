"""Contract suite of the ``FileDrop`` interface, over each implementation the tests use.

``sftp``: the real ``SftpFileDrop`` against the sandbox SFTP server (host key checked);
``double``: ``tests.doubles.drop.FakeDrop``, the unit tests' stand-in. Both must pass every
test here, so the double accepts nothing the real drop refuses. Transport faults (dropped
connections, resumed uploads, logins) are the SFTP adapter's own: tests/integration/test_sftp_sandbox.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from connector.errors import PermanentPeerError
from connector.transfer.base import FileDrop


@dataclass
class DropPeer:
    drop: FileDrop
    folder: Path  # where the ESP reads the files (the server's Import folder)


@pytest.fixture(params=["sftp", "double"])
def peer(request, tmp_path: Path) -> Iterator[DropPeer]:
    if request.param == "double":
        from tests.doubles.drop import FakeDrop

        drop = FakeDrop(tmp_path / "drop")
        yield DropPeer(drop, drop.folder)
        return
    from connector.transfer.sftp import SftpFileDrop

    server = request.getfixturevalue("sftp_sandbox")
    drop = SftpFileDrop(server.host, server.port, server.username, password=server.password,
                        known_hosts=server.known_hosts, folder="/Import", timeout=10)
    try:
        yield DropPeer(drop, server.root / "Import")
    finally:
        drop.close()


def _file(tmp_path: Path, size: int, name: str = "local.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def test_upload_lands_whole_under_its_name(peer: DropPeer, tmp_path: Path) -> None:
    local = _file(tmp_path, 70_000)
    assert peer.drop.size("cesp_c1_1.csv") is None
    assert peer.drop.upload(local, "cesp_c1_1.csv") == 70_000
    assert peer.drop.size("cesp_c1_1.csv") == 70_000
    assert (peer.folder / "cesp_c1_1.csv").read_bytes() == local.read_bytes()
    assert sorted(p.name for p in peer.folder.iterdir()) == ["cesp_c1_1.csv"]  # no temporary file left


def test_upload_again_is_safe_and_a_changed_file_replaces_the_old(peer: DropPeer, tmp_path: Path) -> None:
    local = _file(tmp_path, 1_000)
    peer.drop.upload(local, "cesp_c2_1.csv")
    assert peer.drop.upload(local, "cesp_c2_1.csv") == 1_000  # repeated: left as is
    bigger = _file(tmp_path, 3_000, "bigger.csv")
    assert peer.drop.upload(bigger, "cesp_c2_1.csv") == 3_000
    assert (peer.folder / "cesp_c2_1.csv").read_bytes() == bigger.read_bytes()


def test_remove_really_removes_and_an_absent_file_is_fine(peer: DropPeer, tmp_path: Path) -> None:
    peer.drop.upload(_file(tmp_path, 10), "cesp_c3_1.csv")
    peer.drop.remove("cesp_c3_1.csv")
    assert peer.drop.size("cesp_c3_1.csv") is None and not (peer.folder / "cesp_c3_1.csv").exists()
    peer.drop.remove("cesp_c3_1.csv")  # again: nothing there, no error


@pytest.mark.parametrize("name", ["sub/cesp.csv", "..", "", "a\\b.csv"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(peer: DropPeer, tmp_path: Path, name: str) -> None:
    local = _file(tmp_path, 10)
    with pytest.raises(ValueError, match="plain file name"):
        peer.drop.upload(local, name)
    with pytest.raises(ValueError, match="plain file name"):
        peer.drop.size(name)
    assert list(peer.folder.iterdir()) == []


def test_a_folder_under_the_name_is_no_file(peer: DropPeer) -> None:
    (peer.folder / "cesp_c4_1.csv").mkdir()
    with pytest.raises(PermanentPeerError, match="folder"):
        peer.drop.size("cesp_c4_1.csv")
