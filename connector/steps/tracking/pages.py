"""Page iteration helpers: read one page ahead, and retrieve the next page in a helper thread."""

from __future__ import annotations

import contextvars
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def with_lookahead(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Yield (item, is_last), reading one item ahead."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for following in it:
        yield current, False
        current = following
    yield current, True


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a helper thread, at most ``depth`` items ahead.

    The ESP retrieves the next page while this thread writes the current one, so a pull
    takes about max(retrieve, write) instead of their sum. Errors surface here, in order.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), name="tracking-prefetch",
                              daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        # leaving normally: let the helper close the ESP iterator; on an error or a
        # second SIGTERM do not wait for an ESP call in flight (the thread is a daemon)
        thread.join(timeout=0.5 if sys.exc_info()[0] is not None else 60)
