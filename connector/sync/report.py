"""The report of a test-mode or ``--dry-run`` run: one row per field that would change.

CSV (``.csv``) or JSON lines (``.json``, one object a line), by the file's suffix; written
as the run goes, so a report of a million rows costs no memory. Columns: table, record,
field, old, new, direction, rule, note.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from connector.private import open_private
from connector.sync.plan import Change

COLUMNS = ("table", "record", "field", "old", "new", "direction", "rule", "note")


@dataclass
class Report:
    path: Path
    handle: IO[str]
    rows: int = 0

    @classmethod
    def open(cls, path: Path) -> "Report":
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open_private(path, "w", encoding="utf-8", newline="")
        report = cls(path, handle)
        if not report.is_json:
            csv.writer(handle).writerow(COLUMNS)
        return report

    @property
    def is_json(self) -> bool:
        return self.path.suffix.lower() in (".json", ".jsonl")

    def write(self, change: Change) -> None:
        values = (change.table, change.record_id, change.field, change.old, change.new, change.direction,
                  change.rule, change.note)
        if self.is_json:
            self.handle.write(json.dumps(dict(zip(COLUMNS, values)), ensure_ascii=False) + "\n")
        else:
            csv.writer(self.handle).writerow(values)
        self.rows += 1

    def close(self) -> None:
        self.handle.close()
