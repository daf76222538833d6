"""The e-mail refresh job: the ESP's e-mail catalogue into CRM's e-mail picker, every ``[emails] refresh_minutes``.

One run reads the whole catalogue (``EspClient.iter_emails``) and upserts it into the
``<prefix>_email`` table by customer key (``CrmClient.refresh_email_catalogue``); an e-mail
gone from the ESP is marked ``deleted`` there. Running it twice writes the same rows again.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import structlog

from connector.steps import StepOutcome

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps import StepContext

log = structlog.get_logger(__name__)


def run_email_refresh(ctx: StepContext) -> StepOutcome:
    now = datetime.now(timezone.utc)
    result = ctx.crm().refresh_email_catalogue(ctx.esp().iter_emails(), ctx.config.esp.name, now)
    log.info("email_catalogue_refreshed", count=result.seen, written=result.written,
             marked_deleted=result.marked_deleted, problems=len(result.problems))
    for problem in result.problems:
        log.warning("email_catalogue_problem", reason=problem)
    message = f"{result.seen} e-mail(s) at the ESP, {result.written} written, {result.marked_deleted} marked deleted"
    if result.problems:
        message += "; " + "; ".join(result.problems)
    return StepOutcome(ok=not result.problems, processed=result.written, message=message,
                       details={"seen": result.seen, "marked_deleted": result.marked_deleted})
