"""The record cache the streams of one tracking run share ([tracking] workers > 1)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from connector.errors import TransientPeerError
from connector.models import CrmTable, RecordRef
from connector.steps.tracking.records import RecordCache

WAIT_S = 20.0  # generous: only a broken cache ever waits this long
Result = tuple[dict[str, RecordRef], set[str]]


def _refs(ids: Iterable[str]) -> dict[str, RecordRef]:
    return {i: RecordRef(CrmTable.CONTACT, i) for i in ids if i != "nobody"}


def _two_streams(keys_a: set[str], keys_b: set[str], *, a_fails: bool = False) -> dict[str, tuple[list, Result]]:
    """Stream a asks CRM about ``keys_a`` and is held there until b, asking about ``keys_b``,
    waits for one of a's keys; then a's call answers (or fails). {stream: (calls, result)}."""
    cache = RecordCache()
    waiting, asking, release = threading.Event(), threading.Event(), threading.Event()
    real_wait = cache._wait

    def wait(events: Iterable[threading.Event]) -> None:
        events = list(events)
        if events:
            waiting.set()
        real_wait(events)

    cache._wait = wait  # type: ignore[method-assign]
    asked: dict[str, list[list[str]]] = {"a": [], "b": []}
    out: dict[str, list[Result]] = {"a": [], "b": []}

    def find(stream: str, ids: list[str]) -> dict[str, RecordRef]:
        asked[stream].append(list(ids))
        if stream == "a":
            asking.set()
            assert release.wait(WAIT_S)
            if a_fails:
                raise TransientPeerError("CRM unavailable", peer="crm")
        return _refs(ids)

    def run(stream: str, keys: set[str]) -> threading.Thread:
        thread = threading.Thread(target=lambda: out[stream].append(cache.lookup_in_slices(
            keys, lambda ids: find(stream, ids), 100, lambda exc: None, lambda: None)), daemon=True)
        thread.start()
        return thread

    a = run("a", keys_a)
    assert asking.wait(WAIT_S)
    b = run("b", keys_b)
    assert waiting.wait(WAIT_S)  # b asked about its own keys (if any), then waits for a's
    release.set()
    a.join(WAIT_S)
    b.join(WAIT_S)
    return {stream: (asked[stream], out[stream][0]) for stream in ("a", "b")}


def test_a_key_another_stream_is_asking_about_is_waited_for_not_asked_again() -> None:
    seen = _two_streams({"k1", "k2"}, {"k2", "k3", "nobody"})
    asked_a, (refs_a, _) = seen["a"]
    asked_b, (refs_b, unresolved_b) = seen["b"]
    assert asked_a == [["k1", "k2"]] and asked_b == [["k3", "nobody"]]
    assert set(refs_b) == {"k2", "k3"} and unresolved_b == set()
    assert set(refs_a) == {"k1", "k2"}


def test_a_failed_call_of_another_stream_is_asked_again_by_the_waiting_one() -> None:
    seen = _two_streams({"k1"}, {"k1"}, a_fails=True)
    assert seen["a"][1] == ({}, {"k1"})  # a's call failed: k1 waits for a's next run
    assert seen["b"] == ([["k1"]], ({"k1": RecordRef(CrmTable.CONTACT, "k1")}, set()))


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
