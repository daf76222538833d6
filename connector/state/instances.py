"""Who is who: the identity of this process, and the registry of instances in the state database.

A lease held by "me" means this process, never a configured name: the holder of
every lease and step run is ``<label>@<host>:<pid>:<token>`` (a random token per
process), and ``[service] instance_id`` is only the label. Every service process
registers itself in ``instances`` (host, pid, version, started, last heartbeat) and
beats every ``HEARTBEAT_SECONDS``, so ``connector status`` lists the instances,
who holds what, and two live processes sharing one label (a service.ini copied to
two hosts), which each of them also logs as a warning.

A process on the same host (same boot and PID namespace, Linux) can tell whether
another process is alive. A restarted instance (same label) uses that to take over
at once what its dead predecessor held; everybody else waits for the lease to expire.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.state.base import StoreBase
from connector.state.engine import upsert
from connector.state.schema import instances, leases, step_runs

HEARTBEAT_SECONDS = 30
"""How often a running service writes its heartbeat into ``instances``."""

STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
"""An instance without a heartbeat for this long is not counted as alive."""

LABEL_MAX = 60


@dataclass(frozen=True)
class Identity:
    """This process: its label (``[service] instance_id``), host, pid and a random token."""

    label: str
    host: str
    pid: int
    token: str
    scope: str = ""  # boot id + PID namespace: where ``pid`` means the same process
    process_start: str = ""  # the kernel's start time of ``pid`` (guards against a reused pid)

    @property
    def holder(self) -> str:
        place = f"{self.host}:{self.pid}:{self.token}"
        return f"{self.label}@{place}" if self.label else place


def this_process(label: str = "") -> Identity:
    """A new identity for the running process (a fresh token on every call)."""
    pid = os.getpid()
    return Identity(label=(label or "")[:LABEL_MAX], host=socket.gethostname()[:100], pid=pid,
                    token=uuid.uuid4().hex[:12], scope=process_scope(), process_start=_start_time(pid))


def process_scope() -> str:
    """Boot id and PID namespace (Linux); "" where a pid cannot be checked from here."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"[:200]


def _start_time(pid: int) -> str:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot); "" when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


def is_dead(row: dict[str, Any], me: Identity) -> bool:
    """True only when ``row``'s process is certainly gone: same host scope, and its pid is not that process."""
    if not me.scope or row.get("scope") != me.scope or not row.get("process_start"):
        return False
    return _start_time(int(row["pid"])) != row["process_start"]


class InstanceMixin(StoreBase):
    identity: Identity

    def register_instance(self, version: str, conn: Connection | None = None) -> None:
        me, now = self.identity, self.now()
        values = {"holder": self.holder, "label": me.label, "host": me.host, "pid": me.pid, "token": me.token,
                  "scope": me.scope, "process_start": me.process_start, "version": version,
                  "started_at": now, "heartbeat_at": now, "stopped_at": None, "note": ""}
        with self._write(conn) as c:
            upsert(c, instances, values, ["holder"], keep_on_update=["started_at"])

    def heartbeat(self, conn: Connection | None = None) -> None:
        with self._write(conn) as c:
            c.execute(sa.update(instances).where(instances.c.holder == self.holder).values(heartbeat_at=self.now()))

    def unregister_instance(self, note: str = "stopped") -> None:
        with self._write(None) as c:
            c.execute(sa.update(instances).where(instances.c.holder == self.holder)
                      .values(stopped_at=self.now(), note=note))

    def instances(self, include_stopped: bool = False) -> list[dict[str, Any]]:
        query = sa.select(instances).order_by(instances.c.label, instances.c.started_at)
        if not include_stopped:
            query = query.where(instances.c.stopped_at.is_(None))
        with self._read() as c:
            return [dict(r) for r in c.execute(query).mappings()]

    def live_instances(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Instances not stopped whose last heartbeat is recent."""
        since = (now or self.now()) - timedelta(seconds=STALE_AFTER_SECONDS)
        return [row for row in self.instances() if row["heartbeat_at"] >= since]

    def label_twins(self) -> list[dict[str, Any]]:
        """Other live processes that use this process's label (a copied service.ini)."""
        me = self.identity
        return [row for row in self.live_instances() if row["label"] == me.label and row["holder"] != self.holder]

    def take_over_dead_predecessors(self) -> list[str]:
        """Earlier processes of this instance (same label) on this host that are gone: their leases are
        released, their unfinished step runs marked interrupted, their rows marked stopped. Returns them."""
        me = self.identity
        dead = [row["holder"] for row in self.instances() if row["label"] == me.label
                and row["holder"] != self.holder and is_dead(row, me)]
        if not dead:
            return []
        with self._write(None) as c:
            c.execute(sa.delete(leases).where(leases.c.holder.in_(dead)))
            c.execute(sa.update(step_runs).where(step_runs.c.holder.in_(dead), step_runs.c.outcome == "running")
                      .values(outcome="interrupted", finished_at=self.now(),
                              message="the process ended before the run finished"))
            c.execute(sa.update(instances).where(instances.c.holder.in_(dead))
                      .values(stopped_at=self.now(), note=f"found dead by {self.holder}"))
        return dead

    def interrupt_unregistered_runs(self, message: str) -> int:
        """Unfinished runs of processes from before the registry: holder = this label, or (no label)
        ``<this host>:...``. A registered holder is never touched here."""
        me = self.identity
        whose = (step_runs.c.holder == me.label) if me.label else step_runs.c.holder.startswith(f"{me.host}:",
                                                                                              autoescape=True)
        registered = sa.select(instances.c.holder)
        with self._write(None) as c:
            return c.execute(
                sa.update(step_runs)
                .where(whose, step_runs.c.outcome == "running", step_runs.c.holder.not_in(registered))
                .values(outcome="interrupted", finished_at=self.now(), message=message)
            ).rowcount

    def prune_instances(self, older_than: datetime) -> int:
        """Forget instances stopped, or silent, since before ``older_than``."""
        with self._write(None) as c:
            silent = sa.or_(instances.c.stopped_at < older_than, instances.c.heartbeat_at < older_than)
            return c.execute(sa.delete(instances).where(silent)).rowcount
