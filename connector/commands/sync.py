"""``connector sync -c FILE [--full] [--dry-run] [--table contact]``: one sync run in the foreground.

The same code as the service's scheduled ``sync`` step (``connector.sync.engine``), under
the same lease, so running it next to the service is safe: only one of them syncs at a
time. ``--dry-run`` computes everything and writes nothing anywhere (no lease, no shadow,
no change log, nothing at the peers): it prints the counts and writes a report of every
field it would change (``--report FILE``, CSV or ``.json``). Progress goes to stderr, the
summary to stdout.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import uuid
from pathlib import Path

from connector.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

TABLES = ("contact", "lead", "account")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sync", help="run the two-way subscriber sync once, in the foreground",
        description="Sync CRM contacts, leads and accounts with their ESP subscribers field by field, "
                    "by the [sync.<table>] rules. Exit 0 when every change was applied, 1 when some failed.")
    parser.add_argument("-c", "--config", required=True, type=Path, help="path of service.ini")
    parser.add_argument("--full", action="store_true",
                        help="compare everything (the first run, after a rule change, or on demand)")
    parser.add_argument("--dry-run", action="store_true", help="compute everything, write nothing; report it")
    parser.add_argument("--table", action="append", choices=TABLES, help="only this table (repeatable)")
    parser.add_argument("--report", type=Path, help="report file of --dry-run (.csv or .json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print the log lines on stderr")
    parser.set_defaults(func=sync_command)


def sync_command(args: argparse.Namespace) -> int:
    from connector.commands.foreground import load_quiet, run_in_foreground
    from connector.logs import setup_logging

    config = load_quiet(args.config, verbose=args.verbose)
    if config is None:
        return EXIT_CONFIG
    setup_logging(config)
    missing = [t for t in args.table or () if t not in config.sync_rules]
    if missing:
        print(f"connector sync: no [sync.{missing[0]}] section in {args.config}", file=sys.stderr)
        return EXIT_CONFIG
    return run_in_foreground("sync", lambda stopping: run_command(config, args, stopping))


def run_command(config: object, args: argparse.Namespace, stopping: threading.Event) -> int:
    from connector.runtime import AdapterPool
    from connector.state.store import StateStore
    from connector.sync.engine import SyncOptions, run_sync

    holder = f"{config.service.instance_id or socket.gethostname()}:sync:{os.getpid()}"  # type: ignore[attr-defined]
    store = StateStore.from_config(config, holder=holder)
    adapters = AdapterPool(config)
    dry = args.dry_run or config.sync.test_mode  # type: ignore[attr-defined]
    try:
        if not dry:
            store.migrate()
        elif not store.health()["up_to_date"]:
            print("connector sync: the state database is not migrated; run `connector migrate -c FILE` first "
                  "(a dry run writes nothing, not even the schema)", file=sys.stderr)
            return EXIT_FAILURE
        ctx = adapters.step_context(store, stopping=stopping, run_id=uuid.uuid4().hex)
        options = SyncOptions(full=args.full, dry_run=args.dry_run, tables=tuple(args.table or ()),
                              report_path=args.report, progress=Progress(sys.stderr))
        outcome = run_sync(ctx, options)
        sys.stderr.write("\n" if sys.stderr.isatty() else "")
        print(outcome.message)
        return EXIT_OK if outcome.ok else EXIT_FAILURE
    finally:
        adapters.close_all()
        store.close()


class Progress:
    """``esp read 2,500  crm read 5,000  to esp 12  to crm 3 ...`` redrawn on a terminal, else a line a page."""

    KEYS = ("esp_read", "crm_read", "to_esp", "to_crm", "conflicts", "skipped", "failed")

    def __init__(self, stream: object) -> None:
        self.stream = stream
        self.tty = getattr(stream, "isatty", lambda: False)()

    def __call__(self, where: str, counts: dict[str, int]) -> None:
        text = f"{where:<8} " + "  ".join(f"{k.replace('_', ' ')} {counts.get(k, 0):,}" for k in self.KEYS)
        self.stream.write(("\r" + text) if self.tty else text + "\n")  # type: ignore[attr-defined]
        self.stream.flush()  # type: ignore[attr-defined]
