"""Turns: one long send request does not hold up the others.

The send step gives every request a turn of at most ``[sends] time_slice_seconds``.
At its next safe point (a committed chunk while resolving, a chunk or batch while
handing over: where it also looks whether the service is stopping, always after the
commit) a request past its turn pauses with
``TurnUsed``, its checkpoint committed, and goes to the back of the step's queue;
the other requests (and any that became Pending meanwhile) get their turns, and it
resumes from its checkpoint in the same step run. ``send-now`` runs without turns.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator



class Interrupted(Exception):
    """The service is stopping (or the turn is over); the checkpoint is committed and the send resumes."""


class TurnUsed(Interrupted):
    """This request had its turn; it pauses at a checkpoint and the others go first."""


@dataclass
class Turn:
    deadline: float
    used: bool = False


_TURN: ContextVar[Turn | None] = ContextVar("send_turn", default=None)


@contextmanager
def turn(seconds: float) -> Iterator[Turn | None]:
    """A turn of ``seconds`` for the work done in this thread inside the block (0: no limit)."""
    current = Turn(time.monotonic() + seconds) if seconds > 0 else None
    token = _TURN.set(current)
    try:
        yield current
    finally:
        _TURN.reset(token)


def end_of_turn() -> None:
    """Called at a safe point: raise ``TurnUsed`` when this thread's turn is over."""
    current = _TURN.get()
    if current is not None and time.monotonic() >= current.deadline:
        current.used = True
        raise TurnUsed()
