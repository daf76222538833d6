"""The CRM record cache of one tracking run, shared by its streams (``[tracking] workers``)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Mapping

from connector.errors import TransientPeerError
from connector.models import RecordRef
from connector.steps.tracking import rules

Find = Callable[[list[str]], Mapping[str, RecordRef]]
"""``CrmClient.find_records``: subscriber keys -> the CRM records found (the others are not in CRM)."""


class RecordCache:
    """Subscriber key -> CRM record (or None: not in CRM), for one run, bounded, thread-safe.

    The same recipients come back in the sent, open and click pulls of a send, so one
    run asks CRM about each at most once while the cache holds them, whether its streams
    run one after the other or at once: a key another stream is asking CRM about right
    now is waited for, not asked again (and asked after all if that call failed). A
    stream asks about its own keys before it waits for another's, so two streams never
    wait for each other. Oldest entries go first when it is full (about 150 bytes an entry).
    """

    def __init__(self, limit: int = rules.RECORD_CACHE_SIZE) -> None:
        self.limit = limit
        self._refs: dict[str, RecordRef | None] = {}
        self._asking: dict[str, threading.Event] = {}  # keys a stream is asking CRM about now
        self._lock = threading.Lock()

    def lookup(self, keys: set[str], find: Find) -> dict[str, RecordRef]:
        """The records of ``keys`` that are in CRM, asking about the unknown ones in one call."""
        def failed(exc: TransientPeerError) -> None:
            raise exc

        return self.lookup_in_slices(keys, find, max(len(keys), 1), failed, lambda: None)[0]

    def lookup_in_slices(self, keys: set[str], find: Find, size: int, failed: Callable[[TransientPeerError], None],
                         succeeded: Callable[[], None]) -> tuple[dict[str, RecordRef], set[str]]:
        """Like ``lookup``, one ``find`` per ``size`` keys: (records found, keys not looked up).

        A slice whose call fails (after the client's retries) is reported to ``failed``
        (which may raise to stop) and its keys come back unresolved; the other slices'
        answers are kept (each reported to ``succeeded``).
        """
        answers: dict[str, RecordRef | None] = {}
        unresolved: set[str] = set()
        pending = set(keys)
        while pending:
            mine, others = self._claim(pending, answers, size)
            try:
                for start in range(0, len(mine), size):
                    part = mine[start:start + size]
                    try:
                        found = find(part)
                    except TransientPeerError as exc:
                        unresolved.update(part)
                        self._settle(part, None, answers)
                        failed(exc)
                        continue
                    succeeded()
                    self._settle(part, found, answers)
            finally:
                self._settle([k for k in mine if k not in answers and k not in unresolved], None, answers)
            self._wait(others.values())
            pending = set(others)  # answered by now, or to ask about here if that call failed
        return {key: ref for key, ref in answers.items() if ref is not None}, unresolved

    def _claim(self, keys: Iterable[str], answers: dict[str, RecordRef | None], size: int
               ) -> tuple[list[str], dict[str, threading.Event]]:
        """Answer ``keys`` from the cache; of the others: (keys to ask about here, keys being asked).

        The keys asked about here share one event per ``size`` of them (one CRM call's
        slice, settled together): an event per key cost more than the call once the
        cache is full and most keys are misses (issue 17).
        """
        mine: list[str] = []
        others: dict[str, threading.Event] = {}
        event = threading.Event()
        with self._lock:
            for key in sorted(keys):
                if key in self._refs:
                    answers[key] = self._refs[key]
                elif key in self._asking:
                    others[key] = self._asking[key]
                else:
                    if len(mine) % size == 0 and mine:
                        event = threading.Event()
                    self._asking[key] = event
                    mine.append(key)
        return mine, others

    def _settle(self, keys: list[str], found: Mapping[str, RecordRef] | None,
                answers: dict[str, RecordRef | None]) -> None:
        """Keep what CRM answered about ``keys`` (``found``; None: the call failed), wake who waits."""
        with self._lock:
            woken: set[int] = set()
            for key in keys:
                if found is not None:
                    answers[key] = self._refs[key] = found.get(key)
                event = self._asking.pop(key, None)
                if event is not None and id(event) not in woken:
                    woken.add(id(event))
                    event.set()
            overflow = len(self._refs) - self.limit  # the answers are taken: evicting the oldest is safe
            if overflow > 0:
                for key in list(itertools.islice(self._refs, overflow)):
                    del self._refs[key]

    def _wait(self, events: Iterable[threading.Event]) -> None:
        """Until the other streams' calls about these keys are over (they end: each CRM call has a timeout)."""
        for event in {id(e): e for e in events}.values():
            event.wait()
