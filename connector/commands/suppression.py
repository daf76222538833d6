"""``connector suppression -c FILE [--force]``: refresh the statutory suppression list once.

The same code as the service's scheduled ``suppression`` step (``connector.steps.suppression``):
reads ``[suppression] file`` or ``source_url`` + ``query`` into the state database and prints
the counts (read, added, removed, malformed lines with their numbers). ``--force`` reads a
file even when it looks unchanged. Exit 0 when the list was stored, 1 when the source could
not be read (or another process is refreshing it), 3 for a configuration problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from connector.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from connector.errors import ConnectorError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "suppression", help="refresh the [suppression] list (RTR / Robinson list) once",
        description="Read the statutory suppression list from [suppression] file or source_url into the state "
                    "database (hashed) and print the counts (docs/sends.md).")
    parser.add_argument("-c", "--config", required=True, type=Path, help="path of service.ini")
    parser.add_argument("--force", action="store_true", help="read the file even when its size and time are unchanged")
    parser.set_defaults(func=suppression_command)


def suppression_command(args: argparse.Namespace) -> int:
    from connector.commands.run import load_or_report
    from connector.runtime import AdapterPool
    from connector.state.store import StateStore
    from connector.steps.suppression import run_suppression_refresh

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if not config.suppression.enabled:
        print(f"connector suppression: {args.config} has no [suppression] file or source_url", file=sys.stderr)
        return EXIT_CONFIG
    store = StateStore(config.state_url(), timeout_seconds=config.timeouts.sql_seconds)
    adapters = AdapterPool(config)
    try:
        store.migrate()
        ctx = adapters.step_context(store)
        store.start_step_run("suppression", ctx.run_id)  # `connector status` shows it like a scheduled run
        try:
            outcome = run_suppression_refresh(ctx, force=args.force)
        except ConnectorError as exc:
            store.finish_step_run(ctx.run_id, False, 0, f"{type(exc).__name__}: {exc}")
            print(f"connector suppression: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        store.finish_step_run(ctx.run_id, outcome.ok, outcome.processed, outcome.message, outcome.details)
    finally:
        adapters.close_all()
        store.close()
    print(outcome.message)
    return EXIT_OK if outcome.ok and not outcome.details.get("busy") else EXIT_FAILURE
