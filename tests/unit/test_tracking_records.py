"""The record cache the streams of one tracking run share ([tracking] workers > 1)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from connector.errors import TransientPeerError
from connector.models import CrmTable, RecordRef
from connector.steps.tracking.records import RecordCache

WAIT_S = 20.0  # generous: only a broken cache ever waits this long
Result = tuple[dict[str, RecordRef], set[str]]


def _refs(ids: Iterable[str]) -> dict[str, RecordRef]:
    return {i: RecordRef(CrmTable.CONTACT, i) for i in ids if i != "nobody"}


def _held_find(asked: list[list[str]], asking: threading.Event, release: threading.Event,
               fail: bool = False) -> Callable[[list[str]], dict[str, RecordRef]]:
    """A find that says it is asking, then answers (or fails) once released."""
    def find(ids: list[str]) -> dict[str, RecordRef]:
        asked.append(list(ids))
        asking.set()
        assert release.wait(WAIT_S)
        if fail:
            raise TransientPeerError("CRM unavailable", peer="crm")
        return _refs(ids)
    return find


def _recording_find(asked: list[list[str]]) -> Callable[[list[str]], dict[str, RecordRef]]:
    def find(ids: list[str]) -> dict[str, RecordRef]:
        asked.append(list(ids))
        return _refs(ids)
    return find


def _signal_waiting(cache: RecordCache) -> threading.Event:
    """An event set when a lookup starts waiting for another stream's call."""
    waiting, real = threading.Event(), cache._wait

    def wait(events: Iterable[threading.Event]) -> None:
        events = list(events)
        if events:
            waiting.set()
        real(events)

    cache._wait = wait  # type: ignore[method-assign]
    return waiting


def _lookup(cache: RecordCache, keys: set[str], find: Callable[[list[str]], dict[str, RecordRef]],
            out: list[Result]) -> threading.Thread:
    def run() -> None:
        out.append(cache.lookup_in_slices(keys, find, 100, lambda exc: None, lambda: None))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_key_another_stream_is_asking_about_is_waited_for_not_asked_again() -> None:
    cache = RecordCache()
    waiting = _signal_waiting(cache)
    asked_a: list[list[str]] = []
    asked_b: list[list[str]] = []
    asking, release = threading.Event(), threading.Event()
    out_a: list[Result] = []
    out_b: list[Result] = []
    a = _lookup(cache, {"k1", "k2"}, _held_find(asked_a, asking, release), out_a)
    assert asking.wait(WAIT_S)
    b = _lookup(cache, {"k2", "k3", "nobody"}, _recording_find(asked_b), out_b)
    assert waiting.wait(WAIT_S)  # b asked about its own keys, then waits for k2
    release.set()
    a.join(WAIT_S)
    b.join(WAIT_S)
    assert asked_a == [["k1", "k2"]] and asked_b == [["k3", "nobody"]]
    refs_b, unresolved_b = out_b[0]
    assert set(refs_b) == {"k2", "k3"} and unresolved_b == set()
    assert set(out_a[0][0]) == {"k1", "k2"}


def test_a_failed_call_of_another_stream_is_asked_again_by_the_waiting_one() -> None:
    cache = RecordCache()
    waiting = _signal_waiting(cache)
    asked_a: list[list[str]] = []
    asked_b: list[list[str]] = []
    asking, release = threading.Event(), threading.Event()
    out_a: list[Result] = []
    out_b: list[Result] = []
    a = _lookup(cache, {"k1"}, _held_find(asked_a, asking, release, fail=True), out_a)
    assert asking.wait(WAIT_S)
    b = _lookup(cache, {"k1"}, _recording_find(asked_b), out_b)
    assert waiting.wait(WAIT_S)
    release.set()
    a.join(WAIT_S)
    b.join(WAIT_S)
    assert out_a == [({}, {"k1"})]  # a's call failed: k1 waits for a's next run
    assert asked_b == [["k1"]] and out_b == [({"k1": RecordRef(CrmTable.CONTACT, "k1")}, set())]


def test_a_lookup_stopped_by_its_failure_handler_frees_its_keys() -> None:
    cache = RecordCache()

    def stop(exc: TransientPeerError) -> None:
        raise exc

    def down(ids: list[str]) -> dict[str, RecordRef]:
        raise TransientPeerError("CRM unavailable", peer="crm")

    try:
        cache.lookup_in_slices({"k1", "k2", "k3"}, down, 1, stop, lambda: None)
    except TransientPeerError:
        pass
    assert cache._asking == {}  # nobody would wait for k2 and k3 forever
    assert cache.lookup({"k2"}, _refs) == {"k2": RecordRef(CrmTable.CONTACT, "k2")}
