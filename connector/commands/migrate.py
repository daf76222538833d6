"""``connector migrate -c FILE``: bring the state database's schema (and, in tracking mode all,
the staging table) to the latest revision.

``connector run`` does this at every start as well; the command exists for
upgrades done ahead of a restart, and for several instances sharing one database.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from connector.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from connector.errors import StateError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("migrate", help="create or upgrade the state database schema")
    parser.add_argument("-c", "--config", required=True, type=Path, help="path of service.ini")
    parser.set_defaults(func=migrate_command)


def migrate_command(args: argparse.Namespace) -> int:
    from connector.commands.run import load_or_report
    from connector.state.store import StateStore

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        with StateStore.from_config(config) as store:
            before = store.schema_revision()
            after = store.migrate()
            url = store.safe_url
    except StateError as exc:
        print(f"connector migrate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if before == after:
        print(f"state database {url}: already at revision {after}")
    else:
        print(f"state database {url}: migrated from {before or 'empty'} to revision {after}")
    if config.tracking.mode == "all":  # only mode all writes staging rows
        from connector.errors import PeerError
        from connector.staging.sql import migrate_staging

        try:
            migrate_staging(config)
        except PeerError as exc:
            print(f"connector migrate: staging table: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"staging table {config.staging.table}: up to date")
    return EXIT_OK
