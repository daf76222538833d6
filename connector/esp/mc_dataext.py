"""Data extensions on Marketing Cloud: the definition, and rows read, upserted and deleted.

The definition comes from a Retrieve of ``DataExtension`` by ``CustomerKey`` and of its
``DataExtensionField``s by ``DataExtension.CustomerKey``. Rows are read with a Retrieve of
``DataExtensionObject[<name>]`` — the data extension's *name* in brackets, as FuelSDK's
``ET_DataExtension_Row`` asks (it looks the name up from the customer key first) —, written
with an Update carrying ``SaveOption * UpdateAdd`` (an upsert by primary key) and deleted by
``Keys``. Date fields come back as ``m/d/yyyy h:mm:ss AM`` in server time (CST) and leave
the adapter as ISO 8601 UTC. Mixed into ``MarketingCloudEspClient``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

import structlog

from connector.errors import PermanentPeerError
from connector.esp.events import CST, to_esp_datetime
from connector.esp.mc_subscribers import ceil_second
from connector.esp.partner import PartnerApi, name_values, number, q, write_results
from connector.esp.partner import results as result_rows
from connector.esp.soap import SoapCaller
from connector.models import DataExtensionField, DataExtensionInfo, WriteResult

log = structlog.get_logger(__name__)

ROW_NOT_FOUND = "310002"
"""Delete of a row that is not there (DataExtensionProcessValidationErrorDeleteObjectNotFound)."""
_UPSERT = {"SaveOptions": {"SaveOption": [{"PropertyName": "*", "SaveAction": "UpdateAdd"}]}}
_FIELD_PROPERTIES = ("Name", "FieldType", "MaxLength", "IsPrimaryKey", "IsRequired", "Ordinal", "Scale",
                     "DefaultValue")


def parse_de_date(text: str) -> str:
    """A data extension Date value (``1/31/2026 6:00:00 AM``, server time) as ISO 8601 UTC; "" stays ""."""
    if not text.strip():
        return ""
    for fmt in ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y"):
        try:
            local = datetime.strptime(text.strip(), fmt)
            break
        except ValueError:
            continue
    else:
        return text  # not the service's form: hand it on as it came
    return local.replace(tzinfo=CST).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class DataExtensionOps:
    """Data extension methods of ``EspClient`` (see there for the contracts)."""

    _api: PartnerApi
    _soap: SoapCaller
    _chunk_size: int
    _data_extensions: dict[str, DataExtensionInfo]

    def data_extension(self, customer_key: str) -> DataExtensionInfo | None:
        api = self._api
        found = api.find_by_key("DataExtension", customer_key, (
            "CustomerKey", "Name", "IsSendable", "SendableDataExtensionField.Name", "SendableSubscriberField.Name"))
        if found is None:
            return None
        rows = list(api.rows("DataExtensionField", _FIELD_PROPERTIES,
                             api.simple("DataExtension.CustomerKey", "equals", [customer_key]),
                             f"fields of DataExtension {customer_key!r}"))
        rows.sort(key=lambda r: number(r.get("Ordinal", "")))
        fields = tuple(DataExtensionField(
            name=r.get("Name", ""), field_type=r.get("FieldType", "Text"),
            max_length=number(r.get("MaxLength", "")) or None,
            is_primary_key=r.get("IsPrimaryKey", "").lower() == "true",
            is_required=r.get("IsRequired", "").lower() == "true",
            scale=number(r["Scale"]) if r.get("Scale") else None, default=r.get("DefaultValue")) for r in rows)
        sendable = found.get("IsSendable", "").lower() == "true"
        info = DataExtensionInfo(
            customer_key=customer_key, name=found.get("Name", ""), fields=fields, is_sendable=sendable,
            sendable_field=found.get("SendableDataExtensionField.Name") if sendable else None,
            sendable_subscriber_field=found.get("SendableSubscriberField.Name") if sendable else None)
        self._cache()[customer_key] = info
        return info

    def _cache(self) -> dict[str, DataExtensionInfo]:
        if not hasattr(self, "_data_extensions"):
            self._data_extensions = {}
        return self._data_extensions

    def _info(self, customer_key: str) -> DataExtensionInfo:
        info = self._cache().get(customer_key) or self.data_extension(customer_key)
        if info is None:
            raise PermanentPeerError(f"Marketing Cloud has no data extension with customer key {customer_key!r}",
                                     peer="esp", operation="Retrieve")
        return info

    def iter_data_extension_rows(
        self, customer_key: str, fields: Sequence[str], *, modified_field: str | None = None,
        since: datetime | None = None, until: datetime | None = None,
    ) -> Iterator[list[dict[str, str]]]:
        info = self._info(customer_key)
        types = {f.name: f.field_type for f in info.fields}
        asked = list(dict.fromkeys([*fields, *([modified_field] if modified_field else [])]))
        unknown = [name for name in asked if name not in types]
        if unknown:
            raise PermanentPeerError(f"Marketing Cloud data extension {customer_key!r} has no field(s) "
                                     f"{', '.join(map(repr, unknown))}", peer="esp", operation="Retrieve")
        window = self._window(customer_key, types, modified_field, since, until)
        pages = self._api.element_pages(f"DataExtensionObject[{info.name}]", asked, window,
                                        f"rows of DataExtension {customer_key!r}")
        for page in pages:
            rows = []
            for element in page:
                values = name_values(element, f"{q('Properties')}/{q('Property')}")
                row = {name: parse_de_date(values.get(name, "")) if types[name] == "Date" else values.get(name, "")
                       for name in asked}
                if modified_field and not _in_window(row[modified_field], since, until):
                    continue
                rows.append(row)
            yield rows

    def _window(self, customer_key: str, types: Mapping[str, str], modified_field: str | None,
                since: datetime | None, until: datetime | None) -> Any:
        if modified_field is None:
            return None
        if types[modified_field] != "Date":
            raise PermanentPeerError(f"Marketing Cloud data extension {customer_key!r}: field {modified_field!r} is "
                                     f"{types[modified_field]}, not a Date", peer="esp", operation="Retrieve")
        parts = []
        if since is not None:
            parts.append(self._api.simple(modified_field, "greaterThan", dates=[to_esp_datetime(since)]))
        if until is not None:
            parts.append(self._api.simple(modified_field, "lessThanOrEqual", dates=[ceil_second(until)]))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else self._api.and_(parts[0], parts[1])

    def upsert_data_extension_rows(self, customer_key: str, rows: Sequence[Mapping[str, str]]) -> list[WriteResult]:
        info = self._info(customer_key)
        return self._row_calls("Update", info, rows, "Properties", "Property", _UPSERT)

    def delete_data_extension_rows(self, customer_key: str, keys: Sequence[Mapping[str, str]]) -> list[WriteResult]:
        info = self._info(customer_key)
        results = self._row_calls("Delete", info, keys, "Keys", "Key", {})
        return [WriteResult(r.key, True) if r.code == ROW_NOT_FOUND else r for r in results]

    def _row_calls(self, operation: str, info: DataExtensionInfo, rows: Sequence[Mapping[str, str]], wrapper: str,
                   item: str, options: dict) -> list[WriteResult]:
        prop, obj = self._api.type("APIProperty"), self._api.type("DataExtensionObject")
        out: list[WriteResult] = []
        for start in range(0, len(rows), self._chunk_size):
            chunk = rows[start:start + self._chunk_size]
            objects = [obj(CustomerKey=info.customer_key, **{wrapper: {item: [
                prop(Name=k, Value="" if v is None else str(v)) for k, v in row.items()]}}) for row in chunk]
            reply = self._soap.call(operation, safe=True, what=f"{len(objects)} rows of DataExtension "
                                    f"{info.customer_key!r}", Options=options, Objects=objects)
            out.extend(write_results([info.row_key(r) for r in chunk], result_rows(reply), reply))
        log.debug("esp_data_extension_rows_written", peer="esp", operation=operation, count=len(rows),
                  failed=sum(1 for r in out if not r.ok))
        return out


def _in_window(text: str, since: datetime | None, until: datetime | None) -> bool:
    if not text:
        return False
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (since is None or moment > since) and (until is None or moment <= until)
