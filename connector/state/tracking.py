"""Tracking state: watermarks, tracked sends, per-send counters, seen-event keys."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta
from typing import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.state.base import StoreBase
from connector.state.engine import dialect_insert, upsert
from connector.state.records import TrackedSend, Watermark
from connector.state.schema import (
    firsts_pending,
    meta,
    seen_events,
    seen_keys,
    send_counts,
    tracked_sends,
    watermarks,
)

SEEN_CHUNK = 1000
"""Keys per statement in ``mark_events_seen`` / ``unseen_events`` (one multi-row INSERT or IN list)."""
LEGACY_META = "seen_events_legacy_before"
"""Meta key: events older than this may be marked in the old ``seen_events`` table (migration 0005)."""

_TIME = struct.Struct(">Q")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)


def ordered_key(when: datetime, natural: str) -> bytes:
    """The stored seen key: 8 bytes of ``when`` (big-endian microseconds since 1970), then a
    16-byte BLAKE2b digest of the natural key.

    ``when`` orders the keys (an event's time; for a first-open / first-click key, its
    send's ``added_at``): a run's new keys are neighbours in the B-tree, and
    ``prune_seen_events`` deletes one key range.
    """
    micros = (when - _EPOCH) // _ONE_MICRO
    return _TIME.pack(max(0, micros)) + hashlib.blake2b(natural.encode("utf-8"), digest_size=16).digest()


def legacy_key_hash(natural: str) -> str:
    """The key of ``natural`` in the old ``seen_events`` table (before migration 0005)."""
    return hashlib.sha256(natural.encode("utf-8")).hexdigest()


def event_key_hash(key: str) -> str:  # the old name, kept for readers of the old table
    return legacy_key_hash(key)


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
    def legacy_seen_before(self) -> datetime | None:
        """Events older than this may be marked in the old ``seen_events`` table (None: it is empty)."""
        with self._read() as c:
            value = c.execute(sa.select(meta.c.value).where(meta.c.key == LEGACY_META)).scalar()
        return datetime.fromisoformat(value) if value else None

    def mark_events_seen(
        self, keys: Iterable[bytes], conn: Connection | None = None, legacy: Mapping[bytes, str] | None = None
    ) -> set[bytes]:
        """Record seen keys (``ordered_key``); return those not seen before (duplicates count once).

        ``legacy`` maps the keys that may have been marked before migration 0005 to their
        natural keys; those found in the old table count as seen. One multi-row
        ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per chunk of keys, so the database
        says which keys were new, even with another writer. Call it in the transaction
        that writes the events' effects, so a rollback forgets the keys too.
        """
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        with self._write(conn) as c:
            if legacy:
                old = _legacy_seen(c, {k: legacy[k] for k in wanted if k in legacy})
                wanted = [k for k in wanted if k not in old]
            new: set[bytes] = set()
            for start in range(0, len(wanted), SEEN_CHUNK):
                new.update(_insert_new(c, wanted[start : start + SEEN_CHUNK]))
        return new

    def unseen_events(
        self, keys: Iterable[bytes], conn: Connection | None = None, legacy: Mapping[bytes, str] | None = None
    ) -> set[bytes]:
        """The keys not yet marked seen, without marking them (read only); ``legacy`` as above."""
        wanted = list(dict.fromkeys(keys))
        found: set[bytes] = set()
        with self._read(conn) as c:
            for start in range(0, len(wanted), SEEN_CHUNK):
                found.update(_existing(c, wanted[start : start + SEEN_CHUNK]))
            if legacy:
                found |= _legacy_seen(c, {k: legacy[k] for k in wanted if k in legacy and k not in found})
        return {k for k in wanted if k not in found}

    def add_firsts_pending(
        self, job_id: str, counter: str, keys: Iterable[bytes], conn: Connection | None = None,
        legacy: Mapping[bytes, str] | None = None,
    ) -> None:
        """Append first-open / first-click keys (``ordered_key``) of counted events, to be merged
        into ``seen_keys`` by ``merge_firsts_pending`` (appending is sequential; inserting them
        one page at a time into the seen keys was not). ``legacy`` as for ``mark_events_seen``."""
        legacy = legacy or {}
        rows = [(str(job_id), counter, k, legacy_key_hash(legacy[k]) if k in legacy else "") for k in keys]
        if not rows:
            return
        with self._write(conn) as c:
            if _raw(c):
                mark = "?" if c.dialect.paramstyle == "qmark" else "%s"
                sql = f"INSERT INTO firsts_pending (job_id, counter, key, legacy_hash) VALUES ({', '.join([mark] * 4)})"
                _run_many(c, sql, rows)
            else:
                names = ("job_id", "counter", "key", "legacy_hash")
                c.execute(sa.insert(firsts_pending), [dict(zip(names, row)) for row in rows])

    def merge_firsts_pending(self, counter: str, conn: Connection | None = None) -> dict[str, int]:
        """Merge the pending keys of ``counter`` into ``seen_keys``, sorted, and add the number
        really new to each send's ``counter``; returns job id -> keys added (0 when none was new).

        A key already in ``seen_keys`` (or, for a send older than migration 0005, in the old
        ``seen_events``) is not new; a key pending twice counts once. In one transaction with
        the counts, so a crash merges nothing or all.
        """
        with self._write(conn) as c:
            pending = firsts_pending.c
            jobs = list(c.execute(sa.select(pending.job_id).where(pending.counter == counter).distinct()).scalars())
            added: dict[str, int] = {}
            for job in sorted(jobs):
                added[job] = n = _merge_firsts(c, job, counter)
                if n:
                    self.add_send_counts(job, {counter: n}, c)
            if jobs:
                c.execute(sa.delete(firsts_pending).where(pending.counter == counter))
        return added

    def prune_seen_events(self, older_than: datetime) -> int:
        """Forget keys ordered before ``older_than`` (events that old are beyond any re-read)."""
        with self._write(None) as c:
            pruned = c.execute(sa.delete(seen_keys).where(seen_keys.c.key < ordered_key(older_than, "")[:8])).rowcount
            if c.execute(sa.select(meta.c.value).where(meta.c.key == LEGACY_META)).first() is not None:
                pruned += c.execute(sa.delete(seen_events).where(seen_events.c.seen_at < older_than)).rowcount
                if c.execute(sa.select(seen_events.c.key_hash).limit(1)).first() is None:
                    c.execute(sa.delete(meta).where(meta.c.key == LEGACY_META))
            return pruned


def _raw(conn: Connection) -> bool:
    """PostgreSQL and SQLite: driver-level statements (no per-row SQLAlchemy work), ON CONFLICT."""
    return dialect_insert(conn, seen_keys) is not None


def _marks(conn: Connection, n: int, row: bool = False) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([f"({mark})" if row else mark] * n)


def _insert_new(conn: Connection, keys: list[bytes]) -> list[bytes]:
    if _raw(conn):  # the database skips the keys it has and returns the others
        sql = f"INSERT INTO seen_keys (key) VALUES {_marks(conn, len(keys), row=True)} ON CONFLICT (key) DO NOTHING RETURNING key"
        return [bytes(row[0]) for row in _fetch(conn, sql, keys)]
    existing = _existing(conn, keys)
    fresh = [k for k in keys if k not in existing]
    if fresh:
        conn.execute(sa.insert(seen_keys), [{"key": k} for k in fresh])
    return fresh


def _fetch(conn: Connection, sql: str, params: list[bytes]) -> list[tuple]:
    """Run ``sql`` on the driver's own cursor, in ``conn``'s transaction: the rows as the driver
    gives them (SQLAlchemy's result objects cost more than the statement for 2,500 keys)."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, tuple(params))
        return cursor.fetchall()
    except dbapi_error as exc:  # as SQLAlchemy would raise it, so the store reports a StateError
        raise sa.exc.DBAPIError.instance(sql, None, exc, dbapi_error) from exc
    finally:
        cursor.close()


def _run_many(conn: Connection, sql: str, rows: list[tuple]) -> None:
    """``executemany`` on the driver's own cursor, in ``conn``'s transaction (see ``_fetch``)."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql, rows)
    except dbapi_error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, dbapi_error) from exc
    finally:
        cursor.close()


_MERGE_FIRSTS = sa.text(
    "INSERT INTO seen_keys (key) SELECT DISTINCT p.key FROM firsts_pending p"
    " WHERE p.job_id = :job AND p.counter = :counter AND (p.legacy_hash = ''"
    " OR NOT EXISTS (SELECT 1 FROM seen_events s WHERE s.key_hash = p.legacy_hash))"
    " ORDER BY p.key ON CONFLICT (key) DO NOTHING"
)
"""SQLite and PostgreSQL: the database skips the keys it has (text: a Core INSERT ... SELECT on
PostgreSQL reports no rowcount)."""


def _merge_firsts(conn: Connection, job: str, counter: str) -> int:
    """INSERT the distinct pending keys of (job, counter) not seen yet, in key order; how many."""
    if _raw(conn):
        return max(0, conn.execute(_MERGE_FIRSTS, {"job": job, "counter": counter}).rowcount)
    p = firsts_pending.alias("p")
    known_before = sa.exists().where(seen_events.c.key_hash == p.c.legacy_hash)
    known = sa.exists().where(seen_keys.c.key == p.c.key)
    select = (
        sa.select(p.c.key)
        .where(p.c.job_id == job, p.c.counter == counter, sa.or_(p.c.legacy_hash == "", ~known_before), ~known)
        .distinct()
    )
    # counted first: not every driver reports the rowcount of an INSERT ... SELECT
    n = conn.execute(sa.select(sa.func.count()).select_from(select.subquery())).scalar_one()
    if n:
        conn.execute(sa.insert(seen_keys).from_select(["key"], select))
    return int(n)


def _existing(conn: Connection, keys: list[bytes]) -> set[bytes]:
    if not keys:
        return set()
    if _raw(conn):
        sql = f"SELECT key FROM seen_keys WHERE key IN ({_marks(conn, len(keys))})"
        return {bytes(row[0]) for row in _fetch(conn, sql, keys)}
    return {bytes(k) for k in conn.execute(sa.select(seen_keys.c.key).where(seen_keys.c.key.in_(keys))).scalars()}


def _legacy_seen(conn: Connection, naturals: Mapping[bytes, str]) -> set[bytes]:
    """Of these keys, the ones marked in the old ``seen_events`` table."""
    by_hash = {legacy_key_hash(natural): key for key, natural in naturals.items()}
    hashes = list(by_hash)
    found: set[bytes] = set()
    for start in range(0, len(hashes), SEEN_CHUNK):
        query = sa.select(seen_events.c.key_hash).where(seen_events.c.key_hash.in_(hashes[start : start + SEEN_CHUNK]))
        found.update(by_hash[h] for h in conn.execute(query).scalars())
    return found
