"""Data extensions of the Marketing Cloud sandbox: DataExtension, DataExtensionField, DataExtensionObject rows.

A data extension is a table with typed fields and a primary key; a sendable one
relates one of its fields to the subscriber (``SendableDataExtensionField`` ↔
``SendableSubscriberField``). Rows are written with Create (add only), Update (update
only; ``SaveAction UpdateAdd`` = upsert) and Delete (by ``Keys``) of
``DataExtensionObject`` naming the data extension by ``CustomerKey`` (or ``Name`` /
``ObjectID``), and read with a Retrieve of ``DataExtensionObject[<name>]``. Every rule
here and its source is in docs/sandbox-esp.md ("Data extensions"). Mixed into ``EspStore``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator

from connector.sandbox.marketing_cloud.soap import CST, Obj, parse_date
from connector.sandbox.marketing_cloud.values import Result, as_int, error, ok, valid_email

FIELD_TYPES = ("Text", "Number", "Date", "Boolean", "EmailAddress", "Phone", "Decimal", "Locale")
TEXT_MAX = 4000
EMAIL_MAX = 254
PHONE_MAX = 50
LOCALE_MAX = 5
SUBSCRIBER_FIELDS = ("Subscriber Key", "_SubscriberKey", "Email Address")
"""What a sendable data extension's field may relate to (``SendableSubscriberField.Name``)."""
NO_KEY, DELETE_NOT_FOUND, ADD_NOT_ALLOWED_EXISTS, UPDATE_NOT_FOUND, INVALID = 310001, 310002, 310003, 310004, 310007
"""Error codes of the guide's "310000-310099 DataExtension Object" table."""
_TRUE, _FALSE = ("true", "1", "yes", "y"), ("false", "0", "no", "n")
_NUMBER = re.compile(r"^-?\d+$")


@dataclass
class DEFieldRec:
    name: str
    field_type: str = "Text"
    max_length: int | None = None
    is_primary_key: bool = False
    is_required: bool = False
    scale: int = 0
    precision: int = 18
    default: str | None = None
    ordinal: int = 0
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class DataExtensionRec:
    id: int
    customer_key: str
    name: str
    object_id: str
    fields: list[DEFieldRec]
    description: str = ""
    is_sendable: bool = False
    sendable_field: str | None = None
    sendable_subscriber_field: str | None = None
    category_id: int = 0
    created: datetime | None = None
    modified: datetime | None = None
    rows: dict[tuple, dict[str, Any]] = field(default_factory=dict)  # primary-key values -> typed row

    def field(self, name: str) -> DEFieldRec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def primary_key(self) -> list[DEFieldRec]:
        return [f for f in self.fields if f.is_primary_key]


def field_problem(fields: list[DEFieldRec]) -> str:
    """Why a set of fields cannot make a data extension ('' when it can)."""
    if not fields:
        return "A data extension needs at least one field."
    seen = set()
    for f in fields:
        if not f.name:
            return "Every field needs a Name."
        if f.name.casefold() in seen:
            return f"The field name '{f.name}' is used twice."
        seen.add(f.name.casefold())
        if f.field_type not in FIELD_TYPES:
            return f"FieldType '{f.field_type}' of field '{f.name}' is not supported."
        if f.field_type == "Text" and f.max_length is not None and not 0 < f.max_length <= TEXT_MAX:
            return f"MaxLength of Text field '{f.name}' must be between 1 and {TEXT_MAX}."
        if f.is_primary_key and not f.is_required:
            return f"Primary key field '{f.name}' must be required (IsRequired true)."
    return ""


def coerce(f: DEFieldRec, text: str) -> Any:
    """A written value as the row keeps it (typed); raises ValueError with the reason."""
    value = text.strip() if f.field_type != "Text" else text
    if f.field_type == "Text":
        limit = f.max_length or TEXT_MAX
        if len(value) > limit:
            raise ValueError(f"the value for field '{f.name}' is {len(value)} characters long; its MaxLength is {limit}")
        return value
    if f.field_type == "Number":
        if not _NUMBER.match(value) or not -2**31 <= int(value) < 2**31:
            raise ValueError(f"'{text}' is not a valid Number for field '{f.name}'")
        return int(value)
    if f.field_type == "Decimal":
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"'{text}' is not a valid Decimal for field '{f.name}'") from None
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > f.scale:
            raise ValueError(f"'{text}' has more than {f.scale} decimal places for field '{f.name}'")
        return number
    if f.field_type == "Date":
        try:
            return parse_date(value)
        except ValueError:
            raise ValueError(f"'{text}' is not a valid Date for field '{f.name}'") from None
    if f.field_type == "Boolean":
        if value.lower() not in _TRUE + _FALSE:
            raise ValueError(f"'{text}' is not a valid Boolean for field '{f.name}'")
        return value.lower() in _TRUE
    limit = {"EmailAddress": EMAIL_MAX, "Phone": PHONE_MAX, "Locale": LOCALE_MAX}[f.field_type]
    if len(value) > (f.max_length or limit):
        raise ValueError(f"the value for field '{f.name}' is longer than {f.max_length or limit} characters")
    if f.field_type == "EmailAddress" and not valid_email(value):
        raise ValueError(f"'{text}' is not a valid EmailAddress for field '{f.name}'")
    return value


def as_text(value: Any) -> str:
    """A row value as Retrieve answers it: a Date as m/d/yyyy h:mm:ss AM in server time (CST),
    rounded to the second; a Boolean as True/False."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, datetime):
        local = value.astimezone(CST)
        if local.microsecond >= 500_000:
            local = local + timedelta(seconds=1)
        hour = local.hour % 12 or 12
        return f"{local.month}/{local.day}/{local.year} {hour}:{local:%M:%S} {'AM' if local.hour < 12 else 'PM'}"
    return str(value)


def _pairs(obj: Obj, wrapper: str, item: str) -> list[tuple[str, str]]:
    inner = obj.get(wrapper)
    if not isinstance(inner, Obj):
        return []
    out = []
    for prop in inner.all(item):
        if isinstance(prop, Obj) and prop.text("Name"):
            value = prop.get("Value")
            out.append((prop.text("Name"), value if isinstance(value, str) else ""))
    return out


def _bool(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("true", "1")


class DataExtensionOps:
    """Data extensions and their rows (mixed into ``EspStore``)."""

    lock: Any
    clock: Any
    _ids: Iterator[int]
    data_extensions: dict[str, DataExtensionRec]

    # ------------------------------------------------------------ definitions

    def add_data_extension(self, customer_key: str, name: str, fields: list[DEFieldRec], *,
                           sendable_field: str | None = None,
                           sendable_subscriber_field: str = "Subscriber Key") -> DataExtensionRec:
        """Direct seeding for tests (validated like a Create; raises ValueError)."""
        problem = field_problem(fields) or (
            f"sendable field '{sendable_field}' is not a field" if sendable_field and not any(
                f.name == sendable_field for f in fields) else "")
        if problem:
            raise ValueError(problem)
        with self.lock:
            now = self.clock.now()
            for ordinal, f in enumerate(fields):
                f.ordinal = ordinal
            rec = DataExtensionRec(next(self._ids), customer_key, name, str(uuid.uuid4()), list(fields),
                                   is_sendable=bool(sendable_field), sendable_field=sendable_field,
                                   sendable_subscriber_field=sendable_subscriber_field if sendable_field else None,
                                   created=now, modified=now)
            self.data_extensions[customer_key] = rec
            return rec

    def data_extension(self, *, customer_key: str = "", name: str = "", object_id: str = "") -> DataExtensionRec | None:
        with self.lock:
            if customer_key:
                return self.data_extensions.get(customer_key)
            return next((d for d in self.data_extensions.values()
                         if (name and d.name == name) or (object_id and d.object_id == object_id)), None)

    def create_data_extension(self, obj: Obj) -> Result:
        key = obj.text("CustomerKey") or str(uuid.uuid4())
        name = obj.text("Name")
        echo = ("DataExtension", {"CustomerKey": key, "Name": name})
        wrapper = obj.get("Fields")
        items = [f for f in wrapper.all("Field") if isinstance(f, Obj)] if isinstance(wrapper, Obj) else []
        fields = [DEFieldRec(f.text("Name"), f.text("FieldType") or "Text", as_int(f.get("MaxLength")) or None,
                             _bool(f.get("IsPrimaryKey")), _bool(f.get("IsRequired")), as_int(f.get("Scale")),
                             as_int(f.get("Precision")) or 18, f.get("DefaultValue") if isinstance(
                                 f.get("DefaultValue"), str) else None) for f in items]
        sendable = _bool(obj.get("IsSendable"))
        de_field = obj.get("SendableDataExtensionField")
        sub_field = obj.get("SendableSubscriberField")
        de_field_name = de_field.text("Name") if isinstance(de_field, Obj) else ""
        sub_field_name = sub_field.text("Name") if isinstance(sub_field, Obj) else ""
        problem = "" if name else "Name is required to create a DataExtension."
        problem = problem or field_problem(fields)
        if not problem and sendable:
            if not any(f.name == de_field_name for f in fields):
                problem = "A sendable data extension needs SendableDataExtensionField naming one of its fields."
            elif sub_field_name not in SUBSCRIBER_FIELDS:
                problem = (f"SendableSubscriberField '{sub_field_name}' is not valid: use "
                           + " or ".join(f"'{n}'" for n in SUBSCRIBER_FIELDS) + ".")
        with self.lock:
            if not problem and (key in self.data_extensions
                                or any(d.name == name for d in self.data_extensions.values())):
                problem = f"A data extension with CustomerKey '{key}' or Name '{name}' already exists."
            if problem:
                return error(problem, INVALID, echo)
            rec = self.add_data_extension(key, name, fields, sendable_field=de_field_name if sendable else None,
                                          sendable_subscriber_field=sub_field_name or "Subscriber Key")
            rec.description = obj.text("Description")
            rec.category_id = as_int(obj.get("CategoryID"))
            return ok("Data Extension created.", ("DataExtension", {"CustomerKey": key, "Name": name}), 0,
                      NewObjectID=rec.object_id)

    # ------------------------------------------------------------ rows

    def _target(self, obj: Obj) -> DataExtensionRec | Result:
        key, name, object_id = obj.text("CustomerKey"), obj.text("Name"), obj.text("ObjectID")
        echo = ("DataExtensionObject", {k: v for k, v in (("CustomerKey", key), ("Name", name)) if v})
        if not (key or name or object_id):
            return error("Provide the data extension's CustomerKey, Name or ObjectID.", NO_KEY, echo)
        rec = self.data_extension(customer_key=key, name=name, object_id=object_id)
        if rec is None:
            return error(f"The data extension '{key or name or object_id}' does not exist.", INVALID, echo)
        return rec

    def _typed_row(self, rec: DataExtensionRec, pairs: list[tuple[str, str]]) -> dict[str, Any] | str:
        row: dict[str, Any] = {}
        for name, text in pairs:
            f = rec.field(name)
            if f is None:
                return f"The data extension '{rec.name}' has no field named '{name}'."
            if text == "" and f.field_type != "Text" or text == "" and f.is_required:
                row[f.name] = None
                continue
            try:
                row[f.name] = coerce(f, text)
            except ValueError as exc:
                return str(exc)[0].upper() + str(exc)[1:] + "."
        for f in rec.primary_key:
            if row.get(f.name) in (None, ""):
                return f"Primary key field '{f.name}' is required."
        return row

    def write_row(self, obj: Obj, *, add: bool, update: bool) -> Result:
        """Create (add only), Update (update only) or upsert (both) one DataExtensionObject."""
        target = self._target(obj)
        if isinstance(target, dict):
            return target
        rec = target
        pairs = _pairs(obj, "Keys", "Key") + _pairs(obj, "Properties", "Property")
        echo = ("DataExtensionObject", {"CustomerKey": rec.customer_key})
        with self.lock:
            row = self._typed_row(rec, pairs)
            if isinstance(row, str):
                return error(row, INVALID, echo)
            pk = tuple(row[f.name] for f in rec.primary_key) if rec.primary_key else (next(self._ids),)
            existing = rec.rows.get(pk)
            if existing is not None and not update:
                return error(f"A row with primary key {_show(pk)} already exists in '{rec.name}'.",
                             ADD_NOT_ALLOWED_EXISTS, echo)
            if existing is None and not add:
                return error(f"No row with primary key {_show(pk)} in '{rec.name}' to update.", UPDATE_NOT_FOUND,
                             echo)
            if existing is None:
                for f in rec.fields:
                    if f.name not in row and f.default is not None:
                        row[f.name] = coerce(f, f.default)
                    if f.is_required and row.get(f.name) in (None, ""):
                        return error(f"Field '{f.name}' is required.", INVALID, echo)
                rec.rows[pk] = row
                return ok("Created DataExtensionObject", echo, 0)
            for name, value in row.items():
                f = rec.field(name)
                if f is not None and f.is_required and value in (None, ""):
                    return error(f"Field '{name}' is required.", INVALID, echo)
            existing.update(row)
            return ok("Updated DataExtensionObject", echo)

    def delete_row(self, obj: Obj) -> Result:
        target = self._target(obj)
        if isinstance(target, dict):
            return target
        rec = target
        echo = ("DataExtensionObject", {"CustomerKey": rec.customer_key})
        with self.lock:
            row = self._typed_row(rec, _pairs(obj, "Keys", "Key"))
            if isinstance(row, str):
                return error(row, INVALID, echo)
            pk = tuple(row[f.name] for f in rec.primary_key)
            if rec.rows.pop(pk, None) is None:
                return error(f"No row with primary key {_show(pk)} in '{rec.name}'.", DELETE_NOT_FOUND, echo)
            return ok("Deleted DataExtensionObject", echo)

    def edit_row(self, customer_key: str, values: dict[str, str]) -> dict[str, Any]:
        """Insert or change a row as a journey or the UI would, while the connector runs (tests);
        the same checks as an upsert. Raises ValueError with the ESP's reason."""
        obj = Obj(type="DataExtensionObject", values={"CustomerKey": [customer_key], "Properties": [Obj(
            type="", values={"Property": [Obj(type="", values={"Name": [k], "Value": [v]}) for k, v in values.items()]})]})
        with self.lock:
            result = self.write_row(obj, add=True, update=True)
            if result["StatusCode"] != "OK":
                raise ValueError(result["StatusMessage"])
            rec = self.data_extensions[customer_key]
            if not rec.primary_key:  # a data extension without a key: the row just added
                return next(reversed(rec.rows.values()))
            typed = self._typed_row(rec, list(values.items()))
            assert isinstance(typed, dict)
            return rec.rows[tuple(typed[f.name] for f in rec.primary_key)]

    def de_rows(self, rec: DataExtensionRec) -> list[dict[str, Any]]:
        """The rows (copies), for tests."""
        return list(self.iter_de_rows(rec))

    def iter_de_rows(self, rec: DataExtensionRec) -> Iterator[dict[str, Any]]:
        """The rows, lazily from a snapshot of references (a Retrieve of a big DE copies one row at a time)."""
        with self.lock:
            rows = list(rec.rows.values())
        for row in rows:
            yield dict(row)


def _show(pk: tuple) -> str:
    return "(" + ", ".join(as_text(v) for v in pk) + ")"


def de_values(rec: DataExtensionRec) -> dict:
    sendable = ("DataExtensionField", {"Name": rec.sendable_field}) if rec.sendable_field else None
    subscriber = ("Attribute", {"Name": rec.sendable_subscriber_field, "Value": ""}) if rec.sendable_field else None
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ObjectID": rec.object_id,
        "CustomerKey": rec.customer_key, "Name": rec.name, "Description": rec.description,
        "IsSendable": rec.is_sendable, "IsTestable": False, "SendableDataExtensionField": sendable,
        "SendableSubscriberField": subscriber, "CategoryID": rec.category_id,
        "SendableDataExtensionField.Name": rec.sendable_field, "SendableSubscriberField.Name":
            rec.sendable_subscriber_field if rec.sendable_field else None,
    }


def de_field_values(pair: tuple[DataExtensionRec, DEFieldRec]) -> dict:
    rec, f = pair
    return {
        "ObjectID": f.object_id, "CustomerKey": f"[{rec.customer_key}].[{f.name}]", "Name": f.name,
        "DefaultValue": f.default, "MaxLength": f.max_length or (TEXT_MAX if f.field_type == "Text" else None),
        "IsRequired": f.is_required, "Ordinal": f.ordinal, "IsPrimaryKey": f.is_primary_key,
        "FieldType": f.field_type, "Scale": f.scale if f.field_type == "Decimal" else None,
        "Precision": f.precision if f.field_type == "Decimal" else None,
        "DataExtension": ("DataExtension", {"CustomerKey": rec.customer_key}),
        "DataExtension.CustomerKey": rec.customer_key,
    }


def row_object(rec: DataExtensionRec, row: dict[str, Any], wanted: list[str]) -> dict:
    """A typed row as the values of a ``DataExtensionObject`` reply (Properties/Property in the asked order)."""
    return {"Properties": {"Property": [("APIProperty", {"Name": name, "Value": as_text(row.get(name))})
                                        for name in wanted]}}

