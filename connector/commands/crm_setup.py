"""``connector crm-setup -c FILE [--dry-run] [--wait SECONDS]``: create the CRM customizations.

Reads the organization's table definitions first and creates only what is missing
(docs/crm.md), so it can be run again at any time; ``--dry-run`` only reports. It turns
change tracking on where the connector reads changes, then waits (``--wait``, default
30 minutes; 0 = do not wait) until the alternate keys' index jobs are done, printing
each status change. A Failed key is reported with the duplicated values and what to do
(exit 1); a key still building when the wait ends is reported as such (exit 1).
``--export-solution FILE.zip`` writes the same customizations as an unmanaged solution
instead (connector.crm.solution) and does not connect.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from connector.errors import ConfigError, ConnectorError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crm-setup", help="create the connector's tables, columns and keys in CRM (idempotent)",
        description="Create the connector's CRM customizations through the Dataverse metadata API. "
                    "Reads what exists first and creates only what is missing.")
    parser.add_argument("-c", "--config", required=True, help="path of service.ini")
    parser.add_argument("--dry-run", action="store_true", help="only report what would be created")
    parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="how long to wait for the alternate keys to become Active (default 1800; 0: no wait)")
    parser.add_argument("--export-solution", type=Path, default=None, metavar="FILE.zip",
                        help="write the same customizations as an unmanaged solution zip (for solution import "
                             "in a deployment pipeline) and exit; does not connect to CRM")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from connector.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    kpi_customer = config.kpi.customer_table if config.kpi.enabled else ""  # the KPI table: docs/kpi.md
    if args.export_solution is not None:
        return _export(args.export_solution, config.crm.prefix, kpi_customer)
    _setup_logging(config)
    from connector.crm.dataverse import DataverseCrmClient
    from connector.crm.setup import KEY_WAIT_SECONDS, CrmSetup

    try:
        client = DataverseCrmClient.from_config(config)
    except ConfigError as exc:
        _close_logging()
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        me = client.who_am_i()
        print(f"connected to {client.http.org_url} as user {me['UserId']}")
        wait = KEY_WAIT_SECONDS if args.wait is None else max(0.0, args.wait)
        report = CrmSetup(client.http, config.crm.prefix, kpi_customer).run(
            dry_run=args.dry_run, progress=lambda line: print(line, flush=True), wait_seconds=wait)
    except ConnectorError as exc:
        print(f"crm-setup failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        client.close()
        _close_logging()
    for item in report.present:
        print(f"present  {item}")
    for item in report.planned:
        print(f"missing  {item} (dry run: not created)")
    done = "would create" if args.dry_run else "created"
    count = len(report.planned) if args.dry_run else len(report.created)
    changed = f", changed {len(report.changed)}" if report.changed else ""
    changed += f", published {', '.join(report.published)}" if report.published else ""
    print(f"crm-setup: {done} {count}{changed}, already present {len(report.present)}")
    if args.dry_run:
        return EXIT_OK
    for failure in report.failed:
        print(f"FAILED   {failure.describe()}", file=sys.stderr)
    building = [name for name, status in report.keys.items() if status in ("Pending", "InProgress")]
    for name in building:
        print(f"waiting  key {name} is still {report.keys[name]}: Dataverse builds its index in the background."
              " Run `connector crm-setup` again later; the steps writing by it start once the key is Active",
              file=sys.stderr)
    return EXIT_FAILURE if report.failed or building else EXIT_OK


def _export(path: Path, prefix: str, kpi_customer: str) -> int:
    from connector.crm.setup import customizations
    from connector.crm.solution import SOLUTION_NAME, write_solution

    spec = customizations(prefix, kpi_customer)
    try:
        files = write_solution(spec, prefix, path)
    except OSError as exc:
        print(f"crm-setup: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {path}: unmanaged solution {SOLUTION_NAME} ({', '.join(files)}) with {len(spec.tables)} tables,"
          f" {len(spec.columns)} columns, {len(spec.keys)} keys, {len(spec.relationships)} N:N relationships,"
          f" {len(spec.forms)} forms, {len(spec.views)} views. Import it (Solutions > Import, or"
          " `pac solution import --path FILE.zip`), publish all customizations, then run `connector crm-setup"
          " --dry-run` to check nothing is missing")
    return EXIT_OK


def _setup_logging(config: object) -> None:
    try:
        from connector.logs import setup_logging
    except ImportError:  # pragma: no cover - logs module always ships
        return
    try:
        setup_logging(config)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - logging trouble must not stop an admin command
        pass


def _close_logging() -> None:
    try:
        from connector.logs import close_logging
    except ImportError:  # pragma: no cover
        return
    close_logging()
