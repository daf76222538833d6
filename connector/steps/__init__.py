"""Steps: plain functions of (config, adapters, state); orchestration only, no wire formats.

Each step is ``run_<name>(ctx: StepContext) -> StepOutcome`` and runs in its own
APScheduler executor. Adapters are built per worker thread through the factories
in the context (one HTTP session per thread).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from connector.config import Config
    from connector.crm.base import CrmClient
    from connector.esp.base import EspClient
    from connector.staging.base import StagingStore
    from connector.state.store import StateStore
    from connector.transfer.base import FileDrop


@dataclass
class StepContext:
    config: "Config"
    state: "StateStore"
    crm: Callable[[], "CrmClient"]
    esp: Callable[[], "EspClient"]
    file_drop: Callable[[], "FileDrop"]
    staging: Callable[[], "StagingStore"]
    stopping: threading.Event = field(default_factory=threading.Event)
    run_id: str = ""
    holder: str = ""  # this instance's lease-holder name


@dataclass
class StepOutcome:
    """What a step run did, recorded in the state database for `connector status`."""

    ok: bool = True
    processed: int = 0
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
