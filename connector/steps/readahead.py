"""Read-ahead: consume a generator in a helper thread, a few chunks ahead of the caller.

Paging CRM (network wait) then overlaps with screening and writing the previous
chunk. Memory stays bounded: at most ``depth`` chunks wait in the queue. The
generator is created by the caller (with the caller's adapter) and iterated only
by the helper thread, so one client is never used by two threads at once. The
helper runs in a copy of the caller's context, so its log lines keep the bound ids.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class ReadAhead(Iterator[list[T]]):
    """Chunks of ``items`` (or ``transform(chunk)`` of each), produced by a helper thread."""

    def __init__(self, items: Iterable[T], chunk: int, depth: int = 2,
                 transform: Callable[[list[T]], Any] | None = None, name: str = "send-readahead") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._transform = transform
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._produce, iter(items), chunk),
                                        daemon=True, name=name)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterator[T], chunk: int) -> None:
        try:
            while not self._closed.is_set():
                part = list(islice(items, chunk))
                if not part:
                    break
                if not self._put(self._transform(part) if self._transform else part):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def __next__(self) -> list[T]:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item  # type: ignore[return-value]

    def close(self, wait: float = 30) -> None:
        """Stop the helper thread (also when the caller gives up half-way), waiting up to ``wait`` seconds."""
        self._closed.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=wait)

    def __enter__(self) -> "ReadAhead[T]":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # leaving on an error (or a second SIGTERM): do not wait for a peer call in flight
        # (the thread is a daemon); leaving normally: let the helper close the generator
        self.close(wait=0.5 if exc_type is not None else 30)
