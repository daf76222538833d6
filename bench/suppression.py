#!/usr/bin/env python3
"""Benchmark of the statutory suppression list: a refresh of N lines, and a send's lookups.

    bench/suppression.py --lines 1000000 [--domains 0.01] [--changed 0.01]

Each phase is a fresh process over one SQLite state database, so its peak RSS (VmHWM)
is its own:

1. ``first``: the first refresh of a file of N lines (addresses, ``--domains`` of them
   domains, every 10,000th line malformed);
2. ``unchanged``: a refresh of the same file (size and time unchanged: not read);
3. ``changed``: a refresh after ``--changed`` of the lines were replaced (added + removed);
4. ``lookup``: what a send does per chunk, 40 chunks of 2,500 addresses (one in ten listed);
5. ``legacy``: the per-send ``[sends] suppression_file`` copy into a work database
   (``SendWorkspace.load_suppression``), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def peak_kb() -> int:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))


def write_list(path: Path, lines: int, domains: float, changed: float) -> None:
    every = max(1, int(1 / domains)) if domains else 0
    swap = int(lines * changed)
    with open(path, "w", encoding="utf-8") as out:
        out.write("# benchmark list\n")
        for i in range(lines):
            n = i + lines if i < swap else i  # the first `swap` lines replaced by new entries
            if i % 10_000 == 9_999:
                out.write(f"malformed line {n}\n")
            elif every and i % every == 0:
                out.write(f"@domain{n}.example\n")
            else:
                out.write(f"person{n}@example.test\n")


def step(phase: str, folder: Path) -> dict:
    from connector.config.models import Config, ServiceSettings, StateSettings, SuppressionSettings
    from connector.state.store import StateStore
    from connector.steps import StepContext
    from connector.steps.suppression import run_suppression_refresh
    from connector.suppression_list import lookup_digests

    import structlog
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    store = StateStore(f"sqlite:///{folder / 'state.db'}", holder="bench")
    store.migrate()
    config = Config(service=ServiceSettings(data_dir=folder), state=StateSettings(lease_seconds=600),
                    suppression=SuppressionSettings(file=folder / "list.txt"))
    ctx = StepContext(config=config, state=store, crm=None, esp=None, file_drop=None, staging=None,  # type: ignore[arg-type]
                      run_id="bench", holder="bench")
    started = time.monotonic()
    result: dict = {"phase": phase}
    if phase in ("first", "unchanged", "changed"):
        outcome = run_suppression_refresh(ctx)
        result.update({k: outcome.details[k] for k in ("read", "added", "removed", "malformed", "unchanged_source")})
    elif phase == "lookup":
        hits = 0
        for chunk in range(40):
            base = chunk * 25_000
            emails = [f"person{(base + i * 10 + 1) % (10 * 2500 * 40)}@example.test" if i % 10 == 0
                      else f"nobody{base + i}@example.test" for i in range(2500)]
            digests = [d for e in emails for d, _ in lookup_digests(e)]
            hits += len(store.suppression_matches(digests))
        result["hits"] = hits
    elif phase == "legacy":
        from connector.suppression import SendWorkspace, read_suppression_file

        with SendWorkspace(folder / "work.db") as ws:
            lines = (line for line in read_suppression_file(folder / "list.txt") if "@" in line[1:])
            result["loaded"] = ws.load_suppression(lines)
    result["seconds"] = round(time.monotonic() - started, 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)  # the whole process, start-up included
    result["peak_rss_mb"] = round(peak_kb() / 1024, 1)
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--domains", type=float, default=0.01)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.folder)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-suppression-") as tmp:
        folder = Path(tmp)
        write_list(folder / "list.txt", args.lines, args.domains, 0.0)
        print(f"list: {args.lines} lines, {(folder / 'list.txt').stat().st_size / 1e6:.1f} MB", flush=True)
        for phase in ("first", "unchanged", "changed", "lookup", "legacy"):
            if phase == "changed":
                write_list(folder / "list.txt", args.lines, args.domains, args.changed)
                os.utime(folder / "list.txt")
            out = subprocess.run([sys.executable, __file__, "--step", phase, "--folder", str(folder)],
                                 check=True, capture_output=True, text=True).stdout
            print(out.strip().splitlines()[-1], flush=True)
        print(f"state.db: {(folder / 'state.db').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
