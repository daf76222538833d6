"""Read-ahead of recipient pages: order kept, errors handed over, stops when abandoned."""

from __future__ import annotations

import threading

import pytest

from connector.steps.readahead import ReadAhead


def test_chunks_in_order() -> None:
    with ReadAhead(range(10), 4) as chunks:
        assert list(chunks) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_error_reaches_the_consumer() -> None:
    def items():
        yield 1
        yield 2
        raise ValueError("page 2 failed")

    with ReadAhead(items(), 1) as chunks:
        assert next(chunks) == [1]
        with pytest.raises(ValueError):
            list(chunks)


def test_abandoning_stops_the_producer() -> None:
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed.set()

    with ReadAhead(endless(), 5, depth=1) as chunks:
        assert next(chunks) == [1, 2, 3, 4, 5]
    assert closed.wait(5)


def test_the_helper_runs_in_the_callers_context() -> None:
    import contextvars

    bound = contextvars.ContextVar("bound", default="unset")
    bound.set("send-42")

    def items():
        yield bound.get()

    with ReadAhead(items(), 1) as chunks:
        assert list(chunks) == [["send-42"]]
