"""``connector check-config -c FILE``: report every configuration problem at once, or a summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from connector.config import Config, load_config
from connector.errors import ConfigError

EXIT_OK = 0
EXIT_CONFIG = 3  # connector.cli.EXIT_CONFIG


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="check service.ini: every problem with its line, or a short summary",
        description="Read service.ini, the secrets file and the CONNECTOR_* environment as `connector run` "
        "would; print every problem as FILE:LINE [section] key: message (hint: ...) and exit 3, "
        "or print a short summary and exit 0.",
    )
    parser.add_argument("-c", "--config", type=Path, default=Path(os.environ.get("CONNECTOR_CONFIG", "service.ini")),
                        help="path of service.ini (default: $CONNECTOR_CONFIG or ./service.ini)")
    parser.add_argument("--json", action="store_true",
                        help="print {\"ok\": ..., \"problems\": [...]} as JSON (for tools); same exit codes")
    parser.add_argument("--online", action="store_true",
                        help="also ask the peers: CRM columns and roles exist, ESP attributes and e-mail exist, "
                        "the SFTP folder is writable (exit 3 on any problem)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    online = getattr(args, "online", False)
    if getattr(args, "json", False):
        return _run_json(args.config, online)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc))
        count = problem_count(exc)
        print(f"{count} problem{'s' if count != 1 else ''} in {args.config}; the connector will not start.",
              file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.config}: OK")
    for label, text in summary(config):
        print(f"  {label:<11}{text}")
    return _report_online(config) if online else EXIT_OK


def _report_online(config: Config) -> int:
    from connector.commands.check_online import online_checks

    checks = online_checks(config)
    print("online checks:")
    for check in checks:
        print(f"  {check.peer:<5}{check.what}: " + ("OK" + (f" ({check.detail})" if check.detail else "")
                                                 if check.ok else f"{len(check.problems)} problem(s)"))
        for problem in check.problems:
            print(f"    {problem}")
    count = sum(len(c.problems) for c in checks)
    if count:
        print(f"{count} problem{'s' if count != 1 else ''} found at the peers; sends would be held until they "
              "are fixed.", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _run_json(path: Path, online: bool = False) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(json.dumps({"ok": False, "file": str(path),
                          "problems": [dataclasses.asdict(p) for p in exc.problems],
                          "more": problem_count(exc) - len(exc.problems)}, ensure_ascii=False))
        return EXIT_CONFIG
    out: dict = {"ok": True, "file": str(path), "problems": [], "summary": dict(summary(config))}
    if online:
        from connector.commands.check_online import online_checks

        checks = online_checks(config)
        out["online"] = [dataclasses.asdict(c) for c in checks]
        out["ok"] = all(c.ok for c in checks)
    print(json.dumps(out, ensure_ascii=False))
    return EXIT_OK if out["ok"] else EXIT_CONFIG


def problem_count(exc: ConfigError) -> int:
    """All problems found, also those past the listed ones (``config.MAX_PROBLEMS``)."""
    return int(getattr(exc, "total", 0) or len(exc.problems))


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a summary line, never a crash
        return "(unparsable URL)"


def _minutes(value: float) -> str:
    return f"{value:g} min"


def _kpi_line(config: Config) -> str:
    kpi = config.kpi
    if not kpi.enabled:
        return "not configured"
    when = f"every {_minutes(kpi.poll_minutes)}" if kpi.scheduled else "by hand only (connector kpi)"
    return (f"{kpi.source_name} from {_safe_url(kpi.source_url)}, {when}, matched on "
            f"{kpi.customer_table}.{kpi.match_column}, removed KPIs: {kpi.removed}")


def _suppression_line(config: Config) -> str:
    cfg = config.suppression
    if not cfg.enabled:
        return "not configured"
    source = str(cfg.file) if cfg.file is not None else _safe_url(cfg.source_url)
    when = f"every {_minutes(cfg.refresh_minutes)}" if cfg.scheduled else "by hand (connector suppression) and before a first send"
    return f"{source}, refreshed {when}"


def summary(config: Config) -> list[tuple[str, str]]:
    """(label, text) lines describing what this configuration will do; no secret in them."""
    crm, esp, sftp = config.crm, config.esp, config.sftp
    lines = [
        ("CRM", f"{crm.url} ({crm.auth}, API {crm.api_version})" if crm.url else "not configured"),
        ("ESP", f"{esp.name}: {esp.endpoint or esp.auth_url or esp.wsdl} ({esp.auth})"
         if (esp.endpoint or esp.auth_url or esp.wsdl) else "not configured"),
        ("SFTP", f"{sftp.username}@{sftp.host}:{sftp.port} {sftp.import_folder} "
         f"({'key' if sftp.private_key_file else 'password'})" if sftp.host else "not configured"),
        ("state DB", _safe_url(config.state_url())),
        ("staging DB", f"{_safe_url(config.staging_url())} table {config.staging.table}"),
        ("polls", f"sends every {_minutes(config.sends.poll_minutes)} ({config.sends.workers} workers), "
         f"imports every {config.imports.poll_seconds:g} s ({config.imports.workers}), "
         f"tracking every {_minutes(config.tracking.poll_minutes)} ({config.tracking.workers})"),
        ("batching", f"files of {config.batching.batch_size} rows over {config.batching.threshold} recipients"
         if config.batching.enabled else "off (every send by SOAP)"),
        ("tracking", f"mode {config.tracking.mode}, responses {'closed' if config.tracking.responses_closed else 'open'}"
         + (f", default campaign {config.tracking.default_campaign}" if config.tracking.default_campaign else "")),
        ("KPIs", _kpi_line(config)),
        ("suppression", _suppression_line(config)),
        ("roles", ", ".join(config.sends.allowed_roles)),
        ("mappings", "; ".join(f"{table}: {len(fields)} attribute{'s' if len(fields) != 1 else ''}"
                               for table, fields in sorted(config.mappings.items())) or "none"),
        ("transforms", ", ".join(f"{name} ({len(values)} value{'s' if len(values) != 1 else ''})" for name, values in sorted(config.transforms.items()))
         or "none"),
        ("secrets", ", ".join(f"{key} from {source}" for key, source in sorted(config.secret_sources.items()))
         or "none given"),
        ("logs", f"{config.logging.folder} (level {config.logging.level}, {config.logging.keep_days} days kept)"),
        ("data", str(config.service.data_dir)),
    ]
    return lines
