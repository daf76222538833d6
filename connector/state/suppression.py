"""The suppression list in the state database (``suppression_entries``): digests, never text.

A refresh (``connector.steps.suppression``) takes the next generation number
(``next_suppression_generation``), stores each chunk of entries it reads with it
(``store_suppression``, one transaction a chunk) and, once the whole source was read,
deletes the rows of older generations (``drop_suppression_except``). A refresh
that dies half-way leaves the old list plus what it had read: never fewer entries than
before. Sends ask per chunk of addresses (``suppression_matches``).
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.state.base import StoreBase
from connector.state.engine import upsert
from connector.state.schema import meta, suppression_entries

GENERATION_KEY = "suppression:generation"

SUPPRESSION_IN = 500
"""Digests per ``IN (...)`` (SQL Server takes at most 2,100 parameters a statement)."""


class SuppressionMixin(StoreBase):
    def store_suppression(self, entries: Sequence[tuple[bytes, str]], generation: int,
                          conn: Connection | None = None) -> int:
        """Store these (digest, kind) entries as read by ``generation``; the number new to the list."""
        unique = dict(entries)
        added = 0
        t = suppression_entries
        with self._write(conn) as c:
            digests = sorted(unique)  # in key order: B-tree writes stay local
            for start in range(0, len(digests), SUPPRESSION_IN):
                part = digests[start:start + SUPPRESSION_IN]
                known = set(c.execute(sa.select(t.c.digest).where(t.c.digest.in_(part))).scalars())
                if known:
                    c.execute(sa.update(t).where(t.c.digest.in_(list(known))).values(generation=generation))
                new = [{"digest": d, "kind": unique[d], "generation": generation} for d in part if d not in known]
                if new:
                    c.execute(sa.insert(t), new)
                added += len(new)
        return added

    def next_suppression_generation(self) -> int:
        """The number of a new refresh (committed at once: two refreshes never share one)."""
        with self._write(None) as c:
            current = c.execute(sa.select(meta.c.value).where(meta.c.key == GENERATION_KEY)).scalar()
            number = int(current or 0) + 1
            upsert(c, meta, {"key": GENERATION_KEY, "value": str(number)}, ["key"])
        return number

    def drop_suppression_except(self, generation: int, conn: Connection | None = None) -> int:
        """Delete the entries ``generation`` did not read (they left the list); how many."""
        with self._write(conn) as c:
            t = suppression_entries
            return c.execute(sa.delete(t).where(t.c.generation != generation)).rowcount or 0

    def suppression_counts(self, conn: Connection | None = None) -> dict[str, int]:
        """Entries on the list by kind (``{"address": n, "domain": m}``)."""
        t = suppression_entries
        with self._read(conn) as c:
            return {kind: n for kind, n in c.execute(sa.select(t.c.kind, sa.func.count()).group_by(t.c.kind))}

    def suppression_matches(self, digests: Sequence[bytes], conn: Connection | None = None) -> set[bytes]:
        """Those of these digests that are on the list."""
        t = suppression_entries
        found: set[bytes] = set()
        wanted = list(dict.fromkeys(digests))
        with self._read(conn) as c:
            for start in range(0, len(wanted), SUPPRESSION_IN):
                part = wanted[start:start + SUPPRESSION_IN]
                found.update(bytes(d) for d in c.execute(sa.select(t.c.digest).where(t.c.digest.in_(part))).scalars())
        return found
