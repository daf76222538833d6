#!/usr/bin/env python3
"""Memory and speed of a send's de-duplication set at 10 million recipients.

Feeds N addresses (1% of them repeated) through the send's work
database (``SendWorkspace``) chunk by chunk, as the send step does, committing
after each chunk, and reports the time, the peak RSS of this process and the size
of the work file.

    bench/send_dedupe.py -n 10000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_mb() -> int:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=2_500)
    args = parser.parse_args()

    from connector.suppression import ResolveCheckpoint, SendWorkspace

    ns = uuid.UUID("6f0c4c4e-8d0b-4a43-9a7e-3f1f4c1d2b00")
    with tempfile.TemporaryDirectory(prefix="bench-dedupe-") as tmp:
        path = Path(tmp) / "work.db"
        started = time.monotonic()
        duplicates = 0
        point = ResolveCheckpoint()
        with SendWorkspace(path) as workspace:
            for start in range(0, args.n, args.chunk):
                keys = []
                for i in range(start, min(start + args.chunk, args.n)):
                    j = i - 1 if i % 100 == 99 else i  # every 100th recipient repeats the one before
                    keys.append(f"person{j}.{ns.hex[:6]}@example.com")
                before = workspace.seen_before(keys)
                unique = set(keys)
                duplicates += len(keys) - len(unique) + len(before)
                workspace.record(unique - before)
                point.resolved = start + args.chunk
                workspace.commit(point)
                if start and start % 1_000_000 == 0:
                    print(f"{start:>11,} seen  {time.monotonic() - started:6.1f} s  peak RSS {peak_rss_mb()} MB",
                          flush=True)
        seconds = time.monotonic() - started
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) // 2**20
    print(f"N={args.n:,}: {seconds:.1f} s ({args.n / seconds:,.0f} recipients/s), duplicates found {duplicates:,}, "
          f"peak RSS {peak_rss_mb()} MB, work file {size_mb} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
