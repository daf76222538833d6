"""Command line: ``connector <command> ...``. Parses arguments; no business logic.

Each command lives in its own module under ``connector.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import connector
import connector.commands
from connector.private import restrict_umask

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector",
        description="Dynamics 365 <-> Marketing Cloud connector daemon.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {connector.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(connector.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"connector.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    restrict_umask()  # nothing this process writes is readable by others (connector.private)
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
