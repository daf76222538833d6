"""The AIMD pace of one organization and user (no sockets): start small, grow while healthy,
halve on 429, wait for the latest Retry-After, probe alone, honour the dop hint. The threaded
cases run ODataHttp over a scripted session, with the clock and the sleeps in the test's hands."""

from __future__ import annotations

import json
import threading

import requests
from requests.structures import CaseInsensitiveDict

from connector.crm.odata import Call, ODataHttp
from connector.crm.pacing import (BATCH_STEP, CODE_EXECUTION, START_BATCH, START_PARALLELISM, Pace,
                                  pace_for)

GENEROUS = 10.0
"""Seconds a test waits for another thread to reach a point (never a timed assertion)."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_starts_small_and_grows_additively_up_to_the_dop_hint() -> None:
    pace = Pace(max_batch=500, clock=Clock())
    assert pace.limit() == START_PARALLELISM and pace.batch_size == START_BATCH
    pace.hint("4")
    for _ in range(50):
        pace.healthy()
    assert pace.limit() == 4  # the hint caps it
    pace.hint("6")
    for _ in range(3):
        pace.healthy()
    assert pace.limit() == 4  # one more per round of replies, not per reply
    for _ in range(10):
        pace.healthy()
    assert pace.limit() == 6


def test_batches_grow_only_at_the_parallelism_ceiling_and_while_they_are_quick() -> None:
    pace = Pace(max_batch=500, clock=Clock())
    pace.hint("2")
    pace.batch_healthy(0.5)
    assert pace.batch_size == START_BATCH + BATCH_STEP  # at the ceiling of 2 already
    pace.batch_healthy(3.0)
    assert pace.batch_size == START_BATCH + BATCH_STEP  # slow: no growth
    pace.batch_healthy(10.0)
    assert pace.batch_size == START_BATCH  # too slow: smaller


def test_429_halves_parallelism_pauses_everyone_and_probes_alone() -> None:
    clock = Clock()
    pace = Pace(max_batch=500, clock=clock)
    pace.hint("16")
    for _ in range(300):
        pace.healthy()
    assert pace.limit() == 16
    wait, pause = pace.throttled_by("0x80072321", 30.0)
    assert wait == 30.0 and pace.wait_time() == 30.0
    assert pace.limit() == 1  # the probe goes alone
    later, later_pause = pace.throttled_by("0x80072321", 45.0)  # another thread, pushed on: longer
    assert later == 45.0 and later_pause == pause + 1
    clock.now += 45.0
    assert pace.wait_time() == 0.0
    pace.healthy()  # the probe came back
    assert pace.limit() == 4  # 16 -> 8 -> 4: halved per 429


def test_a_request_count_429_makes_batches_larger_an_execution_time_429_smaller() -> None:
    pace = Pace(max_batch=500, clock=Clock())
    pace.throttled_by("0x80072322", 1.0)
    assert pace.batch_size == 2 * START_BATCH
    for _ in range(10):
        pace.batch_healthy(0.1)
    before = pace.batch_size
    pace.throttled_by("0x80072321", 1.0)
    assert pace.batch_size == max(START_BATCH, before // 2)


def test_slots_hold_at_most_the_limit_in_flight() -> None:
    pace = Pace(max_batch=10, clock=Clock())
    pace.acquire()
    pace.acquire()  # START_PARALLELISM = 2
    third = threading.Thread(target=pace.acquire)
    third.start()
    third.join(0.2)
    assert third.is_alive()  # waits for a slot
    pace.release()
    third.join(5)
    assert not third.is_alive()


def test_one_pace_per_organization_and_user() -> None:
    a = pace_for("https://org.example.test/", "app-1", 500)
    assert pace_for("https://ORG.example.test", "app-1", 100) is a
    assert pace_for("https://org.example.test", "app-2", 500) is not a


def _grown(clock: Clock, dop: str = "8") -> Pace:
    pace = Pace(max_batch=500, clock=clock)
    pace.hint(dop)
    for _ in range(100):
        pace.healthy()
    assert pace.limit() == int(dop)
    return pace


def test_a_success_sent_before_a_429_neither_ends_the_probe_nor_grows_the_pace() -> None:
    pace = _grown(Clock())
    early = pace.acquire()  # admitted before the service pushed back
    refused = pace.acquire()
    assert refused == early
    pace.throttled_by(CODE_EXECUTION, 5.0)  # told while its slot is held
    pace.release()
    pace.release()
    pace.healthy(early)  # early's reply was still on its way back when the 429 came
    pace.batch_healthy(0.1, early)
    state = pace.state()
    assert state.probing and state.parallelism == 1 and state.batch_size == START_BATCH
    probe = pace.acquire()
    assert probe == pace.epoch != early
    pace.release()
    pace.healthy(probe)  # the probe came back: the others follow, at half the rate
    assert not pace.state().probing and pace.limit() == 4


class Sleeper:
    """Injected ``sleep``: records who sleeps how long and holds the thread until the test wakes it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.calls: list[tuple[str, float]] = []
        self.gates: list[threading.Event] = []

    def __call__(self, seconds: float) -> None:
        gate = threading.Event()
        with self.cond:
            self.calls.append((threading.current_thread().name, seconds))
            self.gates.append(gate)
            self.cond.notify_all()
        assert gate.wait(GENEROUS)

    def reached(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, GENEROUS)

    def of(self, name: str) -> list[float]:
        with self.cond:
            return [s for who, s in self.calls if who == name]


def _reply(status: int, retry_after: str | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.headers = CaseInsensitiveDict({"Content-Type": "application/json", "x-ms-dop-hint": "8"})
    body: dict = {"value": []}
    if retry_after is not None:
        resp.headers["Retry-After"] = retry_after
        body = {"error": {"code": CODE_EXECUTION, "message": "Combined execution time of incoming requests"}}
    resp._content = json.dumps(body).encode()
    return resp


class ScriptedSession:
    """Replies per path, in order; a reply may be an Event the request waits for first."""

    def __init__(self, script: dict[str, list]) -> None:
        self.script = script
        self.entered: dict[str, threading.Event] = {path: threading.Event() for path in script}
        self.lock = threading.Lock()

    def request(self, method: str, url: str, **_: object) -> requests.Response:
        path = url.rsplit("/", 1)[1]
        with self.lock:
            step = self.script[path].pop(0)
        self.entered[path].set()
        if isinstance(step, tuple):  # (gate, reply): held until the test opens the gate
            gate, step = step
            assert gate.wait(GENEROUS)
        return step


def _http(pace: Pace, session: ScriptedSession, sleeper: Sleeper) -> ODataHttp:
    http = ODataHttp("https://org.example.test", max_retries=3, sleep=sleeper, pace=pace)
    http.session = lambda: session  # type: ignore[method-assign,assignment,return-value]
    return http


def _run(http: ODataHttp, path: str, name: str, results: dict) -> threading.Thread:
    def go() -> None:
        results[name] = http.request("GET", path, Call("read", "contact", idempotent=True)).status_code

    thread = threading.Thread(target=go, name=name, daemon=True)
    thread.start()
    return thread


def test_a_reply_in_flight_when_another_thread_is_throttled_does_not_let_everyone_go_after_the_pause() -> None:
    """The race the integration test met under load: a request admitted before the block
    comes back 200 while another thread waits out its 429; the pause must still end in one
    probe, not in every thread at once."""
    clock, sleeper = Clock(), Sleeper()
    pace = _grown(clock)
    slow_gate = threading.Event()
    session = ScriptedSession({"slow": [(slow_gate, _reply(200))],
                               "refused": [_reply(429, "5"), _reply(200)]})
    http = _http(pace, session, sleeper)
    results: dict[str, int] = {}
    slow = _run(http, "slow", "slow", results)
    assert session.entered["slow"].wait(GENEROUS)
    refused = _run(http, "refused", "refused", results)
    sleeper.reached(1)  # the refused request waits out its Retry-After
    assert sleeper.of("refused") == [5.0]
    slow_gate.set()  # the request that was already in flight comes back healthy
    slow.join(GENEROUS)
    assert results["slow"] == 200
    state = pace.state()
    assert state.probing and state.parallelism == 1  # the next request still goes alone
    clock.now += 5.0
    sleeper.gates[0].set()
    refused.join(GENEROUS)
    assert results["refused"] == 200
    assert not pace.state().probing and pace.limit() == 4  # the probe came back: half of 8


def test_a_retry_waits_for_the_latest_retry_after_of_any_thread() -> None:
    clock, sleeper = Clock(), Sleeper()
    pace = _grown(clock)
    b_gate = threading.Event()
    session = ScriptedSession({"a": [_reply(429, "1"), _reply(200)],
                               "b": [(b_gate, _reply(429, "5")), _reply(200)]})
    http = _http(pace, session, sleeper)
    results: dict[str, int] = {}
    b = _run(http, "b", "b", results)  # in flight ...
    assert session.entered["b"].wait(GENEROUS)
    a = _run(http, "a", "a", results)
    sleeper.reached(1)  # ... when a is told to wait 1 s
    b_gate.set()
    sleeper.reached(2)  # b is told 5 s
    clock.now += 1.0
    sleeper.gates[0].set()
    sleeper.reached(3)  # a's 1 s are over, b's 5 s are not: a waits the 4 s left
    assert sleeper.of("a") == [1.0, 4.0] and sleeper.of("b") == [5.0]
    clock.now += 4.0
    for gate in sleeper.gates:
        gate.set()
    a.join(GENEROUS)
    b.join(GENEROUS)
    assert results == {"a": 200, "b": 200}
    assert [path for path in ("a", "b") if session.script[path]] == []  # each sent twice, no more
