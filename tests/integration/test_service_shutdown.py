"""Two-stage shutdown of a real process, and the run/migrate/status commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from connector.state.migrations import head_revision

ROOT = Path(__file__).resolve().parents[2]

SERVE = (
    "import sys\n"
    "from connector.commands.run import load_or_report, serve\n"
    "config = load_or_report(sys.argv[1])\n"
    "sys.exit(3 if config is None else serve(config, steps={'sends': 'tests.fixtures.state:fake_step'}))\n"
)


def write_ini(folder: Path, drain_seconds: int = 30, extra: str = "") -> Path:
    ini = folder / "service.ini"
    ini.write_text(
        "[service]\n"
        "data_dir = data\n"
        f"drain_seconds = {drain_seconds}\n\n"
        "[logging]\n"
        "folder = logs\n"
        "console = json\n" + extra,
        encoding="utf-8",
    )
    return ini


def start(tmp_path: Path, mode: str, drain_seconds: int = 30) -> subprocess.Popen:
    ini = write_ini(tmp_path, drain_seconds)
    env = dict(os.environ, STATE_FAKE_STEP_DIR=str(tmp_path), STATE_FAKE_STEP_MODE=mode, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(ini)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate(timeout=10)
            raise AssertionError(f"fake step never started (rc={proc.returncode}):\n{out}\n{err}")
        time.sleep(0.05)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"process did not exit:\n{out}\n{err}") from None
    return proc.returncode, out, err


def events(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        if line.startswith("{"):
            names.append(json.loads(line).get("event", ""))
    return names


def test_first_sigterm_lets_the_in_flight_step_finish(tmp_path: Path) -> None:
    proc = start(tmp_path, "checkpoint")
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 0, err
    assert (tmp_path / "finished").exists()
    logged = events(err)
    assert "shutdown_requested" in logged and "service_stopped" in logged
    from connector.state.store import StateStore

    with StateStore(f"sqlite:///{tmp_path / 'data' / 'state.db'}") as store:
        last = store.step_runs_summary()["sends"]["last"]
    assert last.outcome == "ok" and last.message == "finished in mode checkpoint"


def test_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    proc = start(tmp_path, "stubborn", drain_seconds=120)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # draining: the stubborn step is still running
    proc.send_signal(signal.SIGTERM)
    code, _out, err = finish(proc, timeout=20)
    assert code == 130, err
    assert not (tmp_path / "finished").exists()
    assert "shutdown_forced" in events(err)


def test_drain_timeout_exits_with_failure(tmp_path: Path) -> None:
    proc = start(tmp_path, "stubborn", drain_seconds=1)
    proc.send_signal(signal.SIGINT)
    code, _out, err = finish(proc, timeout=20)
    assert code == 1, err
    assert "service_drain_timeout" in events(err)


def connector(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_config_refuses_to_start_with_the_check_config_report(tmp_path: Path) -> None:
    ini = write_ini(tmp_path, extra="\n[sends]\npoll_minuts = 5\n")
    result = connector("run", "-c", str(ini), "--once", cwd=tmp_path)
    assert result.returncode == 3
    assert "poll_minuts" in result.stderr and "the service does not start" in result.stderr


def test_run_once_then_migrate_and_status(tmp_path: Path) -> None:
    ini = write_ini(tmp_path)
    # No CRM/ESP configured: the steps that need them fail cleanly; exit 1, not a crash.
    result = connector("run", "-c", str(ini), "--once", cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr.split("\n{")[0]
    migrate = connector("migrate", "-c", str(ini), cwd=tmp_path)
    assert migrate.returncode == 0 and f"already at revision {head_revision()}" in migrate.stdout
    status = connector("status", "-c", str(ini), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["state_db"]["reachable"] and report["state_db"]["revision"] == head_revision()
    assert set(report["steps"]) >= {"sends", "imports", "tracking"}
    assert all(step["last_run"] for step in report["steps"].values())
    text = connector("status", "-c", str(ini), cwd=tmp_path)
    assert "State database: sqlite" in text.stdout and "Steps:" in text.stdout


def test_connector_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    ini = write_ini(tmp_path, drain_seconds=10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "-c", str(ini)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    log_file = tmp_path / "logs" / "connector.log"
    while "service_started" not in (log_file.read_text() if log_file.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=10)
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    code, _out, err = finish(proc)
    assert code == 0, err
    logged = events(log_file.read_text())
    assert logged.index("shutdown_requested") < logged.index("service_stopped")


def test_unreachable_state_database_fails_clearly(tmp_path: Path) -> None:
    ini = write_ini(tmp_path, extra="\n[state]\nurl = postgresql://postgres@127.0.0.1:1/nothing\n")
    run = connector("run", "-c", str(ini), "--once", cwd=tmp_path)
    assert run.returncode == 1
    assert "migrating the state database" in run.stderr and "[state] url" in run.stderr
    status = connector("status", "-c", str(ini), "--json", cwd=tmp_path)
    assert status.returncode == 1
    assert json.loads(status.stdout)["state_db"]["reachable"] is False
