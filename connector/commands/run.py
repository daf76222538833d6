"""``connector run -c FILE [--once]``: the service in the foreground (what systemd runs).

Exit codes: 0 stopped cleanly (also after a SIGTERM whose in-flight work
finished), 1 a failure (state database unusable, a ``--once`` step failed, or
the drain period ran out with work in flight), 3 the configuration is invalid
(the check-config report goes to stderr, i.e. the journal), 130 a second
SIGTERM/SIGINT stopped the process at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Mapping

import structlog

from connector.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from connector.errors import ConfigError, StateError

log = structlog.get_logger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the service in the foreground until SIGTERM/SIGINT",
        description="Run the connector service: the sends, imports and tracking steps on their schedules. "
        "The first SIGTERM/SIGINT stops new work and waits up to [service] drain_seconds for "
        "in-flight work; a second one exits at once (code 130).",
    )
    parser.add_argument("-c", "--config", required=True, type=Path, help="path of service.ini")
    parser.add_argument(
        "--once", action="store_true", help="run each step once, wait for it, then exit (1 if a step failed)"
    )
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    return serve(config, once=args.once)


def run_service_until(config_path: str | Path, stop_event: threading.Event) -> int:
    """Run until ``stop_event`` is set (the Windows service); returns the exit code."""
    config = load_or_report(config_path)
    if config is None:
        return EXIT_CONFIG
    return serve(config, stop_event=stop_event, install_signals=False)


def load_or_report(path: str | Path) -> Any | None:
    """The config, or None after printing the check-config report to stderr."""
    from connector.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        count = int(getattr(exc, "total", 0) or len(exc.problems) or 1)  # all found, also past the listed ones
        print(
            f"connector: {path}: {count} configuration problem(s); the service does not start.\n{exc}\n"
            f"Fix them and check with: connector check-config -c {path}",
            file=sys.stderr,
        )
        return None


def setup_logs(config: Any) -> None:
    from connector.logs import setup_logging

    setup_logging(config)


def serve(
    config: Any,
    *,
    once: bool = False,
    steps: Mapping[str, Callable | str] | None = None,
    adapters: Mapping[str, Callable] | None = None,
    stop_event: threading.Event | None = None,
    install_signals: bool = True,
    logs: bool = True,
) -> int:
    """Migrate the state database, then run the service (or each step once)."""
    from connector.service import Service
    from connector.state.store import StateStore

    if logs:
        try:
            setup_logs(config)
        except ConfigError as exc:  # e.g. a log folder that cannot be created
            print(f"connector: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    stop_event = stop_event or threading.Event()
    try:
        store = StateStore.from_config(config)
        revision = store.migrate()
    except StateError as exc:
        log.error("state_database_unusable", error=str(exc))
        print(f"connector: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    log.info("state_database_ready", backend=store.backend, revision=revision, url=store.safe_url)
    service = Service(config, store=store, steps=steps, adapters=adapters)
    signals = TwoStageSignals(service, stop_event) if install_signals else None
    try:
        if signals is not None:
            signals.install()
        if once:
            result = service.run_once()
            if result is None:
                _hard_exit(EXIT_FAILURE)
            return EXIT_OK if result else EXIT_FAILURE
        return _serve_forever(service, stop_event, config.service.drain_seconds)
    finally:
        if signals is not None:
            signals.restore()
        service.close()
        store.close()


def _serve_forever(service: Any, stop_event: threading.Event, drain_seconds: float) -> int:
    service.start()
    while not stop_event.wait(1.0):
        pass
    if service.stop(drain_seconds):
        return EXIT_OK
    # Pool threads still run; Python would wait for them at exit, so leave now.
    _hard_exit(EXIT_FAILURE)
    return EXIT_FAILURE  # pragma: no cover


def _hard_exit(code: int) -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - best effort while leaving
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class TwoStageSignals:
    """First SIGTERM/SIGINT: stop claiming work and drain. Second: exit 130 now."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), signal.SIGINT) if s is not None)

    def __init__(self, service: Any, stop_event: threading.Event) -> None:
        self.service = service
        self.stop_event = stop_event
        self.count = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self.handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            log.warning(
                "shutdown_requested",
                signal=name,
                in_flight=self.service.in_flight,
                drain_seconds=self.service.config.service.drain_seconds,
                reason="in-flight work finishes or checkpoints; send the signal again to stop at once",
            )
            self.stop_event.set()
            self.service.request_stop()
            return
        log.warning("shutdown_forced", signal=name, in_flight=self.service.in_flight)
        _hard_exit(EXIT_INTERRUPTED)
