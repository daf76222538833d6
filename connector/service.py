"""The service loop: one APScheduler executor (one thread) per step, two-stage shutdown.

::

    BackgroundScheduler
    ├─ executor "sends"    1 thread -> pool of [sends] workers     every [sends] poll_minutes
    ├─ executor "imports"  1 thread -> pool of [imports] workers   every [imports] poll_seconds
    ├─ executor "tracking" 1 thread -> pool of [tracking] workers  every [tracking] poll_minutes
    ├─ executor "sync"     1 thread -> pool of [sync] workers      every [sync] poll_minutes
    │                                  (only with [sync.<table>] rules)
    ├─ executor "emails"   1 thread                                every [emails] refresh_minutes
    │                                  (the ESP's e-mail catalogue into CRM's e-mail picker; 0 = off)
    ├─ executor "kpi"      1 thread (one load at a time)          every [kpi] poll_minutes, if set
    └─ executor "suppression" 1 thread                            every [suppression] refresh_minutes, if set

A step run works on its items (send requests, importing sends, tracking streams) in
its own process-lifetime pool of ``[<step>] workers`` threads (``connector.steps.workers``).

Each job has ``max_instances=1`` (a step never overlaps itself) and
``coalesce=True`` (missed runs collapse into one), and runs first right at start.
Every run gets a run id, is recorded in ``step_runs`` (outcome, counts, last
error) and binds ``step``/``run`` to the log context. Adapters are built per
worker thread (``connector.runtime.AdapterPool``). A step module or adapter that
does not exist yet is logged once and recorded as "not available".

Shutdown (``stop()``): set ``stopping`` (steps stop claiming new work), stop
scheduling, wait up to ``[service] drain_seconds`` for in-flight runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor as FuturesPool
from concurrent.futures import wait
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from connector.errors import ConnectorError, ShutdownRequested, StateError
from connector.runtime import AdapterPool, AdapterUnavailable, import_target
from connector import __version__
from connector.state.audit import OUTCOME_NOT_AVAILABLE
from connector.state.instances import HEARTBEAT_SECONDS
from connector.state.store import StateStore
from connector.steps import StepContext, StepOutcome

log = structlog.get_logger(__name__)

StepFunc = Callable[[StepContext], "StepOutcome | None"]

STEP_RUNS_KEEP_DAYS = 30
"""Step-run history kept for ``connector status`` (imports alone log ~2,900 runs a day)."""

MAINTENANCE_MINUTES = 60
"""How often the service reaps abandoned leases and prunes old step runs besides the steps' own ticks."""

INSTANCES_KEEP_DAYS = 7
"""Instances stopped (or silent) for longer than this leave the registry."""

STEP_FUNCTIONS = {
    "sends": "connector.steps.send.step:run_sends",
    "imports": "connector.steps.send.step:run_imports",
    "tracking": "connector.steps.tracking:run_tracking",
    "sync": "connector.sync.engine:run_sync",
    "emails": "connector.steps.emails:run_email_refresh",
}

OPTIONAL_STEPS = {
    "kpi": "connector.steps.kpi:run_kpi",
    "suppression": "connector.steps.suppression:run_suppression_refresh",
}
"""Steps the service runs only when configured (``[kpi] poll_minutes`` > 0 with a source;
``[suppression] refresh_minutes`` > 0 with a file or source_url)."""


class StepUnavailable(ConnectorError):
    """The step's module or function is not installed in this build."""


def step_intervals(config: Any) -> dict[str, float]:
    """Seconds between runs of each step, from the config."""
    return {
        "sends": config.sends.poll_minutes * 60.0,
        "imports": float(config.imports.poll_seconds),
        "tracking": config.tracking.poll_minutes * 60.0,
        "sync": config.sync.poll_minutes * 60.0,
        "emails": config.emails.refresh_minutes * 60.0,
        "kpi": config.kpi.poll_minutes * 60.0 if config.kpi.scheduled else 0.0,  # 0: not scheduled
        "suppression": config.suppression.refresh_minutes * 60.0 if config.suppression.scheduled else 0.0,
    }


def step_workers(config: Any) -> dict[str, int]:
    return {"sends": config.sends.workers, "imports": config.imports.workers, "tracking": config.tracking.workers,
            "sync": config.sync.workers, "emails": 1,
            "kpi": 1, "suppression": 1}  # one load at a time; its CRM writes go through the organization's batch pool


def configured_steps(config: Any) -> dict[str, str]:
    """The steps this config runs: ``sync`` only when a ``[sync.<table>]`` section has rules, ``emails``
    unless ``[emails] refresh_minutes`` is 0, ``kpi`` only when ``[kpi] poll_minutes`` schedules it."""
    steps = {name: target for name, target in STEP_FUNCTIONS.items()
             if (name != "sync" or any(getattr(config, "sync_rules", {}).values()))
             and (name != "emails" or config.emails.refresh_minutes > 0)}
    if config.kpi.scheduled:
        steps["kpi"] = OPTIONAL_STEPS["kpi"]
    if config.suppression.scheduled:
        steps["suppression"] = OPTIONAL_STEPS["suppression"]
    return steps


def load_step(target: str) -> StepFunc:
    return import_target(target, "step", StepUnavailable)


class Service:
    """The daemon: scheduler, pools, step runs, draining."""

    def __init__(
        self,
        config: Any,
        *,
        store: StateStore | None = None,
        steps: Mapping[str, StepFunc | str] | None = None,
        adapters: Mapping[str, Callable[[Any], Any]] | None = None,
    ) -> None:
        self.config = config
        self._own_store = store is None
        self.store = store or StateStore.from_config(config)
        self.steps: dict[str, StepFunc | str] = dict(configured_steps(config) if steps is None else steps)
        self.adapters = AdapterPool(config, adapters)
        self.stopping = threading.Event()
        self.scheduler: BackgroundScheduler | None = None
        self._inflight = 0
        self._cond = threading.Condition()
        self._unavailable: set[str] = set()
        self._tracking_key_ready = False  # once Active, a key stays so: asked until then, once a run
        self._closed = False
        self._recovered = False
        self._registered = False
        self._twins_reported: set[str] = set()

    # -- building -------------------------------------------------------------
    def build_scheduler(self) -> BackgroundScheduler:
        intervals = step_intervals(self.config)
        executors = {  # one thread: a step never overlaps itself; its items go to its workers pool
            name: ThreadPoolExecutor(1, pool_kwargs={"thread_name_prefix": f"step-{name}"})
            for name in self.steps
        }
        executors["default"] = ThreadPoolExecutor(1, pool_kwargs={"thread_name_prefix": "maintenance"})
        executors["heartbeat"] = ThreadPoolExecutor(1, pool_kwargs={"thread_name_prefix": "heartbeat"})
        scheduler = BackgroundScheduler(executors=executors, timezone=timezone.utc)
        now = datetime.now(timezone.utc)
        for name in self.steps:
            seconds = intervals.get(name, 60.0)
            scheduler.add_job(
                self.run_step,
                IntervalTrigger(seconds=seconds, timezone=timezone.utc),
                args=[name],
                id=name,
                name=f"step {name}",
                executor=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(30, int(seconds)),
                next_run_time=now,
            )
        scheduler.add_job(
            self.beat,
            IntervalTrigger(seconds=HEARTBEAT_SECONDS, timezone=timezone.utc),
            id="heartbeat",
            name="heartbeat",
            executor="heartbeat",
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            self.maintain,
            IntervalTrigger(minutes=MAINTENANCE_MINUTES, timezone=timezone.utc),
            id="maintenance",
            name="maintenance",
            max_instances=1,
            coalesce=True,
            next_run_time=now,
        )
        return scheduler

    def maintain(self) -> None:
        """Reap abandoned leases and prune old step runs (never raises)."""
        if self.stopping.is_set():
            return
        self._reap_leases()
        try:
            self.store.prune_instances(self.store.now() - timedelta(days=INSTANCES_KEEP_DAYS))
            pruned = self.store.prune_step_runs(self.store.now() - timedelta(days=STEP_RUNS_KEEP_DAYS))
        except StateError as exc:
            log.warning("step_runs_pruning_failed", error=str(exc))
            return
        if pruned:
            log.info("step_runs_pruned", count=pruned, keep_days=STEP_RUNS_KEEP_DAYS)

    def beat(self) -> None:
        """Heartbeat into the instance registry, and report live twins of our label (never raises)."""
        try:
            self.store.heartbeat()
            twins = self.store.label_twins()
        except StateError as exc:
            log.warning("heartbeat_failed", error=str(exc))
            return
        for twin in twins:
            if twin["holder"] not in self._twins_reported:
                self._twins_reported.add(twin["holder"])
                log.warning("instance_label_shared", label=self.store.identity.label, other=twin["holder"],
                            other_host=twin["host"], other_pid=twin["pid"],
                            reason="another live process uses this [service] instance_id: leases keep the two "
                                   "apart, but give each instance its own instance_id so logs and status can")

    # -- life cycle -------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler; the first run of every step happens at once."""
        if self.stopping.is_set():
            return
        self._recover()
        self.scheduler = self.build_scheduler()
        self.scheduler.start()
        log.info(
            "service_started",
            holder=self.store.holder,
            steps=sorted(self.steps),
            intervals=step_intervals(self.config),
            workers=step_workers(self.config),
        )

    def request_stop(self) -> None:
        """First signal: no new work; in-flight runs go on and see ``ctx.stopping``."""
        first = not self.stopping.is_set()
        self.stopping.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if first:
            log.info("service_stopping", in_flight=self.in_flight)

    def stop(self, drain_seconds: float | None = None) -> bool:
        """Stop and wait up to ``drain_seconds`` for in-flight runs; True when all finished."""
        if drain_seconds is None:
            drain_seconds = float(self.config.service.drain_seconds)
        self.request_stop()
        drained = self.wait_idle(drain_seconds)
        if drained:
            log.info("service_stopped", drained=True)
            self.close()
        else:
            log.warning(
                "service_drain_timeout",
                in_flight=self.in_flight,
                drain_seconds=drain_seconds,
                reason="in-flight work is left to the next start; its leases expire",
            )
        return drained

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._registered:
            try:
                self.store.unregister_instance()
            except StateError as exc:
                log.warning("instance_not_unregistered", error=str(exc))
        self.adapters.close_all()
        if self._own_store:
            self.store.close()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._inflight

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def run_once(self, drain_seconds: float | None = None) -> bool | None:
        """Each step once, in its own pool, concurrently.

        True when every run succeeded (a step not available in this build does not
        count as a failure), False when one failed, None when a stop was requested
        and the runs did not finish within ``drain_seconds`` (threads left running).
        """
        if drain_seconds is None:
            drain_seconds = float(self.config.service.drain_seconds)
        self._recover()
        pools = {name: FuturesPool(1, thread_name_prefix=f"step-{name}") for name in self.steps}
        futures = [pool.submit(self.run_step, name) for name, pool in pools.items()]
        deadline: float | None = None
        while wait(futures, timeout=0.2).not_done:
            if self.stopping.is_set():
                deadline = deadline or time.monotonic() + drain_seconds
                if time.monotonic() > deadline:
                    log.warning("service_drain_timeout", in_flight=self.in_flight, drain_seconds=drain_seconds)
                    for pool in pools.values():
                        pool.shutdown(wait=False)
                    return None
        for pool in pools.values():
            pool.shutdown(wait=True)
        outcomes = [f.result() for f in futures]
        return all(o.ok or o.message == OUTCOME_NOT_AVAILABLE for o in outcomes)

    def _recover(self) -> None:
        """Register this process; take over what dead earlier processes of this instance held.

        Runs left "running" by this holder, by a dead predecessor (same label, same host,
        its pid gone) or by a pre-registry process of this label/host are interrupted.
        """
        if self._recovered:
            return
        self._recovered = True
        try:
            self.store.register_instance(__version__)
            self._registered = True
            dead = self.store.take_over_dead_predecessors()
            if dead:
                log.warning("instance_predecessors_taken_over", holders=dead, count=len(dead))
            self.store.interrupt_step_runs("the process ended before the run finished")
            self.store.interrupt_unregistered_runs("the process ended before the run finished")
        except StateError as exc:
            log.warning("step_runs_recovery_failed", error=str(exc))
        self.beat()

    # -- one run ---------------------------------------------------------------
    def run_step(self, name: str) -> StepOutcome:
        """One run of step ``name``: recorded, logged, never raising (but for a hard stop)."""
        if self.stopping.is_set():
            return StepOutcome(ok=True, message="not started: the service is stopping")
        with self._cond:
            self._inflight += 1
        try:
            run_id = uuid.uuid4().hex
            with structlog.contextvars.bound_contextvars(step=name, run=run_id):
                return self._run(name, run_id)
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def _run(self, name: str, run_id: str) -> StepOutcome:
        try:
            func = self._step_function(name)
        except StepUnavailable as exc:
            return self._not_available(name, run_id, str(exc))
        try:
            self.store.start_step_run(name, run_id)
        except StateError as exc:
            log.error("step_run_not_recorded", error=str(exc))
            return StepOutcome(ok=False, message=str(exc))
        self._reap_leases()
        ctx = self._context(run_id)
        started = time.monotonic()
        log.info("step_started")
        try:
            refused = self._not_ready(name, ctx)
            outcome = refused or func(ctx) or StepOutcome()
        except ShutdownRequested:
            raise
        except AdapterUnavailable as exc:
            self._finish(run_id, StepOutcome(ok=False, message=str(exc)), label=OUTCOME_NOT_AVAILABLE)
            self._log_unavailable(name, str(exc))
            return StepOutcome(ok=False, message=OUTCOME_NOT_AVAILABLE)
        except ConnectorError as exc:  # an error we raised on purpose: its message says it all
            log.error("step_failed", error=f"{type(exc).__name__}: {exc}")
            outcome = StepOutcome(ok=False, message=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a step failure must not stop the service
            log.exception("step_failed", error=f"{type(exc).__name__}: {exc}")
            outcome = StepOutcome(ok=False, message=f"{type(exc).__name__}: {exc}")
        duration_ms = int((time.monotonic() - started) * 1000)
        self._finish(run_id, outcome)
        log.info("step_finished", ok=outcome.ok, count=outcome.processed, duration_ms=duration_ms)
        return outcome

    def _not_ready(self, name: str, ctx: StepContext) -> StepOutcome | None:
        """Tracking writes campaign responses by an alternate key: not before the key is Active."""
        if name != "tracking" or self._tracking_key_ready or self.config.tracking.mode not in ("responders", "all"):
            return None
        try:
            probe = getattr(ctx.crm(), "tracking_key_status", None)  # CrmClient has it; a bare stand-in may not
            status, key = probe() if probe is not None else ("Active", "")
        except ConnectorError:  # no CRM, or it cannot be asked now: the step itself reports that
            return None
        if status == "Active":
            self._tracking_key_ready = True
            return None
        what = {"Missing": "does not exist: run `connector crm-setup -c service.ini`",
                "Failed": "is Failed (rows hold duplicate tracking keys): `connector crm-setup -c service.ini`"
                          " lists them and reactivates the key once they are cleaned up"}.get(
            status, f"is {status}: Dataverse is still building its index; `connector crm-setup -c service.ini`"
                    " shows its progress")
        message = (f"tracking not started: the alternate key {key} that campaign responses are written by {what}."
                   " The other steps go on; tracking starts by itself once the key is Active")
        log.error("step_refused", reason=message)
        return StepOutcome(ok=False, message=message)

    def _finish(self, run_id: str, outcome: StepOutcome, label: str | None = None) -> None:
        try:
            self.store.finish_step_run(
                run_id, outcome.ok, outcome.processed, outcome.message, outcome.details, outcome=label
            )
        except StateError as exc:
            log.error("step_run_not_recorded", error=str(exc))

    def _step_function(self, name: str) -> StepFunc:
        target = self.steps[name]
        if isinstance(target, str):
            return load_step(target)
        return target

    def _context(self, run_id: str) -> StepContext:
        return self.adapters.step_context(self.store, stopping=self.stopping, run_id=run_id)

    def _not_available(self, name: str, run_id: str, reason: str) -> StepOutcome:
        try:
            self.store.start_step_run(name, run_id)
            self.store.finish_step_run(run_id, False, 0, reason, outcome=OUTCOME_NOT_AVAILABLE)
        except StateError as exc:
            log.error("step_run_not_recorded", error=str(exc))
        self._log_unavailable(name, reason)
        return StepOutcome(ok=False, message=OUTCOME_NOT_AVAILABLE)

    def _log_unavailable(self, name: str, reason: str) -> None:
        if name not in self._unavailable:
            self._unavailable.add(name)
            log.warning("step_not_available", reason=reason)

    def _reap_leases(self) -> None:
        try:
            reaped = self.store.reap_expired_leases()
        except StateError as exc:
            log.warning("lease_reaping_failed", error=str(exc))
            return
        if reaped:
            log.warning("leases_reaped", resources=reaped, count=len(reaped))


def next_run(last_started: datetime | None, interval_seconds: float, now: datetime) -> datetime:
    """When a step runs next, from its last start (a missed run is due now)."""
    if last_started is None:
        return now
    return max(now, last_started + timedelta(seconds=interval_seconds))
