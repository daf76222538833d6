"""One retry policy for every peer: the Dataverse Web API, the Marketing Cloud SOAP API, the SFTP drop.

The adapters translate library errors into ``connector.errors`` at their edge; this module decides,
from that error alone and from whether the call is idempotent, if the call is repeated here and now,
how long to wait first, and what is logged. It runs on tenacity (docs/architecture.md, "Retries").

=====================  ==========================================================  ==================
failure                what it is                                                  repeated
=====================  ==========================================================  ==================
``Failure.SAFE``       the peer refused the call before acting on it (Dataverse    any call
                       429, a token that could not be fetched): declared by the
                       adapter with :func:`declare`
``IF_IDEMPOTENT``      a ``TransientPeerError``: it may have been acted on          idempotent calls
                       (dropped connection, timeout, 5xx, ESP throttling)
``RENEW_TOKEN``        ``TokenExpiredError``: the adapter dropped the token;        once; any call only
                       repeat once with a fresh one                                where the peer checks
                                                                                   tokens first
``NEVER``              everything else (permanent, auth, set-up, not found), or a  never
                       transient error declared ``NEVER`` (repeating cannot help
                       now: leave it to the next run)
=====================  ==========================================================  ==================

The wait before a repeat is the peer's ``Retry-After`` when it sent one (capped at
:data:`MAX_RETRY_AFTER_SECONDS`), else exponential backoff with full jitter: uniform in
``[0, min(MAX_BACKOFF_SECONDS, backoff_seconds * 2 ** (attempt - 1))]``; a token renewal
does not wait. A caller that paces a peer (the Dataverse pacer) gets the last word on the wait.

Every repeat is logged once, as ``call_retried`` (``token_renewed`` for a renewal), with the
same keys for every peer: ``peer``, ``call``, ``attempt`` (the attempt that failed, 1 = the
first), ``wait_s`` and ``why`` (the error's message).
"""

from __future__ import annotations

import email.utils
import enum
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, TypeVar

import structlog
import tenacity

from connector.errors import ThrottledError, TokenExpiredError, TransientPeerError

log = structlog.get_logger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

BACKOFF_SECONDS = 1.0
"""Backoff window of the first repeat; it doubles with each attempt."""
MAX_BACKOFF_SECONDS = 30.0
"""The backoff window never grows past this."""
MAX_RETRY_AFTER_SECONDS = 300.0
"""A ``Retry-After`` longer than this is cut to it (5 minutes; the call then fails or is repeated)."""
WHY_CHARS = 300
"""A log line's ``why`` is the error's message cut to this many characters."""


class Failure(enum.Enum):
    """What may be done about a failed call (the module docstring's table)."""

    SAFE = "retry safely"
    IF_IDEMPOTENT = "retry if idempotent"
    RENEW_TOKEN = "renew the token, then retry"
    NEVER = "never retry"


def declare(exc: E, failure: Failure) -> E:
    """Tell :func:`classify` what the adapter knows about ``exc`` (e.g. a 429 was never processed)."""
    exc.retry_as = failure  # type: ignore[attr-defined]
    return exc


def classify(exc: BaseException) -> Failure:
    """The one classification of a failure."""
    declared = getattr(exc, "retry_as", None)
    if isinstance(declared, Failure):
        return declared
    if isinstance(exc, TokenExpiredError):
        return Failure.RENEW_TOKEN
    if isinstance(exc, TransientPeerError):
        return Failure.IF_IDEMPOTENT
    return Failure.NEVER


def retry_after_seconds(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` (delay-seconds or an HTTP-date, RFC 9110 10.2.3) in seconds, capped; None when absent."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER_SECONDS))


@dataclass(frozen=True)
class RetryPolicy:
    """How one peer's calls are repeated. Cheap to build: adapters build one per call from their settings.

    ``max_retries`` repeats per call for ``SAFE`` / ``IF_IDEMPOTENT`` failures (``[crm]`` /
    ``[esp] max_retries``); ``throttle_retries``, when set, is a separate budget for
    ``ThrottledError`` (a 429 storm may last longer than a fault); one token renewal per call.
    ``renew_any_call``: the peer checks the token before it acts on a call, so a refused
    token may be renewed and the call repeated whatever the call (Dataverse).
    """

    peer: str
    max_retries: int
    backoff_seconds: float = BACKOFF_SECONDS
    throttle_retries: int | None = None
    renew_any_call: bool = False
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def call(self, fn: Callable[[], T], *, call: str, idempotent: bool,
             pace: Callable[[BaseException, float], float] | None = None) -> T:
        """``fn()``, repeated as the failure's class allows; the last error goes up unchanged.

        ``pace(error, wait_s)`` may change the wait of a repeat that is about to happen
        (it is called only then) and returns the wait to sleep.
        """
        budget = _Budget(self, idempotent)
        retrying = tenacity.Retrying(
            sleep=self.sleep,
            retry=tenacity.retry_if_exception(budget.allows),
            stop=tenacity.stop_never,  # the budgets are per failure class: kept by ``retry``
            wait=budget.wait if pace is None else (lambda state: pace(_error(state), budget.wait(state))),
            before_sleep=lambda state: self._log(state, call),
            reraise=True,
        )
        return retrying(fn)

    def _log(self, state: tenacity.RetryCallState, call: str) -> None:
        exc = _error(state)
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        renewal = classify(exc) is Failure.RENEW_TOKEN
        emit = log.info if renewal else log.warning
        emit("token_renewed" if renewal else "call_retried", peer=self.peer, call=call,
             attempt=state.attempt_number, wait_s=round(wait, 3), why=str(exc)[:WHY_CHARS])


class _Budget:
    """One call's repeats left, per failure class."""

    def __init__(self, policy: RetryPolicy, idempotent: bool) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.used = {"retries": 0, "throttled": 0, "renewals": 0}
        self._backoff = tenacity.wait_random_exponential(multiplier=policy.backoff_seconds, max=MAX_BACKOFF_SECONDS)

    def allows(self, exc: BaseException) -> bool:
        failure = classify(exc)
        if failure is Failure.NEVER or (failure is Failure.IF_IDEMPOTENT and not self.idempotent):
            return False
        if failure is Failure.RENEW_TOKEN:
            kind, limit = "renewals", 1 if (self.idempotent or self.policy.renew_any_call) else 0
        elif isinstance(exc, ThrottledError) and self.policy.throttle_retries is not None:
            kind, limit = "throttled", self.policy.throttle_retries
        else:
            kind, limit = "retries", self.policy.max_retries
        if self.used[kind] >= limit:
            return False
        self.used[kind] += 1
        return True

    def wait(self, state: tenacity.RetryCallState) -> float:
        exc = _error(state)
        if classify(exc) is Failure.RENEW_TOKEN:
            return 0.0
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return max(0.0, min(float(retry_after), MAX_RETRY_AFTER_SECONDS))
        return self._backoff(state)


def _error(state: tenacity.RetryCallState) -> BaseException:
    assert state.outcome is not None and state.outcome.failed
    exc = state.outcome.exception()
    assert exc is not None
    return exc


__all__ = ["Failure", "RetryPolicy", "classify", "declare", "retry_after_seconds",
           "BACKOFF_SECONDS", "MAX_BACKOFF_SECONDS", "MAX_RETRY_AFTER_SECONDS"]
