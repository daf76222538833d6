"""Keep the Marketing Cloud sandbox's account across restarts (``<data_dir>/esp-state.json``).

Plain JSON, no pickle: records as dicts with ISO dates, event arrays as base64 bytes,
each send's recipient keys stored once. Written owner-only on ``stop()``, read by
``start_esp_sandbox`` when present, so a connector whose state database remembers
ESP list and job ids finds them again after the sandbox restarts. The simulated
clock resumes from where it stopped.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any

from connector.private import open_private
from connector.sandbox.marketing_cloud import records as rec
from connector.sandbox.marketing_cloud.dataext import DataExtensionRec, DEFieldRec, as_text, coerce
from connector.sandbox.marketing_cloud.events import EventBlock

STATE_FILE = "esp-state.json"
CREDENTIALS_FILE = "esp-credentials.json"
VERSION = 1

_TABLES = {
    "subscribers": (rec.SubscriberRec, "key"), "lists": (rec.ListRec, "id"), "emails": (rec.EmailRec, "id"),
    "send_classifications": (rec.SendClassificationRec, "customer_key"),
    "send_definitions": (rec.SendDefinitionRec, "customer_key"),
    "import_definitions": (rec.ImportDefinitionRec, "customer_key"), "import_runs": (rec.ImportRunRec, "task_id"),
    "attributes": (rec.AttributeRec, "name"),
}
_DATE_FIELDS = {"created", "modified", "unsubscribed", "send_date", "sent_date", "start", "end", "first_bounce"}


def write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open_private(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _b64(values: array | None) -> str | None:
    return None if values is None else base64.b64encode(values.tobytes()).decode("ascii")


def _array(kind: str, text: str | None) -> array | None:
    if text is None:
        return None
    out = array(kind)
    out.frombytes(base64.b64decode(text))
    return out


def save_store(store: Any, data_dir: Path) -> Path:
    """Write the store's objects, events and clock to ``data_dir/esp-state.json``."""
    with store.lock:
        keys_index: dict[int, int] = {}
        keys_tables: list[list[str]] = []
        blocks = []
        for block in store.blocks:
            ref = keys_index.setdefault(id(block.keys), len(keys_tables))
            if ref == len(keys_tables):
                keys_tables.append(list(block.keys))
            blocks.append({"obj_type": block.obj_type, "send_id": block.send_id, "list_id": block.list_id,
                           "keys": ref, "ts": _b64(block.ts), "idx": _b64(block.idx), "code": _b64(block.code),
                           "lag": _b64(block.lag), "max_lag": block.max_lag})
        state = {
            "version": VERSION, "now": store.clock.now_ts(), "seed": store.seed,
            "tables": {name: [_plain(r) for r in getattr(store, name).values()] for name in _TABLES},
            "sends": [_plain(dataclasses.replace(s, blocks=[])) for s in store.sends.values()],
            "keys": keys_tables, "blocks": blocks, "pending": list(store._pending_status),
            "data_extensions": [_data_extension(d) for d in store.data_extensions.values()],
        }
    path = Path(data_dir) / STATE_FILE
    write_private(path, json.dumps(state))
    return path


def _data_extension(de: Any) -> dict:
    """A data extension with its rows as text (the form a Create / Update writes them in)."""
    out = _plain(dataclasses.replace(de, rows={}))
    out["rows"] = [{name: as_text(value) for name, value in row.items() if value is not None}
                   for row in de.rows.values()]
    return out


def _load_data_extension(store: Any, data: dict) -> None:
    fields = [DEFieldRec(**f) for f in data.pop("fields")]
    rows = data.pop("rows")
    de = DataExtensionRec(fields=fields, rows={}, **{k: (datetime.fromisoformat(v) if k in _DATE_FIELDS and v
                                                        else v) for k, v in data.items()})
    store.data_extensions[de.customer_key] = de
    for row in rows:
        typed = {f.name: coerce(f, row[f.name]) for f in fields if f.name in row}
        key = tuple(typed.get(f.name) for f in de.primary_key) if de.primary_key else (len(de.rows),)
        de.rows[key] = typed


def _record(cls: type, data: dict) -> Any:
    values = {k: (datetime.fromisoformat(v) if k in _DATE_FIELDS and v else v) for k, v in data.items()}
    if cls is rec.ListRec:
        values["member_modified"] = {k: datetime.fromisoformat(v) for k, v in values.get("member_modified", {}).items()}
    if cls is rec.ImportRunRec:
        values["row_errors"] = [rec.ImportRowError(**e) for e in values.get("row_errors", [])]
    return cls(**values)


def load_store(store: Any, data_dir: Path) -> bool:
    """Fill a fresh store from ``data_dir/esp-state.json``; False when there is none."""
    path = Path(data_dir) / STATE_FILE
    if not path.exists():
        return False
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("version") != VERSION:
        return False
    with store.lock:
        for name, (cls, key) in _TABLES.items():
            if name not in state["tables"]:  # kept before the table existed: keep the fresh store's
                continue
            table = getattr(store, name)
            table.clear()
            for data in state["tables"][name]:
                item = _record(cls, data)
                table[getattr(item, key).casefold() if name == "attributes" else getattr(item, key)] = item
        keys_tables = state["keys"]
        store.blocks = [EventBlock.from_arrays(b["obj_type"], b["send_id"], b["list_id"], keys_tables[b["keys"]],
                                               _array("q", b["ts"]), _array("q", b["idx"]), _array("b", b["code"]))
                        for b in state["blocks"]]
        for block, data in zip(store.blocks, state["blocks"]):
            block.lag, block.max_lag = _array("H", data["lag"]), data["max_lag"]
        store.sends = {}
        for data in state["sends"]:
            send = _record(rec.SendRec, data)
            send.blocks = [b for b in store.blocks if b.send_id == send.id]
            store.sends[send.id] = send
        store._pending_status = [tuple(p) for p in state["pending"]]
        store.data_extensions.clear()
        for data in state.get("data_extensions", []):
            _load_data_extension(store, data)
        _restart_counters(store)
        store.clock = rec.SimClock(store.clock.speed, start=state["now"])
    return True


def _restart_counters(store: Any) -> None:
    ids = [r.id for table in ("subscribers", "lists", "emails", "send_classifications", "send_definitions",
                              "import_definitions", "data_extensions") for r in getattr(store, table).values()]
    store._ids = itertools.count(max(ids + [10_000]) + 1)
    store._send_ids = itertools.count(max(list(store.sends) + [40_000]) + 1)
    store._task_ids = itertools.count(max(list(store.import_runs) + [900_000]) + 1)


def load_credentials(data_dir: Path) -> dict | None:
    path = Path(data_dir) / CREDENTIALS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def save_credentials(data_dir: Path, creds: Any) -> None:
    write_private(Path(data_dir) / CREDENTIALS_FILE, json.dumps({
        "client_id": creds.client_id, "client_secret": creds.client_secret, "account_id": creds.account_id,
        "username": creds.username, "password": creds.password}))
