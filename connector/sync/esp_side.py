"""The ESP side of a sync: the subscribers' profile attributes, or the rows of a sendable data extension.

``[sync] data_extension`` blank: rules name profile attributes; changes come by the
subscribers' modified date (``iter_subscribers_modified_since``), writes go by
``update_subscribers``, and the subscriber's status (held, deleted) is reflected on CRM.

``[sync] data_extension = KEY``: rules name fields of that data extension; a row belongs to
the record whose id its sendable field (else its first primary-key field) holds; changes
come by ``[sync] data_extension_modified_field`` (a Date field), writes are upserts of the
row's synced fields with that field set to the time of the write, so the next run sees
the row changed and finds it equal to the shadow. Rows have no status.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

from connector.errors import PeerSetupError
from connector.models import EspSubscriberState, SubscriberUpdate, WriteResult
from connector.sync.values import EMAIL_ATTRIBUTES


class SubscriberSide:
    reflects_status = True

    def __init__(self, esp: Any, synced_lists: Sequence[str] = ()) -> None:
        self.esp = esp
        self.synced_lists = list(synced_lists)

    def pages(self, since: datetime | None, attributes: Sequence[str]) -> Iterator[list[EspSubscriberState]]:
        return self.esp.iter_subscribers_modified_since(since or EPOCH, list(attributes))

    def write(self, updates: Mapping[str, Mapping[str, Any]]) -> dict[str, WriteResult]:
        """Updates of attributes / e-mail / status, and ``leave_lists`` (``[sync] crm_deleted =
        remove_from_lists``): off the ``[sync] synced_lists``; a key's result is its first failure."""
        written = [SubscriberUpdate(key, dict(v["attributes"]), v["email"], v["status"]) for key, v in updates.items()
                   if v["attributes"] or v["email"] is not None or v["status"] is not None]
        found = {r.key: r for r in self.esp.update_subscribers(written)} if written else {}
        leaving = [key for key, v in updates.items() if v.get("leave_lists")]
        if leaving:
            for result in self.esp.remove_from_lists(leaving, self.synced_lists):
                if result.key not in found or found[result.key].ok:
                    found[result.key] = result
        return found


class DataExtensionSide:
    reflects_status = False

    def __init__(self, esp: Any, customer_key: str, modified_field: str) -> None:
        self.esp = esp
        self.customer_key = customer_key
        self.modified_field = modified_field
        info = esp.data_extension(customer_key)
        if info is None:
            raise PeerSetupError(f"[sync] data_extension: the ESP account has no data extension with the customer "
                                 f"key {customer_key!r}; create it, or fix the key", "esp", "sync")
        self.info = info
        self.key_field = info.sendable_field or (info.primary_key[0] if info.primary_key else "")
        if not self.key_field:
            raise PeerSetupError(f"[sync] data_extension {customer_key!r} has neither a sendable field nor a primary "
                                 "key: the sync cannot tell which CRM record a row belongs to", "esp", "sync")
        self.email_field = next((f.name for f in info.fields if f.name.strip().casefold() in EMAIL_ATTRIBUTES), "")

    def pages(self, since: datetime | None, attributes: Sequence[str]) -> Iterator[list[EspSubscriberState]]:
        fields = list(dict.fromkeys([self.key_field, self.modified_field, *attributes,
                                     *([self.email_field] if self.email_field else [])]))
        for rows in self.esp.iter_data_extension_rows(self.customer_key, fields, modified_field=self.modified_field,
                                                      since=since):
            yield [self._state(row) for row in rows if row.get(self.key_field)]

    def _state(self, row: Mapping[str, str]) -> EspSubscriberState:
        stamp = row.get(self.modified_field) or ""
        modified = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else EPOCH
        return EspSubscriberState(row[self.key_field].lower(), row.get(self.email_field, "") if self.email_field
                                  else "", None, dict(row), modified)

    def write(self, updates: Mapping[str, Mapping[str, Any]]) -> dict[str, WriteResult]:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows, keys = [], []
        for key, v in updates.items():
            row = {self.key_field: key, **v["attributes"], self.modified_field: now}
            if v["email"] is not None and self.email_field:
                row[self.email_field] = v["email"]
            rows.append(row)
            keys.append(key)
        results = self.esp.upsert_data_extension_rows(self.customer_key, rows)
        return {key: WriteResult(key, r.ok, r.message, r.code) for key, r in zip(keys, results)}


EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""``since`` of a full read of the subscribers: before any subscriber's modified date."""


def esp_side(ctx: Any) -> SubscriberSide | DataExtensionSide:
    settings = ctx.config.sync
    if settings.data_extension:
        return DataExtensionSide(ctx.esp(), settings.data_extension, settings.data_extension_modified_field)
    return SubscriberSide(ctx.esp(), settings.synced_list_keys)
