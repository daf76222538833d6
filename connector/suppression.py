"""The suppression list file, and the per-send work database that keeps memory flat.

A suppression file holds addresses that must never receive a send: one address a
line, or a CSV whose header names an ``email``/``emailaddress`` column. Blank
lines and lines starting with ``#`` are ignored. Addresses compare case-insensitively.

``SendWorkspace`` is a small SQLite file in the send's work folder. It holds the
keys already seen (de-duplication across targets at ten million recipients without
a Python set), the suppressed addresses, the skipped recipients and the resolve
checkpoint. Everything for one chunk of recipients is committed in one SQLite
transaction, so after a crash the send resumes exactly at the last chunk.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

from connector.errors import ConfigError
from connector.mapping import normalize_email
from connector.models import Skip
from connector.private import private_sqlite_file

EMAIL_HEADERS = ("email", "emailaddress", "email address", "emailaddress1", "e-mail")


def read_suppression_file(path: Path) -> Iterator[str]:
    """Normalized addresses of a suppression file, streamed."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the suppression list {path}: {exc.strerror}; fix [sends] suppression_file",
            section="sends",
            key="suppression_file",
        ) from exc
    with handle:
        first = handle.readline()
        header = csv_header(first, path, "sends", "suppression_file")
        if header is not None:
            delimiter, _names, column = header
            for row in csv.reader(handle, delimiter=delimiter):
                if len(row) > column and row[column].strip():
                    yield normalize_email(row[column])
            return
        for line in chain([first], handle):  # streamed: a list of every line would hold the file
            line = line.strip()
            if line and not line.startswith("#") and line.lower() not in EMAIL_HEADERS:
                yield normalize_email(line)


def csv_header(first: str, path: Path, section: str, key: str) -> tuple[str, list[str], int] | None:
    """(delimiter, lower-case column names, e-mail column) of a list file whose first line is a CSV
    header; None for a plain list. A header without an e-mail column is the config error of ``key``."""
    if "," not in first and ";" not in first:
        return None
    delimiter = ";" if first.count(";") > first.count(",") else ","
    names = [n.strip().lower() for n in next(csv.reader([first], delimiter=delimiter))]
    column = next((names.index(h) for h in EMAIL_HEADERS if h in names), None)
    if column is None:
        raise ConfigError(f"the suppression list {path} has no email column on line 1 (one of "
                          f"{', '.join(EMAIL_HEADERS)}); fix [{section}] {key}", section=section, key=key)
    return delimiter, names, column


@dataclass
class ResolveCheckpoint:
    """How far resolving got: everything before this point is written or skipped, and committed."""

    target_index: int = 0
    target_offset: int = 0
    open_seq: int = 1
    open_rows: int = 0
    open_size: int = 0
    resolved: int = 0
    written: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    done: bool = False

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())


WORK_DB_CACHE_KB = 8 * 1024
"""Page cache of the work database: bounded, so memory stays flat however large the send."""


def _digest(key: str) -> bytes:
    """16 bytes of BLAKE2b: compact on disk, no collision in any realistic send."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


class SendWorkspace:
    """The per-send SQLite work file (``work.db``)."""

    def __init__(self, path: Path) -> None:
        self.path = private_sqlite_file(path)  # owner-only, and so its -wal/-shm
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=normal")
        self.db.execute(f"pragma cache_size=-{WORK_DB_CACHE_KB}")
        self.db.executescript(
            """
            create table if not exists seen (k blob primary key) without rowid;
            create table if not exists suppressed (e text primary key) without rowid;
            create table if not exists skips (
                id integer primary key, tbl text, record_id text, email text, reason text, detail text);
            create table if not exists finished (seq integer primary key, rows integer, size integer);
            create table if not exists meta (k text primary key, v text);
            create table if not exists done (k blob primary key, s blob, met integer default 0) without rowid;
            create index if not exists done_s on done (s);
            """
        )
        self.db.execute("begin")
        self._suppression_empty: bool | None = None
        self._done_empty: bool | None = None

    def close(self) -> None:
        if self.db.in_transaction:
            self.db.execute("rollback")
        self.db.close()

    def __enter__(self) -> "SendWorkspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checkpoint ------------------------------------------------------------------
    def checkpoint(self) -> ResolveCheckpoint | None:
        row = self.db.execute("select v from meta where k = 'checkpoint'").fetchone()
        return ResolveCheckpoint(**json.loads(row[0])) if row else None

    def commit(self, checkpoint: ResolveCheckpoint) -> None:
        """Make every change since the last commit durable, together with the checkpoint."""
        self.db.execute(
            "insert or replace into meta (k, v) values ('checkpoint', ?)", (json.dumps(asdict(checkpoint)),)
        )
        self.db.execute("commit")
        self.db.execute("begin")

    # -- suppression -----------------------------------------------------------------
    def _no_suppression(self) -> bool:
        if self._suppression_empty is None:
            self._suppression_empty = self.db.execute("select 1 from suppressed limit 1").fetchone() is None
        return self._suppression_empty

    def load_suppression(self, addresses: Iterable[str]) -> int:
        self._suppression_empty = None
        before = self.db.execute("select count(*) from suppressed").fetchone()[0]
        self.db.executemany("insert or ignore into suppressed (e) values (?)", ((a,) for a in addresses))
        return self.db.execute("select count(*) from suppressed").fetchone()[0] - before

    def suppressed(self, emails: list[str]) -> set[str]:
        """Which of these normalized addresses are on the suppression list."""
        return set() if self._no_suppression() else set(self._present("suppressed", "e", emails))

    def _present(self, table: str, column: str, values: list) -> Iterator:
        """Those of ``values`` found in ``table`` (one query per 500 values)."""
        for start in range(0, len(values), 500):
            part = values[start : start + 500]
            marks = ",".join("?" * len(part))
            query = f"select {column} from {table} where {column} in ({marks})"
            yield from (row[0] for row in self.db.execute(query, part))

    # -- de-duplication --------------------------------------------------------------
    def seen_before(self, keys: list[str]) -> set[str]:
        """Which of these keys were recorded before (one query per 500 keys); records nothing."""
        digests = {_digest(k): k for k in keys}
        return {digests[d] for d in self._present("seen", "k", list(digests))}

    def record(self, keys: Iterable[str]) -> None:
        """Record keys as seen: in key order (B-tree writes stay local), 500 rows a statement."""
        digests = sorted(map(_digest, keys))
        for start in range(0, len(digests), 500):
            part = digests[start : start + 500]
            self.db.execute(f"insert or ignore into seen (k) values {','.join(['(?)'] * len(part))}", part)

    # -- skips and finished batches --------------------------------------------------
    def add_skips(self, skips: Iterable[Skip]) -> None:
        self.db.executemany(
            "insert into skips (tbl, record_id, email, reason, detail) values (?, ?, ?, ?, ?)",
            (
                (s.ref.table.value if s.ref else "", s.ref.id if s.ref else "", s.email or "", s.reason.value, s.detail)
                for s in skips
            ),
        )

    def iter_skips(self) -> Iterator[tuple[str, str, str, str, str]]:
        """(table, record id, email, reason, detail) of every skipped recipient, in order."""
        cursor = self.db.execute("select tbl, record_id, email, reason, detail from skips order by id")
        while rows := cursor.fetchmany(1000):
            yield from rows

    def add_finished(self, seq: int, rows: int, size: int) -> None:
        self.db.execute("insert or replace into finished (seq, rows, size) values (?, ?, ?)", (seq, rows, size))

    def finished(self) -> list[tuple[int, int, int]]:
        return list(self.db.execute("select seq, rows, size from finished order by seq"))

    # -- ownership and takeover ------------------------------------------------------
    def owner(self) -> str:
        """The token of the send attempt this work file belongs to ("" for a file of an older version)."""
        row = self.db.execute("select v from meta where k = 'owner'").fetchone()
        return row[0] if row else ""

    def set_owner(self, token: str) -> None:
        self.db.execute("insert or replace into meta (k, v) values ('owner', ?)", (token,))
        self.db.execute("commit")
        self.db.execute("begin")

    def load_done(self, pairs: Iterable[tuple[bytes, bytes]]) -> int:
        """(address, subscriber key) digests already handed over in batches at the ESP (a takeover):
        nobody among them is written again."""
        self._done_empty = None
        self.db.executemany("insert or ignore into done (k, s) values (?, ?)", pairs)
        return self.db.execute("select count(*) from done").fetchone()[0]

    def done_among(self, emails: list[str], keys: list[str]) -> set[int]:
        """Positions of the candidates (normalized address, subscriber key) already handed over: by
        address, or by subscriber key (the record's address changed since); those are marked met."""
        if self._done_empty is None:
            self._done_empty = self.db.execute("select 1 from done limit 1").fetchone() is None
        if self._done_empty:
            return set()
        by_email = set(self._present("done", "k", [_digest(e) for e in emails]))
        by_key = set(self._present("done", "s", [_digest(k) for k in keys]))
        hits = set()
        for i, (email, key) in enumerate(zip(emails, keys)):
            if _digest(email) in by_email:
                hits.add(i)
            elif _digest(key) in by_key:
                hits.add(i)
                self.db.execute("update done set met = 1 where s = ?", (_digest(key),))
        return hits

    def done_not_seen(self) -> int:
        """Handed-over recipients that resolving did not meet again (they left CRM meanwhile)."""
        return self.db.execute(
            "select count(*) from done where met = 0 and k not in (select k from seen)").fetchone()[0]


def address_digest(email: str) -> bytes:
    """The 16-byte digest of a normalized address, as kept in ``seen`` and ``done``."""
    return _digest(email)
