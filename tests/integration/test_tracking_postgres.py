"""The tracking step with its state and its staging table on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from connector.models import EventType as E
from connector.steps.tracking import run_tracking
from tests.doubles.esp import FakeEsp
from tests.fixtures.tracking import (
    response_key,
    CAMPAIGN,
    JOB,
    REQUEST,
    T0,
    tracking_crm,
    contact_id,
    make_event,
    tracking_context,
)

pytestmark = pytest.mark.postgres


def test_exactly_once_with_postgres_state_and_staging(tmp_path: Path, pg_url: str) -> None:
    esp = FakeEsp(page_size=4, shuffle=True)
    crm = tracking_crm(contacts=20)
    ctx = tracking_context(tmp_path, esp, crm, state_url=pg_url, staging_url=pg_url, mode="all",
                           event_types=("sent", "click", "bounce"), overlap_minutes=30)
    try:
        ctx.state.add_tracked_send("default", JOB, REQUEST, CAMPAIGN, "Spring")
        esp.add(*(make_event(E.SENT, i, T0) for i in range(20)))
        esp.add(make_event(E.CLICK, 1, T0 + timedelta(minutes=5), url="https://a.test/x"),
                make_event(E.CLICK, 1, T0 + timedelta(minutes=5), url="https://a.test/y"))
        esp.add(make_event(E.BOUNCE, 2, T0 + timedelta(minutes=1), bounce_category="Hard bounce"))
        crm.fail_keys.add(response_key(7, E.SENT))
        first = run_tracking(ctx)
        assert first.ok and first.details["retry_later"] == 1
        crm.fail_keys.clear()
        esp.add(make_event(E.SENT, 1, T0))  # delivered again
        second = run_tracking(ctx)
        assert second.ok
        assert ctx.staging().count() == 23
        assert ctx.state.send_counts(JOB) == {"sent": 20, "clicks": 2, "unique_clicks": 1, "hard_bounces": 1}
        assert len(crm.responses) == 20 + 1 + 1
        assert max(crm.response_attempts.values()) == 1
    finally:
        ctx.staging().close()
        ctx.state.close()
