"""``connector sandbox``: run the CRM, ESP and SFTP sandboxes in the foreground.

Prints the URLs, credentials and the CA file to trust, optionally writes a
service.ini pointed at them, and serves until Ctrl-C / SIGTERM. The organization
is kept in ``<data-dir>/crm.sqlite`` so it survives a restart (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from connector.cli import EXIT_FAILURE, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sandbox", help="run local Dataverse / Marketing Cloud / SFTP sandboxes")
    parser.add_argument("--data-dir", type=Path, default=Path("sandbox-data"),
                        help="folder for the CA, the organization and the SFTP root (default: ./sandbox-data)")
    parser.add_argument("--contacts", type=int, default=1000, help="contacts to generate in a new organization")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated organization")
    parser.add_argument("--plain-http", action="store_true", help="serve plain HTTP instead of HTTPS (debugging)")
    parser.add_argument("--no-customizations", action="store_true",
                        help="start the CRM without the connector's customizations (to try `connector crm-setup`)")
    parser.add_argument("--fresh", action="store_true", help="discard a kept organization and generate a new one")
    parser.add_argument("--write-ini", type=Path, default=None, metavar="PATH",
                        help="write a service.ini (and secrets.ini) for the connector pointed at the sandbox")
    parser.set_defaults(func=sandbox_command)


def sandbox_command(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    from connector.sandbox import start_sandbox

    data_dir: Path = args.data_dir
    if args.fresh:
        for name in ("crm.sqlite", "crm.sqlite-wal", "crm.sqlite-shm"):
            (data_dir / name).unlink(missing_ok=True)
    try:
        sb = start_sandbox(data_dir, seed=args.seed, contacts=args.contacts, tls=not args.plain_http,
                           customizations=not args.no_customizations, persist=True)
    except Exception as exc:  # noqa: BLE001 - a command reports, it does not trace back
        print(f"connector sandbox: could not start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    stop = stop or threading.Event()
    with sb:
        print(sb.describe(), flush=True)
        if args.write_ini:
            path = sb.write_service_ini(args.write_ini)
            print(f"\nservice.ini for the connector: {path} (secrets in {path.parent / 'secrets.ini'})", flush=True)
        print("\nServing; press Ctrl-C to stop.", flush=True)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        stop.wait()
    print("sandbox stopped", flush=True)
    return EXIT_OK
