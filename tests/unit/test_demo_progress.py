"""The demo's progress renderer: one updating line per phase on a terminal, few lines in a log."""

from __future__ import annotations

import io

from connector.progress import Progress, bar


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bar_draws_the_fraction_clamped() -> None:
    assert bar(0.5, width=10) == "[#####-----]  50%"
    assert bar(2.0, width=4) == "[####] 100%"
    assert bar(-1, width=4) == "[----]   0%"


def test_a_terminal_rewrites_one_line_per_phase() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, clock=clock, tty=True)
    progress.phase("tracking")
    for second in range(60):
        clock.now = float(second)
        progress.update("watermarks Open 12-01 10:00", fraction=second / 60)
    progress.done()
    progress.say("next")
    text = out.getvalue()
    assert text.count("\n") == 2  # the phase's line, ended once, and the plain line
    assert text.count("\r\033[K") == 60  # rewritten in place each second
    last = text.split("\r\033[K")[-1]
    assert last.startswith("  tracking   59s  [") and "watermarks Open 12-01 10:00\nnext\n" in last


def test_a_log_gets_a_line_only_on_news_and_at_most_every_interval() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, clock=clock, tty=False, interval=15)
    progress.phase("tracking")
    for second in range(60):  # the same state for a minute: one line, not sixty
        clock.now = float(second)
        progress.update("watermarks Open 12-01 10:00")
    assert out.getvalue().splitlines() == ["  tracking    0s  watermarks Open 12-01 10:00"]
    for second in range(60, 120):  # news every second: a line every 15 s at most
        clock.now = float(second)
        progress.update(f"handed over {second}")
    progress.done()
    lines = out.getvalue().splitlines()
    assert [line.split("s  ")[0].split()[-1] for line in lines] == ["0", "60", "75", "90", "105", "119"]
    assert lines[-1].endswith("handed over 119")  # the phase's last state, printed when it ends
    progress.done()
    assert len(out.getvalue().splitlines()) == len(lines)  # nothing twice


def test_a_log_does_not_repeat_a_state_already_printed_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, clock=clock, tty=False, interval=15)
    progress.phase("sends")
    progress.update("#1 Pending", fraction=0.0)
    clock.now = 3
    progress.update("#1 Sent", fraction=1.0)
    clock.now = 5
    progress.update("#1 Sent", fraction=1.0)
    progress.say("done")
    assert out.getvalue().splitlines() == ["  sends    0s  [------------------------]   0%  #1 Pending",
                                           "  sends    5s  [########################] 100%  #1 Sent", "done"]
