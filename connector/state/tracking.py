"""Tracking state: watermarks, tracked sends, per-send counters, seen-event keys."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.state.base import StoreBase
from connector.state.engine import dialect_insert, upsert
from connector.state.records import TrackedSend, Watermark
from connector.state.schema import seen_events, send_counts, tracked_sends, watermarks

SEEN_CHUNK = 1000
"""Keys per executemany in ``mark_events_seen`` (SQLAlchemy splits it into multi-row INSERTs)."""


def event_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class TrackingMixin(StoreBase):
    # -- watermarks ---------------------------------------------------------
    def get_watermark(self, account: str, event_type: str, conn: Connection | None = None) -> datetime | None:
        query = sa.select(watermarks.c.value).where(
            watermarks.c.account == account, watermarks.c.event_type == event_type
        )
        with self._read(conn) as c:
            return c.execute(query).scalar()

    def set_watermark(self, account: str, event_type: str, value: datetime, conn: Connection | None = None) -> None:
        values = {"account": account, "event_type": event_type, "value": value, "updated_at": self.now()}
        with self._write(conn) as c:
            upsert(c, watermarks, values, ["account", "event_type"])

    def watermarks(self) -> list[Watermark]:
        query = sa.select(watermarks).order_by(watermarks.c.account, watermarks.c.event_type)
        with self._read() as c:
            return [Watermark(**dict(r)) for r in c.execute(query).mappings()]

    # -- tracked sends ------------------------------------------------------
    def add_tracked_send(
        self,
        account: str,
        job_id: str,
        request_id: str = "",
        campaign_id: str = "",
        name: str = "",
        conn: Connection | None = None,
    ) -> None:
        """Start (or keep) tracking ESP job ``job_id``; idempotent."""
        values = {
            "account": account,
            "job_id": str(job_id),
            "request_id": request_id or "",
            "campaign_id": campaign_id or "",
            "name": name or "",
            "active": True,
            "stopped_reason": "",
            "added_at": self.now(),
        }
        with self._write(conn) as c:
            upsert(c, tracked_sends, values, ["account", "job_id"], keep_on_update=["added_at"])

    def tracked_sends(self, account: str | None = None, active_only: bool = True) -> list[TrackedSend]:
        query = sa.select(tracked_sends).order_by(tracked_sends.c.added_at, tracked_sends.c.job_id)
        if account is not None:
            query = query.where(tracked_sends.c.account == account)
        if active_only:
            query = query.where(tracked_sends.c.active.is_(True))
        with self._read() as c:
            return [TrackedSend(**dict(r)) for r in c.execute(query).mappings()]

    def stop_tracking(self, job_id: str, reason: str, conn: Connection | None = None) -> None:
        with self._write(conn) as c:
            c.execute(
                sa.update(tracked_sends)
                .where(tracked_sends.c.job_id == str(job_id), tracked_sends.c.active.is_(True))
                .values(active=False, stopped_reason=reason, stopped_at=self.now())
            )

    # -- per-send counters --------------------------------------------------
    def add_send_counts(self, job_id: str, counts: Mapping[str, int], conn: Connection | None = None) -> None:
        """Add ``counts`` (counter name -> delta) to the send's totals, atomically."""
        with self._write(conn) as c:
            for counter, delta in sorted(counts.items()):
                if delta:
                    values = {"job_id": str(job_id), "counter": counter, "value": int(delta)}
                    upsert(c, send_counts, values, ["job_id", "counter"], increment=["value"])

    def send_counts(self, job_id: str, conn: Connection | None = None) -> dict[str, int]:
        query = sa.select(send_counts.c.counter, send_counts.c.value).where(send_counts.c.job_id == str(job_id))
        with self._read(conn) as c:
            return {counter: int(value) for counter, value in c.execute(query)}

    # -- exactly-once event keys --------------------------------------------
    def mark_events_seen(self, keys: Iterable[str], conn: Connection | None = None) -> set[str]:
        """Record natural event keys; return those not seen before (duplicates in ``keys`` count once).

        One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per chunk, so a page of
        2,500 events costs a handful of statements. Call it in the transaction
        that writes the events' effects, so a rollback forgets the keys too.
        """
        by_hash: dict[str, str] = {}
        for key in keys:
            by_hash.setdefault(event_key_hash(key), key)
        if not by_hash:
            return set()
        now = self.now()
        new: set[str] = set()
        hashes = list(by_hash)
        with self._write(conn) as c:
            for start in range(0, len(hashes), SEEN_CHUNK):
                chunk = hashes[start : start + SEEN_CHUNK]
                new.update(_insert_new(c, chunk, now))
        return {by_hash[h] for h in new}

    def unseen_events(self, keys: Iterable[str], conn: Connection | None = None) -> set[str]:
        """The keys not yet marked seen, without marking them (read only)."""
        by_hash = {event_key_hash(key): key for key in keys}
        hashes = list(by_hash)
        found: set[str] = set()
        with self._read(conn) as c:
            for start in range(0, len(hashes), SEEN_CHUNK):
                chunk = hashes[start : start + SEEN_CHUNK]
                query = sa.select(seen_events.c.key_hash).where(seen_events.c.key_hash.in_(chunk))
                found.update(c.execute(query).scalars())
        return {key for h, key in by_hash.items() if h not in found}

    def prune_seen_events(self, older_than: datetime) -> int:
        """Forget event keys first seen before ``older_than`` (beyond any possible re-read)."""
        with self._write(None) as c:
            return c.execute(sa.delete(seen_events).where(seen_events.c.seen_at < older_than)).rowcount


def _insert_new(conn: Connection, hashes: list[str], now: datetime) -> list[str]:
    rows = [{"key_hash": h, "seen_at": now} for h in hashes]
    ins = dialect_insert(conn, seen_events)
    if ins is not None:
        stmt = ins.on_conflict_do_nothing(index_elements=["key_hash"]).returning(seen_events.c.key_hash)
        return list(conn.execute(stmt, rows).scalars())  # "insertmanyvalues": a cached multi-row INSERT
    existing = set(
        conn.execute(sa.select(seen_events.c.key_hash).where(seen_events.c.key_hash.in_(hashes))).scalars()
    )
    fresh = [r for r in rows if r["key_hash"] not in existing]
    if fresh:
        conn.execute(sa.insert(seen_events), fresh)
    return [r["key_hash"] for r in fresh]

