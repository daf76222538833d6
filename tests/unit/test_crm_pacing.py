"""The AIMD pace of one organization and user (no sockets): start small, grow while healthy,
halve on 429, wait for the latest Retry-After, probe alone, honour the dop hint."""

from __future__ import annotations

import threading

from connector.crm.pacing import BATCH_STEP, START_BATCH, START_PARALLELISM, Pace, pace_for


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
