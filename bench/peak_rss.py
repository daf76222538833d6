#!/usr/bin/env python3
"""Run a Python module or script and write its peak RSS (VmHWM, in kB) to a file at exit.

    peak_rss.py OUT_FILE -m module args...   |   peak_rss.py OUT_FILE script.py args...

Why not ru_maxrss from wait4: a child started by fork/vfork + exec inherits the
parent's high-water mark on Linux, so a big parent (the sandbox) would be counted.
VmHWM belongs to the child's own address space.
"""

from __future__ import annotations

import atexit
import runpy
import sys


def _write_peak(path: str) -> None:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(path, "w") as out:
        out.write(peak)


def main() -> None:
    out, *rest = sys.argv[1:]
    atexit.register(_write_peak, out)
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
