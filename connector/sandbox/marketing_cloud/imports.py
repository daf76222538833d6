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
from typing import Iterator

import structlog

from connector.sandbox.marketing_cloud.records import ImportDefinitionRec, ImportRowError, ImportRunRec, SubscriberRec
from connector.sandbox.marketing_cloud.store import EspStore, valid_email

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
            seen: set[str] = set()
            chunk: list[tuple[int, list[str]]] = []
            for line, row in enumerate(rows, start=2):
                if not row or row == [""]:
                    continue
                chunk.append((line, row))
                if len(chunk) >= CHUNK:
                    _apply(store, definition, run, chunk, columns, key_col, email_col, status_col, attr_cols, seen)
                    chunk = []
            _apply(store, definition, run, chunk, columns, key_col, email_col, status_col, attr_cols, seen)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFailed(f"File {definition.file_spec} is not a valid {definition.file_type} file: {exc}") from exc


def _apply(store: EspStore, definition: ImportDefinitionRec, run: ImportRunRec, chunk: list[tuple[int, list[str]]],
           columns: list[str], key_col: int, email_col: int, status_col: int | None, attr_cols: list[int],
           seen: set[str]) -> None:
    with store.lock:
        members = store.lists[definition.list_id].members if definition.list_id in store.lists else {}
        now = store.clock.now()
        for line, row in chunk:
            run.total += 1
            if len(row) != len(columns):
                _row_error(run, line, "", f"Row has {len(row)} fields; the header has {len(columns)}.")
                continue
            key, email = row[key_col].strip(), row[email_col].strip()
            if not key:
                _row_error(run, line, key, "SubscriberKey is empty.")
                continue
            if not valid_email(email):
                _row_error(run, line, key, f"Invalid email address '{email}'.")
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
                sub.attributes[columns[i]] = row[i]
            members[key] = "Active"
            run.ok += 1


def _row_error(run: ImportRunRec, line: int, key: str, message: str) -> None:
    run.errors += 1
    if len(run.row_errors) < 10_000:
        run.row_errors.append(ImportRowError(line, key, message))
