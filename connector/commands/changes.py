"""``connector changes -c FILE [--since ...] [--record ID] [--format csv|json]``: the field-level change log.

Every field the connector changed (the sync in both directions, tracking's writes to CRM),
oldest first: time, table, record, field, old, new, direction, rule, run, source. Read
page by page, so a long log prints without holding it in memory.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from connector.cli import EXIT_CONFIG, EXIT_OK, EXIT_USAGE

COLUMNS = ("changed_at", "table", "record_id", "field", "old_value", "new_value", "direction", "rule", "run_id",
           "source")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("changes", help="print the field-level change log",
                                   description="Print the change log (CSV or JSON lines), oldest first.")
    parser.add_argument("-c", "--config", required=True, type=Path, help="path of service.ini")
    parser.add_argument("--since", help="ISO date/time (UTC unless it says otherwise), or e.g. 2h, 3d")
    parser.add_argument("--record", help="only this CRM record id")
    parser.add_argument("--table", choices=("contact", "lead", "account"), help="only this table")
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.set_defaults(func=changes_command)


def parse_since(text: str, now: datetime) -> datetime:
    """``2026-03-01``, ``2026-03-01T12:00``, ``...+01:00``, or ``30m`` / ``2h`` / ``3d`` ago."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit():
        return now - timedelta(**{units[text[-1]]: int(text[:-1])})
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def changes_command(args: argparse.Namespace) -> int:
    from connector.commands.run import load_or_report
    from connector.state.store import StateStore

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        since = parse_since(args.since, datetime.now(timezone.utc)) if args.since else None
    except ValueError:
        print(f"connector changes: --since {args.since!r} is not a date (2026-03-01T12:00) nor 30m / 2h / 3d",
              file=sys.stderr)
        return EXIT_USAGE
    with StateStore.from_config(config) as store:
        rows = store.iter_changes_logged(since=since, record_id=args.record, table=args.table)
        writer = csv.writer(sys.stdout) if args.format == "csv" else None
        if writer is not None:
            writer.writerow(COLUMNS)
        for row in rows:
            values = {"changed_at": row.changed_at.isoformat() if row.changed_at else "", "table": row.table,
                      "record_id": row.record_id, "field": row.field, "old_value": row.old_value,
                      "new_value": row.new_value, "direction": row.direction, "rule": row.rule,
                      "run_id": row.run_id, "source": row.source}
            if writer is not None:
                writer.writerow([values[c] if values[c] is not None else "" for c in COLUMNS])
            else:
                sys.stdout.write(json.dumps(values, ensure_ascii=False) + "\n")
    return EXIT_OK
