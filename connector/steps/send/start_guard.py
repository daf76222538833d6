"""Start an ESP send or import at most once, although the ESP shows a start only after a delay.

Marketing Cloud answers Perform start before the new Send (or ImportResultsSummary) is
retrievable. A look-up by key right after a crash can therefore miss a start that did
happen, and a start repeated on that evidence would send the e-mail twice. So:

1. a durable mark, "start requested at T", is committed to the state database *before*
   the Perform (send: a meta row ``send_start_requested:<request id>``; import: the
   batch's status ``starting``, T = its ``updated_at``);
2. whoever finds the mark without the start's result (a restart after a crash between
   the Perform and the state write, another instance after a takeover, the next run after
   a timeout) does not perform again: it looks the start up by key, and while nothing is
   visible it waits until T + ``[esp] visibility_minutes``;
3. only a start still invisible past that horizon is taken as never made and performed
   again (under a new mark).

The horizon must exceed the ESP's real visibility delay (docs/sends.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

import structlog

from connector.crashpoints import crashpoint
from connector.models import EspSend
from connector.state.lifecycle import BatchStatus

if TYPE_CHECKING:  # pragma: no cover
    from connector.config import Config
    from connector.esp.base import EspClient
    from connector.state.store import Batch, SendJob, StateStore
    from connector.steps import StepContext

log = structlog.get_logger(__name__)

SEND_MARK = "send_start_requested:{request_id}"


def send_mark(state: StateStore, request_id: str) -> datetime | None:
    """When the start of this request's send was requested (None: never)."""
    text = state.get_meta(SEND_MARK.format(request_id=request_id))
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _horizon(config: Config, marked: datetime) -> datetime:
    return marked + timedelta(minutes=config.esp.visibility_minutes)


def start_send_once(ctx: StepContext, job: SendJob, key: str, start: Callable[[], EspSend]) -> EspSend | None:
    """The send under ``key``: found, or started by ``start()``; None while an earlier start may
    still become visible (``job.phase_detail`` says until when; the job waits for the next run)."""
    state, esp = ctx.state, ctx.esp()
    marked = send_mark(state, job.request_id)
    if marked is not None:
        found = esp.find_send(key)
        if found is not None:
            log.info("esp_send_found", send=job.request_id, job_id=found.job_id, key=key,
                     requested_at=marked.isoformat())
            return found
        until = _horizon(ctx.config, marked)
        if state.now() < until:
            job.phase_detail = (f"the start of ESP send {key} was requested at {marked:%Y-%m-%d %H:%M:%S} UTC and "
                                f"the ESP does not show it yet; looking again until {until:%H:%M:%S} UTC before "
                                "starting it ([esp] visibility_minutes)")
            state.save_send_job(job)
            log.info("send_start_awaited", send=job.request_id, key=key, requested_at=marked.isoformat(),
                     wait_until=until.isoformat())
            return None
        log.warning("send_start_not_seen", send=job.request_id, key=key, requested_at=marked.isoformat(),
                    reason="no send under the key past [esp] visibility_minutes: the earlier start never "
                           "reached the ESP; starting it now")
    state.set_meta(SEND_MARK.format(request_id=job.request_id), state.now().isoformat())
    crashpoint("before_send_started")
    found = start()
    crashpoint("after_send_started")
    return found


def start_import_once(state: StateStore, config: Config, esp: EspClient, batch: Batch, start: Callable[[], str]) -> bool:
    """Start the batch's import unless an earlier start may still become visible.

    True when the import is known started (``batch.status`` is then ``importing``, saved);
    False while a marked start is not visible yet and its horizon has not passed.
    """
    if batch.status is BatchStatus.STARTING and batch.updated_at is not None:
        status = esp.import_status(batch.import_key)
        if not status.found:
            until = _horizon(config, batch.updated_at)
            if state.now() < until:
                log.info("import_start_awaited", send=batch.request_id, batch=batch.seq,
                         import_key=batch.import_key, requested_at=batch.updated_at.isoformat(),
                         wait_until=until.isoformat())
                return False
            log.warning("import_start_not_seen", send=batch.request_id, batch=batch.seq, import_key=batch.import_key,
                        reason="no run of the import past [esp] visibility_minutes; starting it now")
        else:
            batch.move(BatchStatus.IMPORTING)
            state.save_batch(batch)
            log.info("esp_import_found", send=batch.request_id, batch=batch.seq, import_key=batch.import_key)
            return True
    batch.move(BatchStatus.STARTING)
    state.save_batch(batch)  # the durable mark: its updated_at is when the start was requested
    crashpoint("before_import_started")
    start()
    crashpoint("after_import_started")
    batch.move(BatchStatus.IMPORTING)
    state.save_batch(batch)
    return True
