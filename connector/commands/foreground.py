"""What the foreground commands (``send-now``, ``kpi``, ``sync``) set up the same way.

The state store of ``send-now`` and ``kpi`` is registered as its own process (``register_foreground``).

Each loads the configuration (or prints the check-config report), keeps its log lines off
the console unless ``--verbose`` (the command prints its own progress there), and runs its
work with Ctrl-C setting a ``stopping`` event the work checks at safe points (the previous
SIGINT handler comes back afterwards), a ``ConnectorError`` ending as
``connector <command>: <message>`` on stderr and exit 1.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from connector.cli import EXIT_FAILURE
from connector.errors import ConnectorError


def load_quiet(path: str | Path, *, verbose: bool) -> Any | None:
    """The config, its ``[logging] console`` off unless ``verbose``; None after the check-config report."""
    from connector.commands.run import load_or_report

    config = load_or_report(path)
    if config is None or verbose:
        return config
    return config.model_copy(update={"logging": config.logging.model_copy(update={"console": "off"})})


def run_in_foreground(command: str, work: Callable[[threading.Event], int], *, close_logs: bool = False) -> int:
    """``work(stopping)``'s exit code; Ctrl-C sets ``stopping``; a ConnectorError is printed, exit 1.

    ``close_logs``: close the log handlers ``setup_logging`` installed once the work is done."""
    stopping = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        return work(stopping)
    except ConnectorError as exc:
        print(f"connector {command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGINT, previous)
        if close_logs:
            from connector.logs import close_logging

            close_logging()


__all__ = ["load_quiet", "run_in_foreground"]


def register_foreground(config: Any, role: str) -> Any:
    """The state store of a foreground command, registered in ``instances`` as ``connector run`` registers.

    Its holder is the process identity (``connector.state.instances``) under the label
    ``<instance_id>/<role>`` (``send-now``, ``kpi``): never the service's leases, and an earlier
    run of the same command of this instance that died on this host gives its leases up to
    this one at once.
    """
    from connector import __version__
    from connector.state.store import StateStore

    label = f"{config.service.instance_id}/{role}" if config.service.instance_id else role
    store = StateStore(config.state_url(), label=label, timeout_seconds=config.timeouts.sql_seconds)
    try:
        store.migrate()
        store.register_instance(__version__)
        store.take_over_dead_predecessors()
    except BaseException:
        store.close()
        raise
    return store
