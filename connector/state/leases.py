"""Leases on named resources (``send:<id>``, ``tracking:<account>`` ...).

Vocabulary as in APScheduler: acquire / extend / release / reap abandoned.
A lease is safe between processes sharing one database: acquiring is one
conditional ``UPDATE ... WHERE resource = :r AND (expires_at < :now OR holder = :me)``
(steal an expired lease, or renew our own), and when no row exists one
``INSERT ... ON CONFLICT DO NOTHING``; the database decides who wins, never a
read-then-write in Python. Time comes from the store's clock (the holders'
clocks must agree to within a small fraction of the lease length).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from connector.state.base import StoreBase
from connector.state.engine import dialect_insert
from connector.state.schema import UtcDateTime, leases


class LeaseMixin(StoreBase):
    def acquire_lease(self, resource: str, seconds: float, conn: Connection | None = None) -> bool:
        """Take ``resource`` for ``seconds`` unless someone else holds an unexpired lease."""
        now = self.now()
        expires = now + timedelta(seconds=seconds)
        with self._write(conn) as c:
            taken = c.execute(
                sa.update(leases)
                .where(leases.c.resource == resource)
                .where(sa.or_(leases.c.expires_at < now, leases.c.holder == self.holder))
                .values(
                    holder=self.holder,
                    expires_at=expires,
                    acquired_at=sa.case((leases.c.holder == self.holder, leases.c.acquired_at), else_=sa.literal(now, UtcDateTime())),
                )
            ).rowcount
            if taken:
                return True
            row = {"resource": resource, "holder": self.holder, "acquired_at": now, "expires_at": expires}
            ins = dialect_insert(c, leases)
            if ins is not None:
                stmt = ins.values(**row).on_conflict_do_nothing(index_elements=["resource"])
                return c.execute(stmt.returning(leases.c.resource)).first() is not None
            try:
                with c.begin_nested():
                    c.execute(sa.insert(leases).values(**row))
            except IntegrityError:
                return False
            return True

    def extend_lease(self, resource: str, seconds: float, conn: Connection | None = None) -> bool:
        """Push our lease's expiry to now + ``seconds``; False if it is no longer ours."""
        with self._write(conn) as c:
            return bool(
                c.execute(
                    sa.update(leases)
                    .where(leases.c.resource == resource, leases.c.holder == self.holder)
                    .values(expires_at=self.now() + timedelta(seconds=seconds))
                ).rowcount
            )

    def release_lease(self, resource: str, conn: Connection | None = None) -> None:
        with self._write(conn) as c:
            c.execute(sa.delete(leases).where(leases.c.resource == resource, leases.c.holder == self.holder))

    def lease_holder(self, resource: str) -> str | None:
        """Who holds an unexpired lease on ``resource`` (None when free)."""
        with self._read() as c:
            return c.execute(
                sa.select(leases.c.holder).where(leases.c.resource == resource, leases.c.expires_at >= self.now())
            ).scalar()

    def reap_expired_leases(self) -> list[str]:
        """Delete abandoned (expired) leases of any holder; returns their resources."""
        now = self.now()
        with self._write(None) as c:
            expired = sa.delete(leases).where(leases.c.expires_at < now)
            if c.dialect.name in ("postgresql", "sqlite"):
                return sorted(c.execute(expired.returning(leases.c.resource)).scalars())
            names = list(c.execute(sa.select(leases.c.resource).where(leases.c.expires_at < now)).scalars())
            c.execute(expired)
            return sorted(names)

    def leases(self) -> list[dict]:
        with self._read() as c:
            rows = c.execute(sa.select(leases).order_by(leases.c.resource)).mappings().all()
        return [dict(r) for r in rows]
