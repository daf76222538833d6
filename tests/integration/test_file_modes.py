"""Files with personal data or state are owner-only from their first moment (issue 19.8).

Run under the usual permissive umask 022, so the modes seen come from how the connector
creates its files, not from the environment; and ``os.chmod`` is watched, so a file that
is created open and narrowed afterwards fails the test too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.models import EventType, Subscriber, TrackingEvent

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX mode bits")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def no_chmod(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail on any chmod: the right mode must be given when the file is created."""
    calls: list[str] = []

    def refuse(path: object, *args: object, **kwargs: object) -> None:
        calls.append(str(path))
        raise AssertionError(f"chmod after creation: {path}")

    monkeypatch.setattr(os, "chmod", refuse)
    monkeypatch.setattr(os, "fchmod", refuse)
    return calls


def sqlite_family(db: Path) -> list[Path]:
    return [p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if p.exists()]


def test_state_database_and_its_wal_and_shm_are_owner_only(tmp_path: Path, loose_umask, no_chmod) -> None:
    from connector.state.store import StateStore

    db = tmp_path / "data" / "state.db"
    store = StateStore(f"sqlite:///{db}", holder="t")
    try:
        store.migrate()
        store.set_meta("k", "v")
        family = sqlite_family(db)
        assert len(family) == 3, family  # WAL mode: the -wal and -shm exist while it is open
        assert {p.name: mode(p) for p in family} == {p.name: 0o600 for p in family}
        assert mode(db.parent) == 0o700
    finally:
        store.close()


def test_staging_database_is_owner_only(tmp_path: Path, loose_umask, no_chmod) -> None:
    from connector.staging.sql import SqlStagingStore

    db = tmp_path / "staging.db"
    staging = SqlStagingStore(f"sqlite:///{db}", "connector_tracking_events")
    try:
        staging.migrate()
        event = TrackingEvent(event_type=EventType.OPEN, job_id="1", subscriber_key="k1",
                              event_time=datetime(2026, 1, 5, tzinfo=UTC), email="pat@example.test")
        assert staging.write_events([event], {}) == 1
        family = sqlite_family(db)
        assert family and all(mode(p) == 0o600 for p in family), {p.name: oct(mode(p)) for p in family}
    finally:
        staging.close()


def test_batch_files_and_the_send_work_file_are_owner_only(tmp_path: Path, loose_umask, no_chmod) -> None:
    from connector.batchfiles import BatchWriter
    from connector.suppression import SendWorkspace

    folder = tmp_path / "batches"
    writer = BatchWriter(folder, "s1", ["City"], batch_size=2)
    subs = [Subscriber(subscriber_key=f"k{i}", email=f"p{i}@example.test", attributes={"City": "Oslo"})
            for i in range(3)]
    finished = [b for b in (writer.write(s) for s in subs) if b is not None]
    part = next(folder.glob("*.part"))
    assert mode(part) == 0o600  # the file being written
    last = writer.close()
    files = [b.path for b in [*finished, last] if b is not None]
    assert len(files) == 2 and all(mode(p) == 0o600 for p in files)
    assert mode(folder) == 0o700

    with SendWorkspace(tmp_path / "work" / "s1" / "work.db") as work:
        work.db.execute("create table t (x)")
        work.db.execute("insert into t values (1)")
        family = sqlite_family(work.path)
        assert len(family) == 3 and all(mode(p) == 0o600 for p in family)


def test_log_files_are_readable_by_the_service_group_only(tmp_path: Path, loose_umask, no_chmod) -> None:
    import logging

    from connector.logs import LOG_FILE_MODE, file_handler

    assert LOG_FILE_MODE == 0o640
    handler = file_handler(tmp_path / "log", keep_days=2)
    try:
        handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None))
    finally:
        handler.close()
    assert mode(tmp_path / "log" / "connector.log") == 0o640
    assert mode(tmp_path / "log") == 0o750


def test_sandbox_organization_data_is_owner_only(tmp_path: Path, loose_umask, no_chmod) -> None:
    from connector.sandbox.dataverse.store import DataverseStore

    db = tmp_path / "crm.sqlite"
    store = DataverseStore(db)
    try:
        store.execute("SELECT 1")
        assert all(mode(p) == 0o600 for p in sqlite_family(db))
    finally:
        store.close()


def test_a_world_readable_database_from_an_older_version_is_narrowed(tmp_path: Path, loose_umask) -> None:
    from structlog.testing import capture_logs

    from connector.state.store import StateStore

    db = tmp_path / "state.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    with capture_logs() as logs:
        store = StateStore(f"sqlite:///{db}", holder="t")
        try:
            store.migrate()
        finally:
            store.close()
    assert mode(db) == 0o600
    assert any(e["event"] == "file_mode_tightened" and e["path"] == str(db) for e in logs)


def test_the_command_line_lowers_the_umask(loose_umask) -> None:
    from connector.private import PROCESS_UMASK, restrict_umask

    restrict_umask()
    current = os.umask(0o022)
    assert current & PROCESS_UMASK == PROCESS_UMASK and current & 0o022 == 0o022


def test_sandbox_sftp_uploads_are_owner_only(sftp_sandbox, tmp_path: Path, loose_umask) -> None:
    from connector.config import Config, SftpSettings, TimeoutSettings
    from connector.transfer.sftp import SftpFileDrop

    local = tmp_path / "cesp_s1_1.csv"
    local.write_bytes(b"SubscriberKey,EmailAddress\r\nk1,pat@example.test\r\n")
    settings = SftpSettings(host=sftp_sandbox.host, port=sftp_sandbox.port, username=sftp_sandbox.username,
                            password=sftp_sandbox.password, known_hosts=sftp_sandbox.known_hosts,
                            import_folder="/Import")
    drop = SftpFileDrop.from_config(Config(sftp=settings, timeouts=TimeoutSettings(sftp_seconds=10)))
    try:
        drop.upload(local, local.name)
    finally:
        drop.close()
    assert mode(sftp_sandbox.import_folder / local.name) == 0o600
