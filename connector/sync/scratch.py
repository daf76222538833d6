"""The run's scratch: the ESP side's changed subscribers, on local disk, for the length of one run.

The ESP's changes are read first (page by page) and kept here, so that each CRM page can
be matched with them by key without holding either side in memory: a full run of a
million subscribers costs disk, not RAM. It is a cache of one run, never state: a run
that dies leaves nothing another instance needs (the ESP watermark has not moved, so the
next run reads the same changes again).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from connector.models import EspSubscriberState, SubscriberStatus

IN_CHUNK = 500


class Scratch:
    def __init__(self, folder: Path | None = None) -> None:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="sync-", suffix=".db", dir=folder)
        os.close(handle)
        self.path = Path(name)
        self.db = sqlite3.connect(self.path, check_same_thread=False)  # the tables' threads share it
        self.lock = threading.Lock()
        self.db.executescript("""
            pragma journal_mode = off; pragma synchronous = off;
            create table esp (key text primary key, email text, status text, attributes text,
                              modified text, used integer not null default 0);
        """)

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, subscribers: Iterable[EspSubscriberState]) -> int:
        """Keep a page of ESP subscribers (a later copy of the same key replaces an earlier one)."""
        rows = [(s.subscriber_key, s.email, s.status.value if s.status else "", json.dumps(dict(s.attributes)),
                 s.modified.isoformat()) for s in subscribers]
        with self.lock:
            self._add(rows)
        return len(rows)

    def _add(self, rows: list[tuple]) -> None:
        self.db.executemany("insert or replace into esp (key, email, status, attributes, modified) "
                            "values (?, ?, ?, ?, ?)", rows)
        self.db.commit()

    def take(self, keys: Sequence[str]) -> dict[str, EspSubscriberState]:
        """The subscribers of these keys that the ESP changed; they are marked used."""
        found: dict[str, EspSubscriberState] = {}
        with self.lock:
            self._take(keys, found)
        return found

    def _take(self, keys: Sequence[str], found: dict[str, EspSubscriberState]) -> None:
        for start in range(0, len(keys), IN_CHUNK):
            chunk = list(keys[start:start + IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"select key, email, status, attributes, modified from esp "
                                       f"where key in ({marks})", chunk):
                found[row[0]] = _state(row)
            self.db.execute(f"update esp set used = 1 where key in ({marks})", chunk)
        self.db.commit()

    def unused(self, page: int = IN_CHUNK) -> Iterator[list[EspSubscriberState]]:
        """The subscribers no CRM page took, a page at a time (marked used as they go)."""
        while True:
            with self.lock:
                rows = self.db.execute("select key, email, status, attributes, modified from esp where used = 0 "
                                       "order by key limit ?", (page,)).fetchall()
                self.db.executemany("update esp set used = 1 where key = ?", [(r[0],) for r in rows])
                self.db.commit()
            if not rows:
                return
            yield [_state(r) for r in rows]

    def count(self) -> int:
        with self.lock:
            return int(self.db.execute("select count(*) from esp").fetchone()[0])


def _state(row: tuple) -> EspSubscriberState:
    key, email, status, attributes, modified = row
    try:
        known = SubscriberStatus(status) if status else None
    except ValueError:
        known = None
    return EspSubscriberState(key, email or "", known, json.loads(attributes), datetime.fromisoformat(modified))
