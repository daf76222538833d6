"""The system-service pieces: the systemd unit, scripts/install-service, the Windows wrapper."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from connector import winservice

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "config" / "connector.service"
INSTALL = REPO / "scripts" / "install-service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart binaries exist: point them at a real executable
    fake_prefix = tmp_path / "opt"
    (fake_prefix / "bin").mkdir(parents=True)
    exe = fake_prefix / "bin" / "connector"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "connector.service"
    unit.write_text(UNIT.read_text().replace("/opt/connector", str(fake_prefix)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines()
        if "connector.service" in line and "Failed to" not in line.split(":")[0]
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems == [], problems


def test_unit_refuses_restart_on_config_error_and_checks_config_first() -> None:
    text = UNIT.read_text()
    assert "RestartPreventExitStatus=3" in text
    pre = [line for line in text.splitlines() if line.startswith("ExecStartPre=")]
    assert pre and "check-config -c /etc/connector/service.ini" in pre[0]
    assert "ExecStart=/opt/connector/bin/connector run -c /etc/connector/service.ini" in text


def _install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PIP_NO_INPUT="1")
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--python", sys.executable, *extra],
        capture_output=True, text=True, timeout=600, env=env,
    )


@pytest.mark.slow
def test_install_service_stages_idempotently_and_uninstalls(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = _install(root)
    assert first.returncode == 0, first.stderr
    exe = root / "opt/connector/bin/connector"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("connector ")
    unit = (root / "etc/systemd/system/connector.service").read_text()
    assert "ExecStart=/opt/connector/bin/connector run -c /etc/connector/service.ini" in unit
    ini = root / "etc/connector/service.ini"
    assert "folder = /var/log/connector" in ini.read_text()
    env_file = root / "etc/connector/connector.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert (root / "var/lib/connector").is_dir() and (root / "var/log/connector").is_dir()

    # an admin edits the config; a second install (an upgrade) keeps it
    ini.write_text(ini.read_text() + "\n# edited by the admin\n")
    second = _install(root)
    assert second.returncode == 0, second.stderr
    assert "kept the existing" in second.stdout
    assert ini.read_text().endswith("# edited by the admin\n")

    removed = _install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt/connector").exists()
    assert not (root / "etc/systemd/system/connector.service").exists()
    assert ini.exists(), "uninstall without --purge keeps the configuration"

    purged = _install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/connector").exists()


def test_install_service_rejects_unknown_option(tmp_path: Path) -> None:
    result = _install(tmp_path, "--prefx", "/x")
    assert result.returncode == 1
    assert "unknown option '--prefx'" in result.stderr


def test_windows_wrapper_imports_and_parses_its_command_line() -> None:
    parser = winservice.build_parser()
    args = parser.parse_args(["install", "--config", r"C:\ProgramData\Connector\service.ini", "--startup", "delayed"])
    assert args.action == "install" and args.startup == "delayed"
    assert parser.parse_args(["restart"]).action == "restart"
    with pytest.raises(SystemExit):
        parser.parse_args(["install"])  # --config is required
    if not winservice.HAVE_PYWIN32:
        with pytest.raises(SystemExit, match="pywin32 is needed"):
            winservice.main(["remove"])


def test_a_restart_picks_up_the_edited_config(tmp_path: Path) -> None:
    """The config is read at every start: what systemctl restart relies on after an edit."""
    ini = tmp_path / "service.ini"

    def run_once(log_folder: str) -> subprocess.CompletedProcess[str]:
        ini.write_text(f"[service]\ndata_dir = data\n\n[logging]\nfolder = {log_folder}\nconsole = off\n",
                       encoding="utf-8")
        return subprocess.run([sys.executable, "-m", "connector", "run", "-c", str(ini), "--once"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    first = run_once("logs-before")
    assert first.returncode in (0, 1), first.stderr  # no CRM/ESP configured: steps fail cleanly
    second = run_once("logs-after")
    assert second.returncode in (0, 1), second.stderr
    before = (tmp_path / "logs-before" / "connector.log").read_text()
    after = (tmp_path / "logs-after" / "connector.log").read_text()
    assert before and after, "each start logs to the folder its config names"
    # a broken edit: the next start refuses with the check-config report, exit 3
    ini.write_text("[logging]\nfolder = logs-after\nkeep_dayz = 3\n", encoding="utf-8")
    broken = subprocess.run([sys.executable, "-m", "connector", "run", "-c", str(ini)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert broken.returncode == 3
    assert "keep_dayz" in broken.stderr and "keep_days" in broken.stderr
