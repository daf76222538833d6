"""``connector send-now REQUEST_ID -c FILE``: run one send request in the foreground.

For an admin who wants to watch a send: claims the request if it is Pending (or
resumes it if the service had started it), resolves, hands over, waits for the
file imports and releases the send, with a progress bar on stderr (a
``\\r``-updated line on a terminal, plain lines otherwise). The state database and
the leases are the service's, so running this next to the service is safe: only
one of them works on a request at a time. Ctrl-C checkpoints and stops; the
service (or another send-now) resumes the request later.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from connector.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from connector.errors import ConnectorError, OperatorError


ROLE = "send-now"
"""The label suffix of a send-now process in the instance registry (``connector status`` lists it)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "send-now",
        help="run one CRM send request in the foreground, with a progress bar",
        description="Claim (or resume) one send request and carry it to the ESP send now, "
        "waiting for file imports. Exit 0 when sent, 1 when it failed or could not be worked on.",
    )
    parser.add_argument("request_id", help="id (GUID) of the CRM send request")
    parser.add_argument("-c", "--config", required=True, type=Path, help="path of service.ini")
    parser.add_argument("--poll-seconds", type=float, default=None,
                        help="how often to poll running imports (default: [imports] poll_seconds, at most 5)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print the log lines on stderr")
    parser.set_defaults(func=send_now_command)


class ProgressBar:
    """Progress of one send on a stream: a redrawn line on a terminal, else a line per change."""

    WIDTH = 30

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._last = ""
        self._last_at = 0.0

    def __call__(self, job: Any, phase: str) -> None:
        self.show(self.render(job, phase))

    def render(self, job: Any, phase: str, batches: tuple[int, int] | None = None) -> str:
        from connector.state.lifecycle import JobStatus
        from connector.steps.send.ledger import skipped_before_handover

        to_hand = max(job.resolved - skipped_before_handover(job), 0)
        text = f"{phase:<12} resolved {job.resolved:>9,}  handed over {job.handed_over:>9,}  skipped {job.skipped:>7,}"
        if batches:
            text += f"  imports {batches[0]}/{batches[1]}"
        if phase in (JobStatus.HANDING_OVER, JobStatus.IMPORTING, JobStatus.STARTING, JobStatus.SENT) and to_hand:
            share = min(job.handed_over / to_hand, 1.0)
            filled = int(share * self.WIDTH)
            text = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%}  " + text
        return text

    def show(self, text: str) -> None:
        now = time.monotonic()
        if text == self._last:
            return
        if self.tty:
            if now - self._last_at > 0.1 or not self._last:
                self.stream.write("\r" + text.ljust(len(self._last)))
                self.stream.flush()
                self._last, self._last_at = text, now
            return
        phase_changed = _phase(text) != _phase(self._last)
        if phase_changed or now - self._last_at >= 2.0:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last, self._last_at = text, now

    def done(self, message: str) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
        self.stream.write(message + "\n")
        self.stream.flush()


def _phase(text: str) -> str:
    words = text.split("] ", 1)[-1].split()
    return next((w for w in words if not w.endswith("%")), "")


def send_now_command(args: argparse.Namespace) -> int:
    from connector.commands.foreground import load_quiet, run_in_foreground
    from connector.logs import setup_logging

    config = load_quiet(args.config, verbose=args.verbose)
    if config is None:
        return EXIT_CONFIG
    setup_logging(config)
    poll = args.poll_seconds if args.poll_seconds is not None else min(config.imports.poll_seconds, 5.0)
    return run_in_foreground("send-now", lambda stopping: run_one(config, args.request_id, stopping,
                                                                  ProgressBar(sys.stderr), poll))


def run_one(config: Any, request_id: str, stopping: threading.Event, bar: ProgressBar, poll: float) -> int:
    from connector.models import SendStatus
    from connector.runtime import AdapterPool
    from connector.commands.foreground import register_foreground

    store = register_foreground(config, ROLE)
    adapters = AdapterPool(config)
    try:
        ctx = adapters.step_context(store, stopping=stopping)
        request = ctx.crm().get_send_request(request_id)
        if request is None:
            bar.done(f"send request {request_id} does not exist in CRM")
            return EXIT_FAILURE
        job = store.get_send_job(request_id)
        if request.status is not SendStatus.PENDING and (job is None or not job.in_flight):
            state = f"; connector: {job.status} {job.esp_job_id or job.error}" if job else ""
            bar.done(f"send request {request_id} is {request.status.value} in CRM, not Pending{state}")
            return EXIT_OK if request.status is SendStatus.SENT else EXIT_FAILURE
        pending = request if request.status is SendStatus.PENDING else None
        try:
            return _follow(ctx, store, request_id, pending, stopping, bar, poll)
        except OperatorError as exc:  # held, noted on the request: the operator fixes it, then it goes on
            bar.done(f"held (not failed) until the operator fixes: {exc}")
            return EXIT_FAILURE
    finally:
        adapters.close_all()
        try:
            store.unregister_instance()
        except ConnectorError as exc:  # the outcome is told already; a stale row is pruned later
            print(f"connector send-now: {exc}", file=sys.stderr)
        store.close()


def _follow(ctx: Any, store: Any, request_id: str, pending: Any, stopping: threading.Event, bar: ProgressBar,
            poll: float) -> int:
    """Carry the request to its end (or to a stop) in the foreground: the same ``SendAttempt`` the
    steps drive, through every phase, polling the imports every ``poll`` seconds."""
    from connector.state.lifecycle import JobStatus
    from connector.steps.send.attempt import EVERY_PHASE, carry

    job = carry(ctx, request_id, EVERY_PHASE, pending=pending, progress=bar)
    while not stopping.is_set():
        job = store.get_send_job(request_id)
        if job is None or not job.in_flight or stopping.wait(poll):
            break
        if job.status is JobStatus.IMPORTING:
            progress = store.batch_progress([request_id]).get(request_id, {})
            bar.show(bar.render(job, JobStatus.IMPORTING, (progress.get("imported", 0), progress.get("total", 0))))
        store.heartbeat()
        carry(ctx, request_id, EVERY_PHASE, progress=bar)
    if stopping.is_set():
        bar.done(f"stopped; the send is checkpointed at {job.status if job else 'claim'} and resumes on the next run")
        return EXIT_INTERRUPTED
    if job is None:
        bar.done(f"send request {request_id} is being worked on elsewhere (lease held)")
        return EXIT_FAILURE
    bar(job, job.status)
    if job.status is JobStatus.SENT:
        bar.done(f"sent: ESP job {job.esp_job_id}; {job.handed_over:,} handed over, {job.skipped:,} skipped "
                 f"{dict(job.skipped_by_reason) or ''}".rstrip())
        return EXIT_OK
    bar.done(f"failed: {job.error}")
    return EXIT_FAILURE
