"""Progress of a long phase as one line: rewritten in place on a terminal, throttled elsewhere.

``connector demo`` waits minutes for the sandbox's realistic delays. On a terminal each
phase shows one line (with a bar when the phase knows how far it is) that is rewritten
in place; in a CI log (not a TTY) a line is printed only when what it says changed, and
at most once every ``interval`` seconds, plus the phase's last state when it ends, so a
minute of waiting is a handful of lines, not sixty.
"""

from __future__ import annotations

import time
from typing import Callable, TextIO

BAR_WIDTH = 24
"""Characters of the bar between the brackets."""
LOG_INTERVAL_SECONDS = 15.0
"""Least time between two progress lines when the output is not a terminal."""


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[#########---------------]  37%`` for ``fraction`` 0.37 (clamped to 0..1)."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%"


class Progress:
    """Plain lines (``say``) and one updating line per phase (``phase``, ``update``, ``done``)."""

    def __init__(self, out: TextIO, *, interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.interval = interval
        self.clock = clock
        self.name = ""
        self.phase_started = clock()
        self.shown = ""  # what the updating line says now (a terminal) or last said (a log)
        self.pending = ""  # a log: the newest line, not printed yet
        self.pending_body = ""
        self.printed_at: float | None = None

    def say(self, text: str) -> None:
        """A line of its own (ends any updating line first)."""
        self.done()
        print(text, file=self.out, flush=True)

    def phase(self, name: str) -> None:
        """Start the updating line of a new phase (``name`` leads every line of it)."""
        self.done()
        self.name = name
        self.phase_started = self.clock()
        self.printed_at = None

    def update(self, text: str, fraction: float | None = None) -> None:
        """The phase's state now; ``fraction`` (0..1) draws a bar."""
        body = (bar(fraction) + "  " if fraction is not None else "") + text
        now = self.clock()
        line = f"  {self.name}{' ' if self.name else ''}{now - self.phase_started:4.0f}s  {body}"
        if self.tty:
            if line != self.shown:
                self.out.write("\r\033[K" + line)
                self.out.flush()
                self.shown = line
            return
        if body == self.shown:  # nothing new: the seconds alone are no news
            self.pending = ""
            return
        if self.printed_at is None or now - self.printed_at >= self.interval:
            self._print(line, body, now)
        else:
            self.pending, self.pending_body = line, body

    def done(self) -> None:
        """End the phase's line: a terminal keeps it; a log gets its last state if not printed."""
        if self.tty and self.shown:
            self.out.write("\n")
            self.out.flush()
        elif not self.tty and self.pending:
            self._print(self.pending, self.pending_body, self.clock())
        self.shown = self.pending = ""
        self.name = ""

    def _print(self, line: str, body: str, now: float) -> None:
        print(line, file=self.out, flush=True)
        self.shown, self.pending, self.printed_at = body, "", now
