"""``connector kpi -c FILE [--dry-run] [--full]``: load the KPIs once, in the foreground.

The same code as the service's scheduled ``kpi`` step (``connector.steps.kpi``), with a
progress line per slice on stderr and a summary at the end: rows read, written,
unchanged, removed, the unknown customers (count and a sample; the whole list is in the
quarantine table of the state database, ``request_id`` ``kpi:<source_name>``) and the
bad rows by reason. ``--dry-run`` reads the source, the state database and CRM (customer
matching) and writes nothing anywhere; ``--full`` writes every value again, changed or
not (after CRM rows were edited or deleted by hand). Exit 0 when the load completed with
no failed write, 1 otherwise, 3 for a configuration problem, 130 after Ctrl-C (the next
run goes on; nothing is lost, nothing doubled).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from connector.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from connector.errors import ConnectorError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kpi", help="load the KPIs from the [kpi] source into CRM once, with progress and a summary",
        description="Read the [kpi] query's rows, match the customers in CRM and write the changed KPI values "
                    "as rows of the KPI table (differential; docs/kpi.md).")
    parser.add_argument("-c", "--config", required=True, type=Path, help="path of service.ini")
    parser.add_argument("--dry-run", action="store_true", help="report what would be written; write nothing")
    parser.add_argument("--full", action="store_true", help="write every value again, changed or not")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print the log lines on stderr")
    parser.set_defaults(func=kpi_command)


def kpi_command(args: argparse.Namespace) -> int:
    from connector.commands.foreground import load_quiet, run_in_foreground
    from connector.logs import setup_logging

    config = load_quiet(args.config, verbose=args.verbose)
    if config is None:
        return EXIT_CONFIG
    if not config.kpi.enabled:
        print(f"connector kpi: {args.config} has no [kpi] source_url and query: nothing to load (docs/kpi.md)",
              file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config)
    return run_in_foreground("kpi", lambda stopping: load_once(config, stopping, dry_run=args.dry_run,
                                                              full=args.full), close_logs=True)


def load_once(config: Any, stopping: threading.Event, *, dry_run: bool = False, full: bool = False) -> int:
    from connector.commands.foreground import register_foreground
    from connector.runtime import AdapterPool
    from connector.steps.kpi import run_kpi

    # registered under <instance_id>/kpi: it takes over what a dead earlier `connector kpi` on this
    # host held (its lease), and a service with the same instance_id never counts it as a twin
    store = register_foreground(config, "kpi")
    adapters = AdapterPool(config)
    try:
        ctx = adapters.step_context(store, stopping=stopping)
        if not dry_run:  # `connector status` shows a manual run like a scheduled one
            store.start_step_run("kpi", ctx.run_id)
        try:
            outcome = run_kpi(ctx, dry_run=dry_run, full=full, progress=_progress)
        except ConnectorError as exc:
            if not dry_run:
                store.finish_step_run(ctx.run_id, False, 0, f"{type(exc).__name__}: {exc}")
            raise
        if not dry_run:
            store.finish_step_run(ctx.run_id, outcome.ok, outcome.processed, outcome.message, outcome.details)
    finally:
        adapters.close_all()
        store.unregister_instance()
        store.close()
    print(("dry run: " if dry_run else "") + outcome.message, file=sys.stderr)
    if stopping.is_set():
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.ok and not outcome.details.get("busy") else EXIT_FAILURE


def _progress(stats: Any) -> None:
    print(f"slice {stats.slices:>5}  read {stats.read:>10,}  written {stats.written:>9,}  "
          f"unchanged {stats.unchanged:>10,}  unknown customers {stats.unmatched:>7,}  bad {stats.bad:>6,}",
          file=sys.stderr, flush=True)
