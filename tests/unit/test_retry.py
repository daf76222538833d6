"""The one retry policy (connector/retry.py): classification, Retry-After, jitter, budgets, log keys."""

from __future__ import annotations

import datetime as dt
import random
from email.utils import format_datetime

import pytest
from structlog.testing import capture_logs

from connector.errors import (
    AuthError,
    NotFoundError,
    PermanentPeerError,
    PeerSetupError,
    ThrottledError,
    TokenExpiredError,
    TransientPeerError,
)
from connector.retry import (
    MAX_BACKOFF_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    Failure,
    RetryPolicy,
    classify,
    declare,
    retry_after_seconds,
)


class Flaky:
    """Raises the given errors in turn, then answers "ok"; counts the calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _policy(sleeps: list[float], **kw) -> RetryPolicy:  # noqa: ANN003
    return RetryPolicy(kw.pop("peer", "crm"), kw.pop("max_retries", 3), sleep=sleeps.append, **kw)


def _transient(**kw) -> TransientPeerError:  # noqa: ANN003
    return TransientPeerError("HTTP 503", peer="crm", operation="read", **kw)


@pytest.mark.parametrize("exc, failure", [
    (TransientPeerError("dropped"), Failure.IF_IDEMPOTENT),
    (ThrottledError("HTTP 500 rate limited"), Failure.IF_IDEMPOTENT),
    (TokenExpiredError("Token Expired"), Failure.RENEW_TOKEN),
    (PermanentPeerError("400"), Failure.NEVER),
    (AuthError("403"), Failure.NEVER),
    (PeerSetupError("host key"), Failure.NEVER),
    (NotFoundError("404"), Failure.NEVER),
    (ValueError("a bug"), Failure.NEVER),
    (declare(ThrottledError("429"), Failure.SAFE), Failure.SAFE),
    (declare(TransientPeerError("HTTP 501"), Failure.NEVER), Failure.NEVER),
])
def test_one_classification_of_failures(exc: BaseException, failure: Failure) -> None:
    assert classify(exc) is failure


def test_retry_after_is_honoured_exactly_and_capped() -> None:
    sleeps: list[float] = []
    flaky = Flaky(_transient(retry_after=7.0), _transient(retry_after=10_000.0))
    assert _policy(sleeps).call(flaky, call="read", idempotent=True) == "ok"
    assert sleeps == [7.0, MAX_RETRY_AFTER_SECONDS]


def test_retry_after_header_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds({"Retry-After": " 12 "}) == 12.0
    assert retry_after_seconds({"Retry-After": "-3"}) == 0.0
    assert retry_after_seconds({"Retry-After": "86400"}) == MAX_RETRY_AFTER_SECONDS
    assert retry_after_seconds({}) is None and retry_after_seconds({"Retry-After": "soon"}) is None
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    date = format_datetime(now + dt.timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=now.timestamp) == 90.0


def test_backoff_is_full_jitter_within_a_doubling_window() -> None:
    random.seed(11)
    windows: dict[int, list[float]] = {}
    for _ in range(200):
        sleeps: list[float] = []
        with pytest.raises(TransientPeerError):
            _policy(sleeps, max_retries=7, backoff_seconds=2.0).call(Flaky(*[_transient()] * 8), call="read",
                                                                      idempotent=True)
        assert len(sleeps) == 7
        for attempt, wait in enumerate(sleeps, start=1):
            windows.setdefault(attempt, []).append(wait)
    for attempt, waits in windows.items():
        high = min(MAX_BACKOFF_SECONDS, 2.0 * 2 ** (attempt - 1))
        assert all(0.0 <= w <= high for w in waits)
        assert min(waits) < 0.25 * high and max(waits) > 0.75 * high  # spread over the window: jitter
    assert max(windows[7]) <= MAX_BACKOFF_SECONDS


def test_attempts_are_capped_and_the_last_error_goes_up_unchanged() -> None:
    sleeps: list[float] = []
    errors = [_transient() for _ in range(5)]
    flaky = Flaky(*errors)
    with pytest.raises(TransientPeerError) as caught:
        _policy(sleeps, max_retries=3).call(flaky, call="read", idempotent=True)
    assert flaky.calls == 4 and len(sleeps) == 3
    assert caught.value is errors[3]
    none = Flaky(_transient())
    with pytest.raises(TransientPeerError):
        _policy(sleeps, max_retries=0).call(none, call="read", idempotent=True)
    assert none.calls == 1


def test_only_an_idempotent_call_is_repeated_after_a_failure_that_may_have_been_acted_on() -> None:
    sleeps: list[float] = []
    create = Flaky(_transient())
    with pytest.raises(TransientPeerError):
        _policy(sleeps).call(create, call="create", idempotent=False)
    assert create.calls == 1 and sleeps == []
    refused = Flaky(declare(ThrottledError("429", retry_after=2.0), Failure.SAFE))
    assert _policy(sleeps).call(refused, call="create", idempotent=False) == "ok"  # never processed: repeat
    assert refused.calls == 2 and sleeps == [2.0]


def test_never_is_never_repeated() -> None:
    for exc in (PermanentPeerError("400"), AuthError("refused"), declare(_transient(), Failure.NEVER)):
        flaky = Flaky(exc)
        with pytest.raises(type(exc)):
            _policy([]).call(flaky, call="read", idempotent=True)
        assert flaky.calls == 1


def test_token_is_renewed_once_without_waiting() -> None:
    sleeps: list[float] = []
    once = Flaky(TokenExpiredError("expired"), _transient())
    assert _policy(sleeps).call(once, call="read", idempotent=True) == "ok"
    assert once.calls == 3 and sleeps[0] == 0.0  # the renewal does not use up a retry, nor wait
    twice = Flaky(TokenExpiredError("expired"), TokenExpiredError("expired again"))
    with pytest.raises(TokenExpiredError, match="again"):
        _policy(sleeps).call(twice, call="read", idempotent=True)
    assert twice.calls == 2


def test_a_renewed_token_repeats_an_unsafe_call_only_where_the_peer_checks_tokens_first() -> None:
    esp = Flaky(TokenExpiredError("expired"))
    with pytest.raises(TokenExpiredError):
        _policy([], peer="esp").call(esp, call="Perform", idempotent=False)
    assert esp.calls == 1
    crm = Flaky(TokenExpiredError("401"))
    assert _policy([], renew_any_call=True).call(crm, call="create", idempotent=False) == "ok"
    assert crm.calls == 2


def test_throttling_may_have_its_own_budget() -> None:
    sleeps: list[float] = []
    storm = Flaky(*[ThrottledError("429", retry_after=1.0) for _ in range(6)], _transient(), _transient())
    assert _policy(sleeps, max_retries=2, throttle_retries=6).call(storm, call="read", idempotent=True) == "ok"
    assert storm.calls == 9
    shared = Flaky(ThrottledError("500", retry_after=1.0), ThrottledError("500"), _transient())
    with pytest.raises(TransientPeerError):
        _policy([], max_retries=2).call(shared, call="read", idempotent=True)
    assert shared.calls == 3  # without its own budget a throttle counts as a retry


def test_the_pacer_sets_the_wait_only_of_a_repeat_that_happens() -> None:
    sleeps: list[float] = []
    seen: list[tuple[str, float]] = []

    def pace(exc: BaseException, wait: float) -> float:
        seen.append((str(exc), wait))
        return wait + 5.0

    flaky = Flaky(_transient(retry_after=1.0), _transient(retry_after=2.0))
    with pytest.raises(TransientPeerError):
        _policy(sleeps, max_retries=1).call(flaky, call="read", idempotent=True, pace=pace)
    assert sleeps == [6.0] and seen == [("HTTP 503", 1.0)]


def test_one_set_of_log_keys_for_every_peer() -> None:
    with capture_logs() as logs:
        for peer in ("crm", "esp", "sftp"):
            flaky = Flaky(_transient(retry_after=3.0), TokenExpiredError("Token Expired"))
            _policy([], peer=peer).call(flaky, call=f"{peer} call", idempotent=True)
    assert [(e["event"], e["peer"]) for e in logs] == [
        ("call_retried", "crm"), ("token_renewed", "crm"), ("call_retried", "esp"), ("token_renewed", "esp"),
        ("call_retried", "sftp"), ("token_renewed", "sftp")]
    for entry in logs:
        assert set(entry) == {"event", "log_level", "peer", "call", "attempt", "wait_s", "why"}
    assert logs[0] == {"event": "call_retried", "log_level": "warning", "peer": "crm", "call": "crm call",
                         "attempt": 1, "wait_s": 3.0, "why": "HTTP 503"}
    assert (logs[1]["attempt"], logs[1]["wait_s"], logs[1]["log_level"]) == (2, 0.0, "info")
