"""How hard the connector pushes one Dataverse organization: an AIMD controller.

Dataverse protects itself per user and web server (docs/crm.md, "Service protection"):
6,000 requests and 1,200 s of execution time per 5-minute window, 52 requests at once,
and it recommends a degree of parallelism in ``x-ms-dop-hint``. Microsoft's advice is to
start low, raise the rate until the service pushes back, then let ``Retry-After`` say
when to go on. :class:`Pace` does that for every request of the process to one
organization as one user (one :class:`Pace` per (organization, user), shared by all
steps and threads, see :func:`pace_for`):

- **parallelism** (requests in flight) starts at :data:`START_PARALLELISM` and grows by
  one per round of healthy replies (additive increase), up to the dop hint and
  :data:`MAX_PARALLELISM`; a 429 halves it (multiplicative decrease);
- **batch size** (operations per ``$batch``) starts at :data:`START_BATCH`; it grows by
  :data:`BATCH_STEP` per healthy batch, up to ``[crm] batch_size``, only while
  parallelism is at its ceiling and a batch takes less than :data:`TARGET_BATCH_SECONDS`
  (Microsoft: small batches, throughput from parallel requests), and shrinks when a batch
  takes more than twice that; a 429 for execution time halves it, a 429 for the number of
  requests doubles it (fewer, larger requests);
- after a 429 every thread waits until the latest ``Retry-After`` has passed, then one
  request goes alone (a probe) before the others follow, so a refused request is not
  refused again when it is repeated.

Every 429 starts a new *epoch*, and :meth:`Pace.acquire` gives each request the epoch it
was sent in. Only a reply to a request sent in the current epoch says how the service is
doing *now*: a healthy reply to an older one (it was admitted before the service pushed
back, and was still on its way back when the 429 came) neither ends the probe nor grows
the parallelism. Without this, such a reply let every thread go at once as soon as the
pause ended, into a window that had just been found full.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

START_PARALLELISM = 2
"""Requests in flight at first, before any reply has said how much the organization takes."""
MAX_PARALLELISM = 16
"""Ceiling whatever the dop hint says (the concurrency limit is 52 per user and web server)."""
START_BATCH = 10
"""Operations per ``$batch`` at first: Microsoft suggests starting batches at about 10."""
BATCH_STEP = 10
"""Operations added to the batch size per healthy ``$batch`` reply."""
TARGET_BATCH_SECONDS = 2.0
"""A ``$batch`` should come back within about this long (it holds one request slot meanwhile)."""
CODE_REQUESTS, CODE_EXECUTION, CODE_CONCURRENCY = "0x80072322", "0x80072321", "0x80072326"


@dataclass(frozen=True)
class PaceState:
    parallelism: int
    batch_size: int
    dop_hint: int | None
    paused_for: float
    probing: bool


class Pace:
    """Parallelism and batch size for one organization and user (thread-safe)."""

    def __init__(self, max_batch: int = 500, max_parallelism: int = MAX_PARALLELISM,
                 clock=time.monotonic) -> None:
        self.max_batch = max(1, max_batch)
        self.max_parallelism = max(1, max_parallelism)
        self._clock = clock
        self._cond = threading.Condition()
        self._parallelism = float(min(START_PARALLELISM, self.max_parallelism))
        self._batch = min(START_BATCH, self.max_batch)
        self._dop_hint: int | None = None
        self._inflight = 0
        self._paused_until = 0.0
        self.pause_id = 0
        self._probing = False
        self._epoch = 0
        self.throttled = 0

    # -- what callers read --------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        with self._cond:
            return self._batch

    def limit(self) -> int:
        with self._cond:
            return self._limit()

    def _limit(self) -> int:
        if self._probing:
            return 1
        cap = min(self.max_parallelism, self._dop_hint or self.max_parallelism)
        return max(1, min(int(self._parallelism), cap))

    def state(self) -> PaceState:
        with self._cond:
            return PaceState(self._limit(), self._batch, self._dop_hint,
                             max(0.0, self._paused_until - self._clock()), self._probing)

    def wait_time(self) -> float:
        """Seconds until the latest Retry-After has passed (0 when not paused)."""
        with self._cond:
            return max(0.0, self._paused_until - self._clock())

    # -- slots ---------------------------------------------------------------------------
    def acquire(self) -> int:
        """Wait for a free slot (at most ``limit()`` requests in flight); the epoch the request is sent in."""
        with self._cond:
            while self._inflight >= self._limit():
                self._cond.wait(0.5)
            self._inflight += 1
            return self._epoch

    @property
    def epoch(self) -> int:
        """How many 429s this pace has been told of: a request sent now belongs to this epoch."""
        with self._cond:
            return self._epoch

    def release(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    # -- what replies say ----------------------------------------------------------------
    def hint(self, value: str | None) -> None:
        """``x-ms-dop-hint`` of a reply."""
        if not value:
            return
        try:
            dop = max(1, int(value))
        except ValueError:
            return
        with self._cond:
            if dop != self._dop_hint:
                self._dop_hint = dop
                log.info("crm_dop_hint_received", count=dop)
                self._cond.notify_all()

    def healthy(self, sent_in: int | None = None) -> None:
        """A reply that was not throttled: one more request in flight per round of them.

        ``sent_in`` is the epoch :meth:`acquire` gave the request (None: sent in the current
        one). A reply to a request sent before the latest 429 is ignored: it was admitted
        before the service pushed back and says nothing about the window now.
        """
        with self._cond:
            if sent_in is not None and sent_in != self._epoch:
                return
            self._probing = False
            cap = min(self.max_parallelism, self._dop_hint or self.max_parallelism)
            self._parallelism = min(float(cap), self._parallelism + 1.0 / max(1.0, self._parallelism))
            self._cond.notify_all()

    def batch_healthy(self, seconds: float, sent_in: int | None = None) -> None:
        """A ``$batch`` answered without throttling in ``seconds``: perhaps larger next time
        (ignored, like :meth:`healthy`, for a batch sent before the latest 429)."""
        with self._cond:
            if sent_in is not None and sent_in != self._epoch:
                return
            cap = min(self.max_parallelism, self._dop_hint or self.max_parallelism)
            if seconds > 2 * TARGET_BATCH_SECONDS:
                self._batch = max(min(START_BATCH, self.max_batch), self._batch - BATCH_STEP)
            elif seconds < TARGET_BATCH_SECONDS and self._limit() >= cap:
                self._batch = min(self.max_batch, self._batch + BATCH_STEP)

    def throttled_by(self, code: str, retry_after: float) -> tuple[float, int]:
        """A 429: (seconds this caller waits, the pause id it waited for)."""
        with self._cond:
            now = self._clock()
            self.throttled += 1
            self._epoch += 1
            until = now + retry_after
            if until > self._paused_until:
                self._paused_until = until
                self.pause_id += 1
            if code == CODE_CONCURRENCY:
                self._parallelism = max(1.0, min(self._parallelism, self._inflight) / 2)
            else:
                self._parallelism = max(1.0, self._parallelism / 2)
            if code == CODE_REQUESTS:
                self._batch = min(self.max_batch, self._batch * 2)
            elif code == CODE_EXECUTION:
                self._batch = max(min(START_BATCH, self.max_batch), self._batch // 2)
            self._probing = True
            log.info("crm_pace_reduced", reason=code or "429", parallelism=self._limit(), batch_size=self._batch,
                     retry_after=round(retry_after, 3))
            return max(retry_after, self._paused_until - now), self.pause_id


_PACES: dict[tuple[str, str], Pace] = {}
_PACES_LOCK = threading.Lock()


def pace_for(org_url: str, user: str, max_batch: int) -> Pace:
    """The process's one :class:`Pace` for this organization and user."""
    key = (org_url.rstrip("/").lower(), user)
    with _PACES_LOCK:
        pace = _PACES.get(key)
        if pace is None:
            pace = _PACES[key] = Pace(max_batch=max_batch)
        else:
            pace.max_batch = max(pace.max_batch, max_batch)
        return pace


__all__ = ["Pace", "PaceState", "pace_for", "START_BATCH", "START_PARALLELISM", "MAX_PARALLELISM"]
