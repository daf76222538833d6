"""The state store: the connector's own durable state in one SQL database.

SQLite (WAL) by default, PostgreSQL through the same code (SQLAlchemy 2 Core).
Schema changes go through Alembic (``migrate()``, also ``connector migrate``).
Every method that writes takes ``conn=`` so a caller can group several writes in
one transaction::

    with store.transaction() as conn:
        store.set_watermark(account, "open", newest, conn=conn)
        store.add_send_counts(job_id, {"open": 12}, conn=conn)

The parts live in mixins: ``leases``, ``jobs`` (send jobs, batches),
``tracking`` (watermarks, tracked sends, counters, seen events), ``audit``
(quarantine, change log, step runs), ``sync`` (the sync shadow, the change log read back),
``kpi`` (the KPI job's written values).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from connector.errors import StateError
from connector.secrets import hide_url_passwords
from connector.state.audit import AuditMixin
from connector.state.base import Clock, _short, utcnow
from connector.state.engine import create_state_engine, normalize_url, upsert
from connector.state.instances import Identity, InstanceMixin, this_process
from connector.state.jobs import JobMixin
from connector.state.kpi import KpiMixin
from connector.state.leases import LeaseMixin
from connector.state.records import (
    BATCH_STATUSES,
    FINAL_SEND_STATUSES,
    SEND_JOB_STATUSES,
    Batch,
    ChangeRow,
    QuarantineRow,
    SendJob,
    StepRun,
    TrackedSend,
    Watermark,
)
from connector.state.schema import meta
from connector.state.suppression import SuppressionMixin
from connector.state.sync import SyncMixin
from connector.state.tracking import TrackingMixin

__all__ = [
    "BATCH_STATUSES",
    "FINAL_SEND_STATUSES",
    "SEND_JOB_STATUSES",
    "Batch",
    "ChangeRow",
    "QuarantineRow",
    "SendJob",
    "StateStore",
    "StepRun",
    "TrackedSend",
    "Watermark",
    "default_holder",
]


def default_holder() -> str:
    """``host:pid:token`` — unique per process, readable in ``connector status``."""
    return this_process().holder


class StateStore(LeaseMixin, JobMixin, TrackingMixin, AuditMixin, InstanceMixin, SyncMixin, KpiMixin,
                 SuppressionMixin):
    """Durable state of one connector instance (or several sharing one database).

    ``holder`` is who this process is in leases and step runs: by default
    ``<label>@<host>:<pid>:<token>``, unique per process (``label`` is only a name).
    """

    def __init__(
        self, url: str, *, holder: str = "", label: str = "", clock: Clock | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.url = normalize_url(url)
        self.identity: Identity = this_process(label)
        self.holder = holder or self.identity.holder
        self.clock = clock or utcnow
        try:
            self.engine = create_state_engine(self.url, timeout_seconds=timeout_seconds)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StateError(
                f"state database URL {hide_url_passwords(url)} is not usable: {type(exc).__name__}: "
                f"{hide_url_passwords(str(exc))}; check [state] url"
            ) from exc

    @classmethod
    def from_config(cls, config: Any, *, holder: str = "", clock: Clock | None = None) -> "StateStore":
        """The store of this process; ``[service] instance_id`` is its label, never its identity."""
        return cls(
            config.state_url(),
            holder=holder,
            label=config.service.instance_id,
            clock=clock,
            timeout_seconds=config.timeouts.sql_seconds,
        )

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------
    def migrate(self, revision: str = "head") -> str | None:
        """Bring the schema to ``revision`` (Alembic); returns the revision now applied."""
        from connector.state import migrations

        return migrations.upgrade(self.engine, revision)

    def schema_revision(self) -> str | None:
        from connector.state import migrations

        return migrations.current_revision(self.engine)

    def health(self) -> dict[str, Any]:
        """Reachable? Which backend and schema revision? Never raises."""
        from connector.state import migrations

        info: dict[str, Any] = {
            "reachable": False,
            "backend": self.backend,
            "url": self.safe_url,
            "revision": None,
            "head": migrations.head_revision(),
            "up_to_date": False,
            "error": "",
        }
        try:
            with self.engine.connect() as conn:
                conn.execution_options(cesp_readonly=True)
                conn.execute(sa.text("select 1"))
                info["reachable"] = True
                conn.rollback()
            info["revision"] = self.schema_revision()
        except (SQLAlchemyError, OSError) as exc:
            info["error"] = _short(exc)
            return info
        info["up_to_date"] = info["revision"] == info["head"]
        if not info["up_to_date"]:
            info["error"] = "schema is not at the latest revision; run `connector migrate -c FILE`"
        return info

    # -- meta ---------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._read() as c:
            return c.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str, conn: Any = None) -> None:
        with self._write(conn) as c:
            upsert(c, meta, {"key": key, "value": value}, ["key"])
