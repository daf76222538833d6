"""`connector migrate` prepares the staging table too when tracking mode is all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa


def _migrate(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    ini = tmp_path / "service.ini"
    ini.write_text(f"[service]\ndata_dir = data\n\n[logging]\nfolder = logs\nconsole = off\n\n"
                   f"[tracking]\nmode = {mode}\n", encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "connector", "migrate", "-c", str(ini)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)


def test_migrate_creates_the_staging_table_in_mode_all(tmp_path: Path) -> None:
    result = _migrate(tmp_path, "all")
    assert result.returncode == 0, result.stderr
    assert "staging table connector_tracking_events: up to date" in result.stdout
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'staging.db'}")
    try:
        assert "connector_tracking_events" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    again = _migrate(tmp_path, "all")
    assert again.returncode == 0 and "already at revision" in again.stdout


def test_migrate_leaves_staging_alone_in_other_modes(tmp_path: Path) -> None:
    result = _migrate(tmp_path, "responders")
    assert result.returncode == 0, result.stderr
    assert "staging table" not in result.stdout
    assert not (tmp_path / "data" / "staging.db").exists()
