"""A started ImportDefinition: read the file from the SFTP drop's Import folder, load subscribers.

Runs in a background thread: the run is ``New`` when started, ``Processing`` while
rows load, then ``Completed`` (row errors counted, ``AllowErrors``) or ``Error``
(file missing, unreadable, no SubscriberKey/EmailAddress column). Each bad row
(invalid or missing address, missing key) is counted in ``NumberErrors`` and kept
in ``run.row_errors`` for inspection.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from typing import TYPE_CHECKING, Iterator

import structlog

from connector.sandbox.marketing_cloud.records import ImportDefinitionRec, ImportRowError, ImportRunRec, SubscriberRec
from connector.sandbox.marketing_cloud.soap import Obj
from connector.sandbox.marketing_cloud.values import Result, as_int, error, find_definition, import_def_values, ok, valid_email

if TYPE_CHECKING:
    from connector.sandbox.marketing_cloud.store import EspStore

log = structlog.get_logger(__name__)

KEY_COLUMNS = ("subscriberkey", "subscriber key")
EMAIL_COLUMNS = ("emailaddress", "email address", "email")
STATUS_COLUMNS = ("status",)
CHUNK = 1000


def run_import(store: EspStore, definition: ImportDefinitionRec, run: ImportRunRec) -> None:
    time.sleep(store.import_delay)
    with store.lock:
        run.status, run.start = "Processing", store.clock.now()
    try:
        _load(store, definition, run)
    except ImportFailed as exc:
        with store.lock:
            run.status, run.message, run.end = "Error", str(exc), store.clock.now()
        log.info("esp_sandbox_import_failed", task=run.task_id, reason=str(exc))
        return
    time.sleep(store.import_delay / 2)
    with store.lock:
        run.status, run.end = "Completed", store.clock.now()
    log.info("esp_sandbox_import_done", task=run.task_id, rows=run.total, ok=run.ok, errors=run.errors)


class ImportFailed(Exception):
    pass


def _rows(definition: ImportDefinitionRec, handle: io.TextIOBase) -> Iterator[list[str]]:
    delimiter = definition.delimiter or ("\t" if definition.file_type == "TAB" else ",")
    return csv.reader(handle, delimiter=delimiter)


def _load(store: EspStore, definition: ImportDefinitionRec, run: ImportRunRec) -> None:
    path = store.import_root / "Import" / definition.file_spec
    if "/" in definition.file_spec or "\\" in definition.file_spec or not path.is_file():
        raise ImportFailed(f"File {definition.file_spec} was not found in the Import folder.")
    try:
        handle = path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFailed(f"File {definition.file_spec} could not be opened: {exc}") from exc
    with handle:
        try:
            rows = _rows(definition, handle)
            header = next(rows, None)
            if not header:
                raise ImportFailed(f"File {definition.file_spec} is empty.")
            columns = [h.strip() for h in header]
            lowered = [c.lower() for c in columns]
            key_col = next((i for i, c in enumerate(lowered) if c in KEY_COLUMNS), None)
            email_col = next((i for i, c in enumerate(lowered) if c in EMAIL_COLUMNS), None)
            status_col = next((i for i, c in enumerate(lowered) if c in STATUS_COLUMNS), None)
            if key_col is None or email_col is None:
                raise ImportFailed("The file needs SubscriberKey and EmailAddress columns in its header row.")
            attr_cols = [i for i in range(len(columns)) if i not in (key_col, email_col, status_col)]
            unknown = store.unknown_attributes(columns[i] for i in attr_cols)
            # a column that names no profile attribute of the account: every row is rejected, naming it
            rejected = ", ".join(f"'{c}'" for c in unknown)
            seen: set[str] = set()
            chunk: list[tuple[int, list[str]]] = []
            for line, row in enumerate(rows, start=2):
                if not row or row == [""]:
                    continue
                chunk.append((line, row))
                if len(chunk) >= CHUNK:
                    _apply(store, definition, run, chunk, columns, key_col, email_col, status_col, attr_cols, seen, rejected)
                    chunk = []
            _apply(store, definition, run, chunk, columns, key_col, email_col, status_col, attr_cols, seen, rejected)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFailed(f"File {definition.file_spec} is not a valid {definition.file_type} file: {exc}") from exc


def _apply(store: EspStore, definition: ImportDefinitionRec, run: ImportRunRec, chunk: list[tuple[int, list[str]]],
           columns: list[str], key_col: int, email_col: int, status_col: int | None, attr_cols: list[int],
           seen: set[str], rejected: str = "") -> None:
    with store.lock:
        members = store.lists[definition.list_id].members if definition.list_id in store.lists else {}
        now = store.clock.now()
        for line, row in chunk:
            run.total += 1
            if len(row) != len(columns):
                _row_error(run, line, "", f"Row has {len(row)} fields; the header has {len(columns)}.")
                continue
            key, email = row[key_col].strip(), row[email_col].strip()
            if rejected:
                _row_error(run, line, key, f"Column(s) {rejected} match no subscriber attribute of the account.")
                continue
            if not key:
                _row_error(run, line, key, "SubscriberKey is empty.")
                continue
            if not valid_email(email):
                _row_error(run, line, key, f"Invalid email address '{email}'.")
                continue
            bad = _bad_value(store, columns, attr_cols, row)
            if bad:
                _row_error(run, line, key, bad)
                continue
            if key in seen:
                run.duplicated += 1
            seen.add(key)
            sub = store.subscribers.get(key)
            if sub is None and definition.update_type == "UpdateButDoNotAdd":
                _row_error(run, line, key, "Subscriber does not exist and the import does not add subscribers.")
                continue
            if sub is None:
                sub = store.subscribers[key] = SubscriberRec(next(store._ids), key, email, "Active", {}, now, now)
            elif definition.update_type != "AddAndDoNotUpdate":
                sub.email, sub.modified = email, now
            else:
                run.ok += 1
                members.setdefault(key, "Active")
                continue
            if status_col is not None and row[status_col].strip() in ("Active", "Unsubscribed"):
                sub.status = row[status_col].strip()
            for i in attr_cols:
                sub.attributes[store.attribute(columns[i]).name] = row[i]
            members[key] = "Active"
            run.ok += 1


def _bad_value(store: EspStore, columns: list[str], attr_cols: list[int], row: list[str]) -> str:
    """The row error for the first value its attribute's type refuses (12004 InvalidDPV), or ''."""
    for i in attr_cols:
        attr = store.attribute(columns[i])
        if attr is not None and not attr.accepts(row[i]):
            return f"InvalidDPV: '{row[i]}' is not a valid {attr.type} value for attribute '{attr.name}'."
    return ""


def _row_error(run: ImportRunRec, line: int, key: str, message: str) -> None:
    run.errors += 1
    if len(run.row_errors) < 10_000:
        run.row_errors.append(ImportRowError(line, key, message))


class ImportOps:
    """ImportDefinition CRUD and Perform start (a mixin of ``EspStore``)."""

    def create_import_definition(self, obj: Obj) -> Result:
        key = obj.text("CustomerKey")
        echo = ("ImportDefinition", {"CustomerKey": key, "Name": obj.text("Name")})
        if not key:
            return error("CustomerKey Not Specified", 43000, echo)
        with self.lock:
            if key in self.import_definitions:
                return error(f"An ImportDefinition with CustomerKey '{key}' already exists.", 43030, echo)
            destination = obj.get("DestinationObject")
            if not isinstance(destination, Obj) or destination.type not in ("List", ""):
                return error("DestinationObject must be a List (by ID) in this account.", 43020, echo)
            lst = self.lists.get(as_int(destination.get("ID")))
            if lst is None:
                return error("The destination List was not found (ImportDefinition needs DestinationObject List ID).",
                             43010, echo)
            if not obj.text("FileSpec"):
                return error("FileSpec is required.", 43060, echo)
            location = obj.get("RetrieveFileTransferLocation")
            location_key = location.text("CustomerKey") if isinstance(location, Obj) else ""
            if location_key and location_key != "ExactTarget Enhanced FTP":
                return error(f"FileTransferLocation '{location_key}' was not found.", 43010, echo)
            now = self.clock.now()
            rec = ImportDefinitionRec(
                next(self._ids), key, str(uuid.uuid4()), obj.text("Name") or key, obj.text("Description"), lst.id,
                obj.text("FileSpec"), obj.text("FileType") or "CSV", obj.text("UpdateType") or "AddAndUpdate",
                obj.text("FieldMappingType") or "InferFromColumnHeadings",
                obj.text("AllowErrors", "true").lower() in ("true", "1"), obj.text("Delimiter"),
                as_int(obj.get("HeaderLines")) or 1, now, now,
            )
            self.import_definitions[key] = rec
            return ok("ImportDefinition created.", ("ImportDefinition", import_def_values(rec)), rec.id,
                      NewObjectID=rec.object_id)

    def find_import_definition(self, obj: Obj) -> ImportDefinitionRec | None:
        return find_definition(self.import_definitions, obj)

    def update_import_definition(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_import_definition(obj)
            if rec is None:
                return error("ImportDefinition Not Found", 43010, ("ImportDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            if obj.text("FileSpec"):
                rec.file_spec = obj.text("FileSpec")
            if obj.text("UpdateType"):
                rec.update_type = obj.text("UpdateType")
            rec.modified = self.clock.now()
            return ok("ImportDefinition updated.", ("ImportDefinition", import_def_values(rec)), rec.id)

    def delete_import_definition(self, obj: Obj) -> Result:
        with self.lock:
            rec = self.find_import_definition(obj)
            if rec is None:
                return error("ImportDefinition Not Found", 43010, ("ImportDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            del self.import_definitions[rec.customer_key]
            return ok("ImportDefinition deleted.", ("ImportDefinition", {"CustomerKey": rec.customer_key}))

    def visible_import_runs(self) -> list[ImportRunRec]:
        """The runs whose ImportResultsSummary Retrieve can see: ``latency.import_delay`` after the
        start ("information for a recently executed import may not be readily available").
        Call with the lock held."""
        horizon = self.clock.now_ts() - self.latency.import_delay
        return [r for r in self.import_runs.values() if r.created is None or r.created.timestamp() <= horizon]

    def start_import(self, obj: Obj) -> Result:
        with self.lock:
            definition = self.find_import_definition(obj)
            if definition is None:
                return error("ImportDefinition Not Found", 43010, ("ImportDefinition", {"CustomerKey": obj.text("CustomerKey")}))
            run = ImportRunRec(next(self._task_ids), definition.customer_key, definition.list_id, definition.file_spec,
                               created=self.clock.now())
            self.import_runs[run.task_id] = run
        self.spawn(lambda: run_import(self, definition, run), f"esp-import-{run.task_id}")
        task = {"StatusCode": "OK", "StatusMessage": "OK", "ID": str(run.task_id)}
        return ok("ImportDefinition started.", ("ImportDefinition", {"CustomerKey": definition.customer_key}),
                  Task=("TaskResult", task))

