"""Service protection of the Dataverse sandbox, as Dataverse enforces it per user.

Three facets over a 5-minute sliding window (PD developer/data-platform/api-limits.md):

- **requests**: 6,000 per window -> 429 ``0x80072322``;
- **execution time**: 1,200 s of combined execution per window -> 429 ``0x80072321``;
  a ``$batch`` counts as one request but every operation inside it adds its cost;
- **concurrency**: more than 52 requests in flight -> 429 ``0x80072326`` at once.

The two window limits are checked on arrival against what the window already holds,
so, as the documentation says, a client can go beyond them before enforcement starts;
once a limit is hit, every request of that user is refused until ``Retry-After`` has
passed, and each request that arrives during the block lengthens it ("if the
application continues to send such demanding requests, the duration will be
extended"). Execution time is charged from a cost table (:class:`Costs`, seconds per
operation) and, with ``hold_replies`` (the default), a reply is not sent before its
execution time has passed, so the sandbox is as slow as the work it charges for.
Every reply carries ``x-ms-dop-hint`` (PD send-parallel-requests.md) and the two
``x-ms-ratelimit-*-remaining-xrm-requests`` debugging headers.

Refusals are counted for tests and benchmarks. ``Retry-After`` is "the duration before
any new requests from the user can be processed" (api-limits.md, "Retry operations"), not
a reservation: once it has passed, the user's other requests may fill the window again and
start a new block. So a request refused again is counted as the client's fault
(``rejected_twice``) only when it came back before the ``Retry-After`` it was given had
passed, or during the same block (lengthened by that user's requests meanwhile); refused
again in a later block it is ``refused_again``.

``time_scale`` runs the sandbox's clock faster than the wall clock (window, blocks,
held replies, key activation): with 100, a 300 s window passes in 3 s, so a short
test covers the window logic. Retry-After is then given in wall-clock seconds
(fractional), which is what a client waits.
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import threading
import time
from dataclasses import dataclass, field

from connector.sandbox.dataverse.http import Request, Response


HOLD_REPLIES_ENV = "SANDBOX_DATAVERSE_HOLD_REPLIES"


@dataclass
class Costs:
    """Execution time charged per operation, in seconds (defaults: see docs/sandbox.md)."""

    read: float = 0.01
    """A GET (query, record, metadata), plus ``read_per_row`` for every row it returns."""
    read_per_row: float = 0.00005
    write: float = 0.02
    """A create, update, upsert, delete, associate or action on records."""
    bulk_per_record: float = 0.01
    """Each target of CreateMultiple / UpdateMultiple / UpsertMultiple (on top of ``write``)."""
    metadata_write: float = 0.2
    """Creating a table, column, key or relationship."""
    batch: float = 0.005
    """The ``$batch`` envelope itself; every operation inside adds its own cost."""


@dataclass
class Limits:
    """Service-protection limits per user (per web server), as in Dataverse, and the sandbox's clock."""

    requests: int = 6000
    window_seconds: float = 300.0
    concurrent: int = 52
    execution_seconds: float = 1200.0
    dop_hint: int = 8
    """``x-ms-dop-hint``: the degree of parallelism the sandbox recommends."""
    penalty_seconds: float = 2.0
    """How much each request refused during a block lengthens it."""
    max_retry_after: float = 900.0
    hold_replies: bool = field(default_factory=lambda: os.environ.get(HOLD_REPLIES_ENV, "1") != "0")
    """Send a reply only once its execution time (from :class:`Costs`) has passed (default on;
    ``SANDBOX_DATAVERSE_HOLD_REPLIES=0`` turns it off, as the test suite does for speed)."""
    time_scale: float = 1.0
    """Sandbox seconds per wall-clock second (set before the first request)."""
    costs: Costs = field(default_factory=Costs)


MESSAGES = {
    "0x80072322": "Number of requests exceeded the limit of {requests} over time window of {window} seconds.",
    "0x80072321": ("Combined execution time of incoming requests exceeded limit of {execution_ms:,} milliseconds"
                   " over time window of {window} seconds. Decrease number of concurrent requests or reduce the"
                   " duration of requests and try again later."),
    "0x80072326": "Number of concurrent requests exceeded the limit of {concurrent}.",
}


@dataclass
class _User:
    requests: collections.deque = field(default_factory=collections.deque)  # arrival times
    work: collections.deque = field(default_factory=collections.deque)  # (finish time, cost)
    work_total: float = 0.0
    inflight: int = 0
    blocked_until: float = 0.0
    blocked_code: str = ""
    block_id: int = 0  # bumped when a block starts
    concurrency_strikes: int = 0


class ServiceProtection:
    """The three limits, per caller; thread-safe."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._users: dict[str, _User] = collections.defaultdict(_User)
        self.throttled = 0
        self.refused_by_code: collections.Counter = collections.Counter()
        self.rejected_twice = 0
        """Requests (same method, URL and body) refused again before the Retry-After they were
        given had passed, or in the same block: the client did not wait (module docstring)."""
        self.refused_again = 0
        """Requests refused again in a later block: they waited, then the window filled again."""
        self._refused: dict[str, tuple[float, int | None]] = {}
        """Refused requests not admitted since: (sandbox time Retry-After sent them to, their block)."""

    # -- clock --------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() * self.limits.time_scale

    def wall(self, sandbox_seconds: float) -> float:
        return sandbox_seconds / self.limits.time_scale

    # -- admission ----------------------------------------------------------------------
    def enter(self, caller: str, fingerprint: str = "", cost: float = 0.0) -> Response | None:
        """None when the request may run (the caller must call :meth:`leave`), else the 429.

        ``cost`` is the execution time the request is expected to take: it is charged when
        the request starts, so a ``Retry-After`` computed meanwhile counts the work in flight.
        """
        lim = self.limits
        with self._lock:
            now = self.now()
            user = self._users[caller]
            self._expire(user, now)
            in_block = now < user.blocked_until
            refused = self._check(user, now)
            if refused is None:
                user.requests.append(now)
                user.inflight += 1
                if cost > 0:
                    user.work.append((now, cost))
                    user.work_total += cost
                user.concurrency_strikes = 0
                self._refused.pop(fingerprint, None)
                return None
            code, wait = refused
            self.throttled += 1
            self.refused_by_code[code] += 1
            retry = max(self.wall(min(wait, lim.max_retry_after)), 0.001)
            text = f"{math.ceil(retry)}" if lim.time_scale == 1.0 else f"{retry:.3f}"
            block = user.block_id if code == user.blocked_code and now < user.blocked_until else None
            earlier = self._refused.get(fingerprint)
            if earlier is not None:
                told_until, earlier_block = earlier
                same_block = in_block and earlier_block is not None and earlier_block == block
                if now < told_until or same_block:
                    self.rejected_twice += 1
                else:
                    self.refused_again += 1
            if fingerprint:  # what the client is told, as it reads it: the text's seconds
                self._refused[fingerprint] = (now + float(text) * lim.time_scale, block)
            message = MESSAGES[code].format(requests=lim.requests, window=int(lim.window_seconds),
                                            execution_ms=int(lim.execution_seconds * 1000),
                                            concurrent=lim.concurrent)
            return Response.error(429, code, message, [("Retry-After", text)] + self._headers(user, now))

    def _check(self, user: _User, now: float) -> tuple[str, float] | None:
        lim = self.limits
        if now < user.blocked_until:  # still blocked: pushing on lengthens the block
            user.blocked_until += lim.penalty_seconds
            return user.blocked_code, user.blocked_until - now
        if user.inflight >= lim.concurrent:
            user.concurrency_strikes += 1
            return "0x80072326", float(user.concurrency_strikes)
        if len(user.requests) >= lim.requests:
            return self._block(user, now, "0x80072322", user.requests[0] + lim.window_seconds - now)
        if user.work_total >= lim.execution_seconds:
            return self._block(user, now, "0x80072321", self._work_frees_in(user, now))
        return None

    def _block(self, user: _User, now: float, code: str, wait: float) -> tuple[str, float]:
        wait = max(wait, 1.0)
        user.blocked_until = now + wait
        user.blocked_code = code
        user.block_id += 1
        return code, wait

    def _work_frees_in(self, user: _User, now: float) -> float:
        """Seconds until the window's execution time drops below the limit."""
        total = user.work_total
        for finished, cost in user.work:
            total -= cost
            if total < self.limits.execution_seconds:
                return finished + self.limits.window_seconds - now
        return 1.0

    def _expire(self, user: _User, now: float) -> None:
        start = now - self.limits.window_seconds
        while user.requests and user.requests[0] <= start:
            user.requests.popleft()
        while user.work and user.work[0][0] <= start:
            user.work_total -= user.work.popleft()[1]
        if not user.work:
            user.work_total = 0.0

    # -- completion -----------------------------------------------------------------------
    def hold(self, started_wall: float, cost: float) -> None:
        """Wait until the request has taken (at least) its execution time."""
        if self.limits.hold_replies and cost > 0:
            remaining = self.wall(cost) - (time.monotonic() - started_wall)
            if remaining > 0:
                time.sleep(remaining)

    def leave(self, caller: str, extra: float) -> list[tuple[str, str]]:
        """Charge ``extra`` seconds (what the request took beyond its expected cost); the rate-limit headers."""
        with self._lock:
            now = self.now()
            user = self._users[caller]
            user.inflight -= 1
            if extra > 0:
                user.work.append((now, extra))
                user.work_total += extra
            self._expire(user, now)
            return self._headers(user, now)

    def _headers(self, user: _User, now: float) -> list[tuple[str, str]]:
        lim = self.limits
        burst = max(0, lim.requests - len(user.requests))
        remaining = max(0.0, lim.execution_seconds - user.work_total)
        return [("x-ms-dop-hint", str(lim.dop_hint)),
                ("x-ms-ratelimit-burst-remaining-xrm-requests", str(burst)),
                ("x-ms-ratelimit-time-remaining-xrm-requests", f"{remaining * 1000:.2f}")]

    def reset(self) -> None:
        """Forget every window and block (a test helper: a new organization's budget)."""
        with self._lock:
            self._users.clear()
            self._refused.clear()

    def usage(self, caller: str) -> dict[str, float]:
        """What the window holds for ``caller`` now (tests, benchmarks)."""
        with self._lock:
            now = self.now()
            user = self._users[caller]
            self._expire(user, now)
            return {"requests": len(user.requests), "execution_seconds": user.work_total,
                    "inflight": user.inflight, "blocked_for": max(0.0, user.blocked_until - now)}


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Identifies a repeated request (the same method, URL and body)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(method.encode())
    digest.update(path.encode("utf-8", "replace"))
    digest.update(body)
    return digest.hexdigest()


METADATA_SETS = ("EntityDefinitions", "RelationshipDefinitions")


def _head(path: str) -> str:
    return path.split("/", 1)[0].split("(", 1)[0]


def expected_cost(costs: Costs, method: str, path: str, body: bytes) -> float:
    """The execution time charged when a request starts (rows read are charged once known)."""
    head = _head(path)
    if head == "$batch":
        parts = body.count(b"application/http")
        reads = body.count(b"\nGET ")
        return costs.batch + reads * costs.read + max(0, parts - reads) * costs.write
    if method == "GET":
        return costs.read
    if head in METADATA_SETS:
        return costs.metadata_write
    return costs.write + (costs.bulk_per_record * body.count(b"@odata.type") if "Multiple" in path else 0.0)


def operation_cost(costs: Costs, req: Request, resp: Response) -> float:
    """What one operation (a request, or a part of a ``$batch``) cost, its reply known."""
    head = _head(req.path)
    if head == "$batch":
        return costs.batch
    if req.method == "GET":
        return costs.read + costs.read_per_row * resp.body.count(b'"@odata.etag"')
    if head in METADATA_SETS:
        return costs.metadata_write
    return costs.write + (costs.bulk_per_record * req.body.count(b"@odata.type") if "Multiple" in req.path else 0.0)
