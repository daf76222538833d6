"""send-now's progress output: redrawn line on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from connector.commands.send_now import ProgressBar
from connector.state.store import SendJob


def test_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, tty=True)
    job = SendJob("R1", status="handing_over", resolved=100, handed_over=50, skipped=0)
    bar(job, "handing_over")
    bar.done("sent")
    text = out.getvalue()
    assert text.startswith("\r[###############...............]  50%")
    assert text.endswith("\nsent\n")


def test_pipe_gets_a_line_per_phase() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, tty=False)
    job = SendJob("R1", resolved=10)
    bar(job, "resolving")
    job.resolved = 20
    bar(job, "resolving")  # same phase within 2 s: not repeated
    job.status, job.handed_over = "handing_over", 5
    bar(job, "handing_over")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("resolving") and "25%" in lines[1]


def test_the_share_counts_against_recipients_left_after_resolving() -> None:
    bar = ProgressBar(io.StringIO(), tty=False)
    # 100 resolved, 20 skipped while resolving (duplicates): 80 to hand over; the 10
    # refused while handing over still count in what was to be handed over
    job = SendJob("R1", resolved=100, handed_over=40, skipped=30,
                  skipped_by_reason={"duplicate": 20, "esp_rejected": 6, "import_row_error": 4})
    assert "50%" in bar.render(job, "handing_over")
