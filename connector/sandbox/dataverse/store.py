"""Storage of the Dataverse sandbox: SQLite (in memory or in a file), thread-safe.

One SQL table per Dataverse table (``e_<logicalname>``) with one column per
attribute; lookups keep the target id in ``<name>`` and the target table in
``<name>__type``. Every write stamps a global, increasing ``versionnumber`` (the
ETag and the change-tracking clock); deletions are remembered in ``_deleted`` so
change tracking can report them. Many-to-many links other than list membership go
to ``_assoc``; list membership is the ``listmember`` table itself, as in Dataverse.
The schema (standard tables plus customizations made through the metadata API) is
kept in ``_meta`` so a file-backed organization survives a restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from connector.private import private_sqlite_file
from connector.sandbox.dataverse.annotations import (
    ALL, FORMATTED, LOOKUP_TABLE, Annotations, formatted_date, formatted_number,
)
from connector.sandbox.dataverse.schema import (
    FLOAT_TYPES, INT_TYPES, LOOKUP_TYPES, MANY_TO_MANY, STRING_TYPES, Attribute, Entity, Key, standard_entities,
)


class StoreError(Exception):
    """A store-level failure the Web API layer turns into a Dataverse error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def utcnow_text() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_text(text: str) -> str:
    """An ISO 8601 date-time as Dataverse's UTC wire text (no offset means UTC; ValueError if unreadable)."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sql_type(attr: Attribute) -> str:
    if attr.type in INT_TYPES or attr.type == "Boolean":
        return "INTEGER"
    if attr.type in FLOAT_TYPES:
        return "REAL"
    return "TEXT"


def quote_ident(name: str) -> str:
    """A SQLite identifier in double quotes (also for the other sandbox query modules)."""
    return '"' + name.replace('"', '""') + '"'


_q = quote_ident


class Schema:
    """The tables the organization has right now (standard + customizations)."""

    def __init__(self) -> None:
        self.entities: dict[str, Entity] = standard_entities()
        self.customizations: list[dict] = []
        # N:N relationships: name -> (entity1, entity2, intersect); the standard ones and those
        # created through POST RelationshipDefinitions (ManyToManyRelationshipMetadata)
        self.many_to_many: dict[str, tuple[str, str, str]] = dict(MANY_TO_MANY)

    def entity(self, logical_name: str) -> Entity | None:
        return self.entities.get(logical_name)

    def by_set(self, entity_set: str) -> Entity | None:
        for e in self.entities.values():
            if e.entity_set == entity_set:
                return e
        return None


def _entity_to_json(e: Entity) -> dict:
    return {"logical_name": e.logical_name, "entity_set": e.entity_set, "primary_id": e.primary_id,
            "primary_name": e.primary_name, "schema_name": e.schema_name,
            "object_type_code": e.object_type_code, "display_name": e.display_name,
            "change_tracking": e.change_tracking,
            "attributes": [_attr_to_json(a) for a in e.attributes.values()],
            "keys": [k.__dict__ | {"attributes": list(k.attributes)} for k in e.keys.values()]}


def _attr_to_json(a: Attribute) -> dict:
    d = dict(a.__dict__)
    d["targets"] = list(a.targets)
    d["options"] = {str(k): v for k, v in a.options.items()}
    return d


def _attr_from_json(d: dict) -> Attribute:
    d = dict(d)
    d["targets"] = tuple(d.get("targets", ()))
    d["options"] = {int(k): v for k, v in d.get("options", {}).items()}
    return Attribute(**d)


def _entity_from_json(d: dict) -> Entity:
    e = Entity(d["logical_name"], d["entity_set"], d["primary_id"], d["primary_name"],
               schema_name=d["schema_name"], custom=True, object_type_code=d["object_type_code"],
               display_name=d.get("display_name", ""), change_tracking=d.get("change_tracking", False))
    for a in d["attributes"]:
        e.add(_attr_from_json(a))
    for k in d["keys"]:
        e.keys[k["logical_name"]] = _key_from_json(k)
    return e


def _key_from_json(k: dict) -> Key:
    return Key(k["logical_name"], tuple(k["attributes"]), k["schema_name"], k.get("status", "Active"),
               k.get("failure", ""))


class DataverseStore:
    """Thread-safe storage of one sandbox organization."""

    def __init__(self, db_file: Path | str | None = None) -> None:
        self.db_file = private_sqlite_file(Path(db_file)) if db_file else None  # owner-only, -wal/-shm too
        self._db = sqlite3.connect(str(self.db_file) if self.db_file else ":memory:",
                                   check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL" if self.db_file else "PRAGMA journal_mode=MEMORY")
        self._db.execute("PRAGMA synchronous=OFF")
        self.lock = threading.RLock()
        self._depth = 0
        self.schema = Schema()
        self._db.execute("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS _deleted (entity TEXT, id TEXT, version INTEGER)")
        self._db.execute("CREATE INDEX IF NOT EXISTS _deleted_v ON _deleted (entity, version)")
        self._db.execute("CREATE TABLE IF NOT EXISTS _assoc (rel TEXT, id1 TEXT, id2 TEXT, version INTEGER,"
                         " PRIMARY KEY (rel, id1, id2))")
        self._db.execute("CREATE INDEX IF NOT EXISTS _assoc_2 ON _assoc (rel, id2)")
        for change in json.loads(self._meta("customizations") or "[]"):
            self._apply(change, persist=False)
        for e in self.schema.entities.values():
            self._ensure_table(e)
        self._version = int(self._meta("version") or 1000)
        self.org_id = self._meta("org_id") or str(uuid.uuid4())
        self._set_meta("org_id", self.org_id)

    # -- meta ---------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM _meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO _meta (key, value) VALUES (?, ?)", (key, value))

    def next_version(self, n: int = 1) -> int:
        """Reserve ``n`` version numbers, return the first."""
        with self.lock:
            first = self._version + 1
            self._version += n
            self._set_meta("version", str(self._version))
            return first

    @property
    def version(self) -> int:
        return self._version

    def close(self) -> None:
        with self.lock:
            self._db.close()

    # -- transactions -------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing group of writes (nestable)."""
        with self.lock:
            name = f"sp{self._depth}"
            self._db.execute(f"SAVEPOINT {name}")
            self._depth += 1
            saved_version = self._version
            try:
                yield
            except BaseException:
                self._db.execute(f"ROLLBACK TO {name}")
                self._db.execute(f"RELEASE {name}")
                self._version = saved_version
                raise
            else:
                self._db.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1

    def execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self.lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # -- schema -------------------------------------------------------------------
    def _ensure_table(self, e: Entity) -> None:
        table = _q("e_" + e.logical_name)
        existing = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
        if not existing:
            cols = []
            for a in e.attributes.values():
                cols.append(f"{_q(a.logical_name)} {_sql_type(a)}")
                if a.type in LOOKUP_TYPES:
                    cols.append(f"{_q(a.logical_name + '__type')} TEXT")
            self._db.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
            self._db.execute(f"CREATE UNIQUE INDEX {_q('pk_' + e.logical_name)} ON {table} ({_q(e.primary_id)})")
            if "versionnumber" in e.attributes:
                self._db.execute(f"CREATE INDEX {_q('v_' + e.logical_name)} ON {table} (versionnumber)")
            if e.logical_name == "listmember":
                self._db.execute(f"CREATE INDEX lm_list ON {table} (listid, entityid)")
                self._db.execute(f"CREATE INDEX lm_entity ON {table} (entityid)")
            return
        for a in e.attributes.values():
            if a.logical_name not in existing:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {_q(a.logical_name)} {_sql_type(a)}")
            if a.type in LOOKUP_TYPES and a.logical_name + "__type" not in existing:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {_q(a.logical_name + '__type')} TEXT")
        for k in e.active_keys():  # only a key whose index job finished has its unique index
            self._key_index(e, k)

    def _key_index(self, e: Entity, k: Key) -> None:
        """The key's unique index; string columns compare case-insensitively, as SQL Server's collation."""
        cols = ", ".join(_q(c) + (" COLLATE NOCASE" if e.attributes[c].type in STRING_TYPES else "")
                         for c in k.attributes)
        name = _q("k_" + k.logical_name)
        sql = f"CREATE UNIQUE INDEX {name} ON {_q('e_' + e.logical_name)} ({cols})"
        have = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                                ("k_" + k.logical_name,)).fetchone()
        if have and have[0] != sql:  # a data folder from before keys were case-insensitive
            self._db.execute(f"DROP INDEX {name}")
            have = None
        if not have:
            self._db.execute(sql)

    def duplicates(self, e: Entity, k: Key, limit: int = 5) -> list[tuple]:
        """Values held by more than one row for key ``k`` (what makes its index fail)."""
        cols = ", ".join(_q(c) + (" COLLATE NOCASE" if e.attributes[c].type in STRING_TYPES else "")
                         for c in k.attributes)
        present = " AND ".join(f"{_q(c)} IS NOT NULL" for c in k.attributes)
        with self.lock:
            return self._db.execute(f"SELECT {cols}, COUNT(*) FROM {_q('e_' + e.logical_name)} WHERE {present}"
                                    f" GROUP BY {cols} HAVING COUNT(*) > 1 LIMIT ?", (limit,)).fetchall()

    def activate_key(self, entity: str, name: str) -> list[tuple]:
        """Build the key's index: Active, or Failed with the duplicate values (returned)."""
        with self.lock:
            e = self.schema.entities[entity]
            k = e.keys[name]
            try:
                self._key_index(e, k)
            except sqlite3.IntegrityError:
                dups = self.duplicates(e, k)
                text = "; ".join(", ".join(f"{c}={v!r}" for c, v in zip(k.attributes, row)) + f" ({row[-1]} rows)"
                                 for row in dups)
                self._apply({"kind": "key_status", "entity": entity, "key": name, "status": "Failed",
                             "failure": text})
                return dups
            self._apply({"kind": "key_status", "entity": entity, "key": name, "status": "Active", "failure": ""})
            return []

    def set_change_tracking(self, entity: str, enabled: bool) -> None:
        with self.lock:
            self._apply({"kind": "change_tracking", "entity": entity, "enabled": bool(enabled)})

    def _apply(self, change: dict, persist: bool = True) -> None:
        kind = change["kind"]
        if kind == "entity":
            e = _entity_from_json(change["entity"])
            self.schema.entities[e.logical_name] = e
            self._ensure_table(e)
        elif kind == "attribute":
            e = self.schema.entities[change["entity"]]
            e.add(_attr_from_json(change["attribute"]))
            self._ensure_table(e)
        elif kind == "key":
            e = self.schema.entities[change["entity"]]
            k = change["key"]
            e.keys[k["logical_name"]] = _key_from_json(k)
            try:
                self._ensure_table(e)
            except sqlite3.IntegrityError as exc:
                del e.keys[k["logical_name"]]
                raise StoreError(400, "0x80060892", "A record that has the attribute values "
                                 f"{', '.join(k['attributes'])} already exists: the key cannot be activated.") from exc
        elif kind == "key_status":
            key = self.schema.entities[change["entity"]].keys[change["key"]]
            key.status, key.failure = change["status"], change.get("failure", "")
            if key.status == "Active" and not persist:
                self._ensure_table(self.schema.entities[change["entity"]])
        elif kind == "change_tracking":
            self.schema.entities[change["entity"]].change_tracking = change["enabled"]
        elif kind == "many_to_many":
            self.schema.many_to_many[change["name"]] = (change["entity1"], change["entity2"], change["intersect"])
        elif kind == "option":
            attr = self.schema.entities[change["entity"]].attributes[change["attribute"]]
            attr.options[int(change["value"])] = change["label"]
        if persist:
            self.schema.customizations.append(change)
            custom = json.loads(self._meta("customizations") or "[]")
            custom.append(change)
            self._set_meta("customizations", json.dumps(custom))

    def add_entity(self, e: Entity) -> None:
        with self.lock:
            e.custom = True
            self._apply({"kind": "entity", "entity": _entity_to_json(e)})

    def add_attribute(self, entity: str, attr: Attribute) -> None:
        with self.lock:
            attr.custom = True
            self._apply({"kind": "attribute", "entity": entity, "attribute": _attr_to_json(attr)})

    def add_key(self, entity: str, key: Key) -> None:
        """Declare a key; Active builds its index now, Pending leaves that to :meth:`activate_key`."""
        with self.lock:
            self._apply({"kind": "key", "entity": entity,
                         "key": key.__dict__ | {"attributes": list(key.attributes)}})

    def add_many_to_many(self, name: str, entity1: str, entity2: str, intersect: str) -> None:
        with self.lock:
            self._apply({"kind": "many_to_many", "name": name, "entity1": entity1, "entity2": entity2,
                         "intersect": intersect})

    def add_option(self, entity: str, attribute: str, value: int, label: str) -> None:
        """A new option value of a choice column (InsertOptionValue)."""
        with self.lock:
            self._apply({"kind": "option", "entity": entity, "attribute": attribute, "value": int(value),
                         "label": label})

    def entity_for_set(self, entity_set: str) -> Entity:
        e = self.schema.by_set(entity_set)
        if e is None:
            raise StoreError(404, "0x80060888", f"Resource not found for the segment '{entity_set}'.")
        return e

    # -- rows ---------------------------------------------------------------------
    def columns(self, e: Entity) -> list[str]:
        cols = []
        for a in e.attributes.values():
            cols.append(a.logical_name)
            if a.type in LOOKUP_TYPES:
                cols.append(a.logical_name + "__type")
        return cols

    def _normalize(self, e: Entity, row: dict) -> dict:
        """Accept logical names, ``_x_value`` for lookups, (table, id) tuples."""
        out: dict[str, Any] = {}
        for name, value in row.items():
            if name.endswith("__type"):
                out[name] = value
                continue
            attr = e.attributes.get(name) or e.by_wire_name(name)
            if attr is None:
                raise StoreError(400, "0x80048d19", f"Error identified in Payload provided by the user for Entity :"
                                 f" '{e.entity_set}', The property '{name}' does not exist on type"
                                 f" 'Microsoft.Dynamics.CRM.{e.logical_name}'.")
            if attr.type in LOOKUP_TYPES and isinstance(value, tuple):
                out[attr.logical_name + "__type"], value = value
            elif attr.type in LOOKUP_TYPES and value is not None and attr.logical_name + "__type" not in row:
                out[attr.logical_name + "__type"] = attr.targets[0]
            if attr.type == "Boolean" and value is not None:
                value = 1 if value else 0
            out[attr.logical_name] = value
        return out

    def insert_many(self, e: Entity, rows: Iterable[dict]) -> list[str]:
        """Insert rows (already normalized or not); returns their ids."""
        ids = []
        now = utcnow_text()
        with self.lock, self.transaction():
            for row in rows:
                row = self._normalize(e, row)
                rid = str(row.get(e.primary_id) or uuid.uuid4()).lower()
                row[e.primary_id] = rid
                if "versionnumber" in e.attributes:
                    row["versionnumber"] = self.next_version()
                for stamp in ("createdon", "modifiedon"):
                    if stamp in e.attributes:
                        row.setdefault(stamp, now)
                self._fill_defaults(e, row)
                cols = list(row)
                try:
                    self._db.execute(
                        f"INSERT INTO {_q('e_' + e.logical_name)} ({', '.join(_q(c) for c in cols)})"
                        f" VALUES ({', '.join('?' * len(cols))})", [row[c] for c in cols])
                except sqlite3.IntegrityError as exc:
                    if f"e_{e.logical_name}.{e.primary_id}" in str(exc):
                        raise StoreError(412, "0x80040237", "A record with matching key values already exists.") from exc
                    raise StoreError(412, "0x80040237", "A record with matching key values already exists.") from exc
                ids.append(rid)
        return ids

    def _fill_defaults(self, e: Entity, row: dict) -> None:
        if "statecode" in e.attributes:
            row.setdefault("statecode", 0)
        if "statuscode" in e.attributes and row.get("statuscode") is None:
            opts = sorted(e.attributes["statuscode"].options)
            row["statuscode"] = opts[0] if opts else 1
        if e.attributes.get("fullname") and e.attributes["fullname"].readonly and "firstname" in e.attributes:
            row["fullname"] = " ".join(x for x in (row.get("firstname"), row.get("lastname")) if x) or None
        for flag in ("donotbulkemail", "donotemail", "type", "istemplate", "isdisabled"):
            if flag in e.attributes:
                row.setdefault(flag, 0)

    def bulk_insert(self, e: Entity, columns: list[str], tuples: Iterable[tuple]) -> int:
        """Fast path for seeding: plain tuples in ``columns`` order, versions assigned here."""
        cols = list(columns) + (["versionnumber"] if "versionnumber" in e.attributes else [])
        sql = (f"INSERT INTO {_q('e_' + e.logical_name)} ({', '.join(_q(c) for c in cols)})"
               f" VALUES ({', '.join('?' * len(cols))})")
        n = 0
        with self.lock, self.transaction():
            chunk: list[tuple] = []
            for t in tuples:
                chunk.append(t)
                if len(chunk) >= 20000:
                    n += self._bulk_chunk(e, sql, chunk)
                    chunk = []
            if chunk:
                n += self._bulk_chunk(e, sql, chunk)
        return n

    def _bulk_chunk(self, e: Entity, sql: str, chunk: list[tuple]) -> int:
        if "versionnumber" in e.attributes:
            first = self.next_version(len(chunk))
            chunk = [t + (first + i,) for i, t in enumerate(chunk)]
        self._db.executemany(sql, chunk)
        return len(chunk)

    def get_raw(self, e: Entity, rid: str) -> dict | None:
        with self.lock:
            cols = self.columns(e)
            row = self._db.execute(
                f"SELECT {', '.join(_q(c) for c in cols)} FROM {_q('e_' + e.logical_name)}"
                f" WHERE {_q(e.primary_id)} = ?", (str(rid).lower(),)).fetchone()
        return dict(zip(cols, row)) if row else None

    def find_by_key(self, e: Entity, values: dict[str, Any]) -> dict | None:
        where = " AND ".join(f"{_q(k)}" + (" COLLATE NOCASE" if e.attributes[k].type in STRING_TYPES else "")
                             + " = ?" for k in values)
        with self.lock:
            cols = self.columns(e)
            row = self._db.execute(
                f"SELECT {', '.join(_q(c) for c in cols)} FROM {_q('e_' + e.logical_name)} WHERE {where}",
                list(values.values())).fetchone()
        return dict(zip(cols, row)) if row else None

    def update(self, e: Entity, rid: str, changes: dict) -> int:
        changes = self._normalize(e, changes)
        changes.pop(e.primary_id, None)
        if "versionnumber" in e.attributes:
            changes["versionnumber"] = self.next_version()
        if "modifiedon" in e.attributes:
            changes["modifiedon"] = utcnow_text()
        with self.lock:
            if "fullname" in e.attributes and ("firstname" in changes or "lastname" in changes):
                cur = self.get_raw(e, rid) or {}
                first = changes.get("firstname", cur.get("firstname"))
                last = changes.get("lastname", cur.get("lastname"))
                changes["fullname"] = " ".join(x for x in (first, last) if x) or None
            sets = ", ".join(f"{_q(c)} = ?" for c in changes)
            try:
                self._db.execute(f"UPDATE {_q('e_' + e.logical_name)} SET {sets} WHERE {_q(e.primary_id)} = ?",
                                 [*changes.values(), str(rid).lower()])
            except sqlite3.IntegrityError as exc:
                raise StoreError(412, "0x80040237", "A record with matching key values already exists.") from exc
        return changes.get("versionnumber", 0)

    def delete(self, e: Entity, rid: str) -> bool:
        rid = str(rid).lower()
        with self.lock, self.transaction():
            cur = self._db.execute(f"DELETE FROM {_q('e_' + e.logical_name)} WHERE {_q(e.primary_id)} = ?", (rid,))
            if cur.rowcount == 0:
                return False
            self._db.execute("INSERT INTO _deleted (entity, id, version) VALUES (?, ?, ?)",
                             (e.logical_name, rid, self.next_version()))
            if e.logical_name in ("contact", "lead", "account", "list"):
                col = "listid" if e.logical_name == "list" else "entityid"
                for (mid,) in self._db.execute(f"SELECT listmemberid FROM e_listmember WHERE {col} = ?",
                                               (rid,)).fetchall():
                    self.delete(self.schema.entities["listmember"], mid)
            self._db.execute("DELETE FROM _assoc WHERE id1 = ? OR id2 = ?", (rid, rid))
        return True

    # -- associations -------------------------------------------------------------
    def associate(self, rel: str, id1: str, id2: str) -> None:
        one, two, _ = self.schema.many_to_many[rel]
        id1, id2 = id1.lower(), id2.lower()
        with self.lock, self.transaction():
            if one == "list":
                lm = self.schema.entities["listmember"]
                exists = self._db.execute("SELECT 1 FROM e_listmember WHERE listid = ? AND entityid = ?",
                                          (id1, id2)).fetchone()
                if not exists:
                    self.insert_many(lm, [{"listid": id1, "entityid": (two, id2), "entitytype": two}])
                return
            self._db.execute("INSERT OR IGNORE INTO _assoc (rel, id1, id2, version) VALUES (?, ?, ?, ?)",
                             (rel, id1, id2, self.next_version()))

    def disassociate(self, rel: str, id1: str, id2: str) -> bool:
        one, _, _ = self.schema.many_to_many[rel]
        id1, id2 = id1.lower(), id2.lower()
        with self.lock, self.transaction():
            if one == "list":
                rows = self._db.execute("SELECT listmemberid FROM e_listmember WHERE listid = ? AND entityid = ?",
                                        (id1, id2)).fetchall()
                for (mid,) in rows:
                    self.delete(self.schema.entities["listmember"], mid)
                return bool(rows)
            cur = self._db.execute("DELETE FROM _assoc WHERE rel = ? AND id1 = ? AND id2 = ?", (rel, id1, id2))
            return cur.rowcount > 0

    def associated_ids(self, rel: str, id1: str) -> list[str]:
        with self.lock:
            return [r[0] for r in self._db.execute("SELECT id2 FROM _assoc WHERE rel = ? AND id1 = ?",
                                                   (rel, id1.lower()))]

    # -- convenience for tests and seeding (entity-set based) -----------------------
    def insert(self, entity_set: str, row: dict) -> str:
        return self.insert_many(self.entity_for_set(entity_set), [row])[0]

    def get(self, entity_set: str, rid: str) -> dict | None:
        e = self.entity_for_set(entity_set)
        raw = self.get_raw(e, rid)
        return to_wire(e, raw) if raw else None

    def rows(self, entity_set: str) -> Iterator[dict]:
        e = self.entity_for_set(entity_set)
        cols = self.columns(e)
        last = 0
        while True:
            with self.lock:
                batch = self._db.execute(
                    f"SELECT rowid, {', '.join(_q(c) for c in cols)} FROM {_q('e_' + e.logical_name)}"
                    " WHERE rowid > ? ORDER BY rowid LIMIT 1000", (last,)).fetchall()
            if not batch:
                return
            for r in batch:
                yield to_wire(e, dict(zip(cols, r[1:])))
            last = batch[-1][0]

    def count(self, entity_set: str) -> int:
        e = self.entity_for_set(entity_set)
        with self.lock:
            return self._db.execute(f"SELECT count(*) FROM {_q('e_' + e.logical_name)}").fetchone()[0]

    def patch(self, entity_set: str, rid: str, changes: dict) -> None:
        self.update(self.entity_for_set(entity_set), rid, changes)

    def remove(self, entity_set: str, rid: str) -> bool:
        return self.delete(self.entity_for_set(entity_set), rid)

    def list_members(self, list_id: str) -> list[str]:
        with self.lock:
            return [r[0] for r in self._db.execute("SELECT entityid FROM e_listmember WHERE listid = ?",
                                                   (list_id.lower(),))]


def to_wire(e: Entity, raw: dict, select: Iterable[str] | None = None, *, annotate: bool | Annotations = False,
            include_nulls: bool = True) -> dict:
    """A stored row as Web API JSON (``@odata.etag``, ``_x_value`` lookups, booleans), with the annotations asked for."""
    ann = annotate if isinstance(annotate, Annotations) else (ALL if annotate else None)
    formatted = ann is not None and ann.wants(FORMATTED)
    out: dict[str, Any] = {}
    if raw.get("versionnumber") is not None:
        out["@odata.etag"] = f'W/"{raw["versionnumber"]}"'
    names = list(select) if select else [a.logical_name for a in e.attributes.values()]
    if e.primary_id not in names:
        names.append(e.primary_id)
    for name in names:
        attr = e.attributes.get(name) or e.by_wire_name(name)
        if attr is None:
            continue
        value = raw.get(attr.logical_name)
        if value is None and not include_nulls:
            continue
        if attr.type == "Boolean" and value is not None:
            value = bool(value)
        if attr.type in LOOKUP_TYPES:
            wire = attr.wire_name
            out[wire] = value
            if value is not None and ann is not None:
                table = raw.get(attr.logical_name + "__type")
                if formatted:
                    label = ann.lookup_name(table, str(value))
                    if label is not None:
                        out[wire + "@" + FORMATTED] = label
                if ann.wants(LOOKUP_TABLE):
                    out[wire + "@" + LOOKUP_TABLE] = table
            continue
        if formatted and value is not None:
            text = _formatted(attr, value)
            if text is not None:
                out[attr.logical_name + "@" + FORMATTED] = text
        out[attr.logical_name] = value
    return out


def _formatted(attr: Attribute, value: Any) -> str | None:
    """The FormattedValue of a column's value, or None for a type that has none (text, ids)."""
    if attr.options and not isinstance(value, bool):
        return attr.options.get(int(value))
    if attr.type == "Boolean":
        return "Yes" if value else "No"
    if attr.type == "DateTime":
        return formatted_date(str(value))
    if attr.type in ("Integer", "BigInt", "Money", "Decimal", "Double") and attr.logical_name != "versionnumber":
        return formatted_number(value, attr.type)
    return None
