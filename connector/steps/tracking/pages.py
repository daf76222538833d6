"""Page iteration helper: read one page ahead (the helper-thread read-ahead is connector.steps.readahead)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

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
