"""Column metadata of a Dataverse table: type, writable, maximum length, option labels.

Three reads of the table's ``Attributes`` (Microsoft Learn, "Query table definitions using
the Web API"): the base ``AttributeMetadata`` properties of every column, then the derived
types' own properties through a cast segment — ``MaxLength`` of
``StringAttributeMetadata`` / ``MemoAttributeMetadata``, and the options of
``PicklistAttributeMetadata``, ``StateAttributeMetadata`` and ``StatusAttributeMetadata``
(``$expand=OptionSet($select=Options)``). A property of a derived type cannot be selected
on the base type.
"""

from __future__ import annotations

from typing import Any

from connector.crm.odata import Call, ODataHttp
from connector.models import ColumnInfo, CrmTable

NS = "Microsoft.Dynamics.CRM"
OPTION_TYPES = ("PicklistAttributeMetadata", "StateAttributeMetadata", "StatusAttributeMetadata")
TEXT_TYPES = ("StringAttributeMetadata", "MemoAttributeMetadata")


def read_columns(http: ODataHttp, table: CrmTable) -> dict[str, ColumnInfo]:
    base = f"EntityDefinitions(LogicalName='{CrmTable(table).value}')/Attributes"
    call = Call("read column definitions", CrmTable(table).value, idempotent=True)
    rows = _values(http.get_json(base, call, params={"$select": "LogicalName,AttributeType,IsValidForUpdate"}))
    lengths: dict[str, int] = {}
    for cast in TEXT_TYPES:
        for row in _values(http.get_json(f"{base}/{NS}.{cast}", call, params={"$select": "LogicalName,MaxLength"})):
            if row.get("MaxLength"):
                lengths[str(row["LogicalName"])] = int(row["MaxLength"])
    options: dict[str, dict[int, str]] = {}
    for cast in OPTION_TYPES:
        reply = http.get_json(f"{base}/{NS}.{cast}", call,
                              params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"})
        for row in _values(reply):
            found = {int(o["Value"]): _label(o.get("Label")) for o in (row.get("OptionSet") or {}).get("Options", [])}
            options[str(row["LogicalName"])] = found
    return {str(r["LogicalName"]): ColumnInfo(str(r["LogicalName"]), str(r.get("AttributeType") or ""),
                                              bool(r.get("IsValidForUpdate", True)), lengths.get(str(r["LogicalName"])),
                                              options.get(str(r["LogicalName"]), {}))
            for r in rows if r.get("LogicalName")}


def _values(reply: Any) -> list[dict]:
    return list((reply or {}).get("value", []))


def _label(label: Any) -> str:
    try:
        return str((label.get("UserLocalizedLabel") or label["LocalizedLabels"][0])["Label"])
    except (AttributeError, KeyError, IndexError, TypeError):
        return ""
