"""``connector demo``: start the sandbox, run the real daemon against it, print a summary.

What ``scripts/demo`` runs on a fresh machine. See ``connector.demo`` for the steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from connector.cli import EXIT_FAILURE, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole connector against its local sandbox and print a summary",
        description="Start the sandbox CRM, Marketing Cloud and SFTP servers with a generated organization, "
        "apply the CRM customizations with crm-setup, file three send requests (small: SOAP; large: SFTP "
        "batch files; one from a user without an allowed role), run the real daemon until the sends are "
        "released and tracking is pulled, and check the summary against the sandbox's records.",
    )
    parser.add_argument("--contacts", type=int, default=50_000,
                        help="contacts in the generated organization (default 50000; leads are a fifth of it)")
    parser.add_argument("--threshold", type=int, default=25_000,
                        help="[batching] threshold: sends above it go as SFTP batch files (default 25000)")
    parser.add_argument("--batch-size", type=int, default=5_000, help="rows per batch file (default 5000)")
    parser.add_argument("--tracking-mode", choices=("none", "aggregate", "responders", "all"), default="all",
                        help="tracking mode of the generated service.ini (default all)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated organization (default 1)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="working folder (sandbox data, service.ini, state, logs); default: a new temp folder")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="give up after this many seconds per phase (default 900)")
    parser.add_argument("--small", action="store_true",
                        help="a quick run: 3000 contacts, threshold 1000, batch size 400")
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON object at the end")
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from connector.demo import DemoFailed, DemoOptions, run_demo

    options = DemoOptions(data_dir=args.data_dir, contacts=args.contacts, seed=args.seed, threshold=args.threshold,
                          batch_size=args.batch_size, tracking_mode=args.tracking_mode, timeout=args.timeout)
    if args.small:
        options.contacts, options.threshold, options.batch_size = 3_000, 1_000, 400
    try:
        result = run_demo(options)
    except DemoFailed as exc:
        print(f"\ndemo: FAILED — {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps({"ok": result.ok, "problems": result.problems, "sends": result.rows,
                          "service_ini": str(result.service_ini), "log_file": str(result.log_file)}, default=str))
    return EXIT_OK if result.ok else EXIT_FAILURE
