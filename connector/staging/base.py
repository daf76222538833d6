"""The staging-table interface: one row per tracking event, exactly once."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from connector.models import RecordRef, TrackingEvent


class StagingStore(abc.ABC):
    """Role interface for the tracking staging table (often in the CRM's SQL Server)."""

    @abc.abstractmethod
    def write_events(
        self, events: Sequence[TrackingEvent], crm_records: Mapping[str, str | RecordRef] | None = None
    ) -> int:
        """Bulk-insert events; rows whose natural key exists already are ignored.

        ``crm_records`` maps subscriber key -> CRM record (a RecordRef, or just its id) where known. Returns rows inserted.
        """

    def close(self) -> None:  # pragma: no cover - default no-op
        """Dispose of the engine."""
