"""Adapters per worker thread: one CRM/ESP/SFTP/staging client per pool thread.

HTTP sessions, SOAP clients and SFTP channels are not shared between threads.
``AdapterPool.getter(role)`` is what a ``StepContext`` holds: calling it returns
the current thread's adapter, built on first use with ``<Class>.from_config``.
Implementations are imported lazily, so a build without one of them still runs
the other steps (the missing one raises ``AdapterUnavailable``).
"""

from __future__ import annotations

import importlib
import threading
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Mapping

import structlog

from connector.errors import ConnectorError

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps import StepContext

log = structlog.get_logger(__name__)

ADAPTER_CLASSES = {
    "crm": "connector.crm.dataverse:DataverseCrmClient",
    "esp": "connector.esp.marketing_cloud:MarketingCloudEspClient",
    "file_drop": "connector.transfer.sftp:SftpFileDrop",
    "staging": "connector.staging.sql:SqlStagingStore",
}


class AdapterUnavailable(ConnectorError):
    """The adapter's implementation is not installed in this build."""


def import_target(target: str, what: str, unavailable: type[Exception]) -> Any:
    """``"package.module:attr"`` -> the attribute; ``unavailable`` when it is not in this build."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise unavailable(f"the {what} ({module_name}) is not installed") from exc
        raise
    found = getattr(module, attr, None)
    if found is None:
        raise unavailable(f"the {what} {target} does not exist")
    return found


def load_adapter_factory(role: str) -> Callable[[Any], Any]:
    return import_target(ADAPTER_CLASSES[role], f"{role} adapter", AdapterUnavailable).from_config


class AdapterPool:
    """Builds adapters lazily, one per (thread, role); closes them all at shutdown."""

    def __init__(self, config: Any, factories: Mapping[str, Callable[[Any], Any]] | None = None) -> None:
        self.config = config
        self._factories = dict(factories or {})
        self._local = threading.local()
        self._lock = threading.Lock()
        self._built: list[tuple[str, Any]] = []

    def get(self, role: str) -> Any:
        cache: dict[str, Any] = self._local.__dict__.setdefault("adapters", {})
        adapter = cache.get(role)
        if adapter is None:
            factory = self._factories.get(role) or load_adapter_factory(role)
            adapter = factory(self.config)
            cache[role] = adapter
            with self._lock:
                self._built.append((role, adapter))
            log.debug("adapter_built", role=role, thread=threading.current_thread().name)
        return adapter

    def getter(self, role: str) -> Callable[[], Any]:
        return partial(self.get, role)

    def step_context(
        self, state: Any, *, stopping: threading.Event | None = None, run_id: str | None = None
    ) -> "StepContext":
        """A step's context over these adapters and ``state`` (the one wiring for the service,
        ``send-now`` and tests); a fresh run id unless one is given."""
        from connector.steps import StepContext

        return StepContext(
            config=self.config, state=state, crm=self.getter("crm"), esp=self.getter("esp"),
            file_drop=self.getter("file_drop"), staging=self.getter("staging"),
            stopping=stopping if stopping is not None else threading.Event(),
            run_id=run_id if run_id is not None else uuid.uuid4().hex, holder=state.holder,
        )

    def close_all(self) -> None:
        with self._lock:
            built, self._built = self._built, []
        for role, adapter in built:
            close = getattr(adapter, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - closing must go on for the others
                log.warning("adapter_close_failed", role=role, error=f"{type(exc).__name__}: {exc}")
