"""Fault knobs shared by the sandboxes.

A test or the demo turns a fault on with ``knobs.set(kind, rate=..., next_n=...,
seconds=...)``; the server asks ``knobs.take(kind)`` at the point where the fault
would happen. ``next_n`` forces the fault for the next N requests, ``rate`` makes
it happen at random with that probability, ``seconds`` is the parameter of the
fault (the delay of "slow", the Retry-After of "throttle"); given alone it turns
the fault on for every request.

Generic kinds (applied by :class:`~connector.sandbox.httpserver.SandboxHttpServer`):
``drop`` (close the connection without an answer), ``drop_after`` (handle the
request, then close without the answer), ``http500``, ``http502``, ``http503``,
``http504``, ``slow``; ``throttle`` is applied by each protocol app in its own
dialect. Apps may use any other kind name (e.g. ``has_errors``).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass


@dataclass
class Knob:
    rate: float = 0.0
    next_n: int = 0
    seconds: float = 0.0
    taken: int = 0
    always: bool = False


class FaultKnobs:
    """Thread-safe fault switches keyed by kind."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._knobs: dict[str, Knob] = {}
        self._random = random.Random(seed)

    def set(self, kind: str, rate: float = 0.0, next_n: int = 0, seconds: float = 0.0) -> None:
        """Turn fault ``kind`` on (all zero turns it off)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {rate}")
        with self._lock:
            if rate == 0.0 and next_n == 0 and seconds == 0.0:
                self._knobs.pop(kind, None)
            else:
                # only ``seconds`` given (e.g. ``set("slow", seconds=2)``): on for every request
                always = rate == 0.0 and next_n == 0
                self._knobs[kind] = Knob(rate=rate, next_n=next_n, seconds=seconds, always=always)

    def clear(self, kind: str | None = None) -> None:
        """Turn off one fault kind, or all of them."""
        with self._lock:
            if kind is None:
                self._knobs.clear()
            else:
                self._knobs.pop(kind, None)

    def take(self, kind: str) -> bool:
        """Whether fault ``kind`` happens now (consumes one of ``next_n``)."""
        with self._lock:
            knob = self._knobs.get(kind)
            if knob is None:
                return False
            if knob.next_n > 0:
                knob.next_n -= 1
                knob.taken += 1
                return True
            if knob.always or (knob.rate > 0.0 and self._random.random() < knob.rate):
                knob.taken += 1
                return True
            return False

    def seconds(self, kind: str, default: float = 0.0) -> float:
        """The ``seconds`` parameter of fault ``kind`` (delay, Retry-After)."""
        with self._lock:
            knob = self._knobs.get(kind)
            return knob.seconds if knob and knob.seconds else default

    def taken(self, kind: str) -> int:
        """How many times fault ``kind`` fired since it was set."""
        with self._lock:
            knob = self._knobs.get(kind)
            return knob.taken if knob else 0

    def active(self) -> dict[str, dict[str, float]]:
        """A snapshot of the faults that are on (for the sandbox's status output)."""
        with self._lock:
            return {k: {"rate": v.rate, "next_n": v.next_n, "seconds": v.seconds} for k, v in self._knobs.items()}
