"""Process-lifetime worker pools shared by the steps' ``[<step>] workers`` settings.

A step that works on several independent items at once (send requests, importing
sends, tracking streams) maps them over ``in_workers``: with one worker the items
run one after the other in the caller's thread (exactly as without a pool); with
more, in a pool per (step, size) that lives as long as the process, so each of its
threads keeps its own adapters (``connector.runtime.AdapterPool`` builds one per
thread) from run to run. Pools are per step: a slow send never queues an import poll.
Each item runs in a copy of the caller's context, so the log context (``step``,
``run``) follows it into the pool thread.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_POOLS: dict[tuple[str, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def pool(step: str, size: int) -> ThreadPoolExecutor:
    """The process-wide pool of ``step`` with ``size`` threads (made on first use)."""
    with _POOLS_LOCK:
        key = (step, size)
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"{step}-worker")
        return _POOLS[key]


def in_workers(step: str, workers: int, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``map(fn, items)`` over up to ``workers`` threads; results in the order of ``items``."""
    work = list(items)
    if min(workers, len(work)) <= 1:
        return map(fn, work)
    contexts = [contextvars.copy_context() for _ in work]
    # one pool of ``workers`` threads whatever the number of items (it starts a thread only
    # when none is idle): a pool per item count would grow threads, and adapters, run after run
    return pool(step, workers).map(lambda pair: pair[0].run(fn, pair[1]), zip(contexts, work))
