"""Named crash points for the crash-safety tests.

``crashpoint("after_send_started")`` kills the process with SIGKILL when the
environment variable ``CONNECTOR_CRASH_AT`` names that point (comma-separated
names allowed; ``name:N`` crashes at the N-th time the point is reached). In
production the variable is unset and a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "CONNECTOR_CRASH_AT"
_hits: dict[str, int] = {}
_lock = threading.Lock()


def crashpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        point, _, nth = item.strip().partition(":")
        if point != name:
            continue
        with _lock:
            _hits[name] = _hits.get(name, 0) + 1
            count = _hits[name]
        if count >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
