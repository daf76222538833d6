"""OData rows <-> the project's types: send requests, recipients, column names.

The send-request columns come from docs/contracts.md with the publisher prefix of
``[crm] prefix`` (``cesp`` by default).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Mapping, Sequence

import structlog

from connector.models import (
    CrmTable,
    Recipient,
    RecordRef,
    SendRequest,
    SendRequestUpdate,
    SendStatus,
    SendTarget,
    TargetKind,
)

log = structlog.get_logger(__name__)

ENTITY_SETS = {CrmTable.CONTACT: "contacts", CrmTable.LEAD: "leads", CrmTable.ACCOUNT: "accounts"}
LIST_MEMBER_NAV = {
    CrmTable.CONTACT: "listcontact_association",
    CrmTable.LEAD: "listlead_association",
    CrmTable.ACCOUNT: "listaccount_association",
}
MEMBER_TABLE_BY_CODE = {1: CrmTable.ACCOUNT, 2: CrmTable.CONTACT, 4: CrmTable.LEAD}
"""``list.createdfromcode``: the member type of a marketing list."""

RECIPIENT_COLUMNS = {
    table: ("emailaddress1", "donotbulkemail", "donotemail", "statecode") for table in CrmTable
}

STATUS_CODES = {
    SendStatus.PENDING: 100000000,
    SendStatus.PROCESSING: 100000001,
    SendStatus.SENT: 100000002,
    SendStatus.FAILED: 100000003,
    SendStatus.CANCELLED: 100000004,
    SendStatus.DRAFT: 100000005,
    SendStatus.PREVIEW_REQUESTED: 100000006,
    SendStatus.PREVIEWED: 100000007,
    SendStatus.IMPORTING: 100000008,
    SendStatus.SCHEDULED: 100000009,
}
STATUS_LABELS = {
    SendStatus.PENDING: "Pending", SendStatus.PROCESSING: "Processing", SendStatus.SENT: "Sent",
    SendStatus.FAILED: "Failed", SendStatus.CANCELLED: "Cancelled", SendStatus.DRAFT: "Draft",
    SendStatus.PREVIEW_REQUESTED: "Preview requested", SendStatus.PREVIEWED: "Previewed",
    SendStatus.IMPORTING: "Importing", SendStatus.SCHEDULED: "Scheduled",
}
"""The labels a marketer sees on the send status (the picklist's options)."""
STATUS_BY_CODE = {v: k for k, v in STATUS_CODES.items()}

COUNT_COLUMNS = {
    "sent": "sentcount", "delivered": "deliveredcount",
    "open": "opencount", "opens": "opencount",
    "unique_open": "uniqueopencount", "unique_opens": "uniqueopencount",
    "click": "clickcount", "clicks": "clickcount",
    "unique_click": "uniqueclickcount", "unique_clicks": "uniqueclickcount",
    "hard_bounce": "hardbouncecount", "hard_bounces": "hardbouncecount", "bounce_hard": "hardbouncecount",
    "soft_bounce": "softbouncecount", "soft_bounces": "softbouncecount", "bounce_soft": "softbouncecount",
    "block_bounce": "blockbouncecount", "block_bounces": "blockbouncecount", "bounce_block": "blockbouncecount",
    "technical_bounce": "technicalbouncecount", "technical_bounces": "technicalbouncecount",
    "bounce_technical": "technicalbouncecount",
    "unknown_bounce": "unknownbouncecount", "unknown_bounces": "unknownbouncecount",
    "bounce_unknown": "unknownbouncecount",
    "unsub": "unsubscribecount", "unsubs": "unsubscribecount", "unsubscribe": "unsubscribecount",
    "unsubscribes": "unsubscribecount",
    "notsent": "notsentcount", "not_sent": "notsentcount",
}
"""Tracking aggregate names (as the tracking step counts them) -> send-request column suffix."""


def primary_id(table: CrmTable | str) -> str:
    return f"{CrmTable(table).value}id"


def parse_datetime(value: object) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def truthy(value: object) -> bool:
    return value in (True, 1, "1", "true", "True")


def recipient_from_row(table: CrmTable, row: Mapping[str, object], wanted: Sequence[str],
                       source: SendTarget | None) -> Recipient:
    """A Recipient from a contact/lead/account row (OData or FetchXML shape)."""
    record_id = str(row.get(primary_id(table)) or "")
    email = row.get("emailaddress1")
    attributes = {name: row.get(name) for name in wanted if name}
    state = row.get("statecode")
    return Recipient(
        ref=RecordRef(table, record_id),
        email=str(email) if email not in (None, "") else None,
        attributes=attributes,
        do_not_bulk_email=truthy(row.get("donotbulkemail")),
        do_not_email=truthy(row.get("donotemail")),
        active=state in (None, 0, "0"),
        source=source,
    )


class SendRequestColumns:
    """Names of the send-request table and its columns for one publisher prefix."""

    def __init__(self, prefix: str = "cesp") -> None:
        p = prefix
        self.prefix = p
        self.table = f"{p}_sendrequest"
        self.entity_set = f"{p}_sendrequests"
        self.id = f"{p}_sendrequestid"
        self.status = f"{p}_status"
        self.select = (
            self.id, f"{p}_name", self.status, f"{p}_targets", f"_{p}_campaignid_value", f"{p}_emailkey",
            f"{p}_sendclassificationkey", f"{p}_forcebatching", f"{p}_espjobid", "_ownerid_value", "createdon",
            f"_{p}_emailid_value", f"{p}_previewwouldsend",
        )
        self.email_nav = f"{p}_emailid"
        self.email_table = f"{p}_email"
        self.email_set = f"{p}_emails"
        self.email_key = f"{p}_customerkey"
        self.expand = f"{self.email_nav}($select={p}_name,{self.email_key})"
        """The picked e-mail's name and customer key, read with the request (a single-valued $expand)."""
        self.target_navs = {kind: f"{p}_sendrequest_{kind.value}" for kind in
                            (TargetKind.LIST, TargetKind.CONTACT, TargetKind.LEAD, TargetKind.ACCOUNT)}
        """The N:N target relationships (navigation property on the request -> the kind of target)."""

    def code(self, status: SendStatus) -> int:
        return STATUS_CODES[status]

    def from_row(self, row: Mapping[str, object]) -> SendRequest:
        p = self.prefix
        request_id = str(row.get(self.id) or "")
        try:
            status = STATUS_BY_CODE[int(row.get(self.status) or 0)]
        except (KeyError, TypeError, ValueError):
            status = SendStatus.FAILED
            log.warning("send_request_status_unknown", send_id=request_id, value=row.get(self.status))
        targets, invalid_targets = parse_targets(request_id, row.get(f"{p}_targets"), f"{p}_targets")
        email_key, email_name, email_problem = self._picked_email(row)
        return SendRequest(
            id=request_id,
            name=str(row.get(f"{p}_name") or ""),
            status=status,
            owner_id=str(row.get("_ownerid_value") or ""),
            targets=targets,
            invalid_targets=invalid_targets,
            email_key=email_key,
            email_name=email_name,
            email_problem=email_problem,
            preview_would_send=(int(row[f"{p}_previewwouldsend"]) if row.get(f"{p}_previewwouldsend") is not None
                                else None),
            send_classification_key=str(row.get(f"{p}_sendclassificationkey") or ""),
            campaign_id=(str(row[f"_{p}_campaignid_value"]) if row.get(f"_{p}_campaignid_value") else None),
            force_batching=truthy(row.get(f"{p}_forcebatching")),
            esp_job_id=(str(row[f"{p}_espjobid"]) if row.get(f"{p}_espjobid") else None),
            etag=(str(row["@odata.etag"]) if row.get("@odata.etag") else None),
            created_on=parse_datetime(row.get("createdon")),
        )

    def _picked_email(self, row: Mapping[str, object]) -> tuple[str, str, str]:
        """(e-mail key, e-mail name, problem): the e-mail lookup's customer key when the lookup is set
        (and expanded), else the text column ``<prefix>_emailkey`` that API users fill."""
        typed = str(row.get(f"{self.prefix}_emailkey") or "")
        if not row.get(f"_{self.email_nav}_value"):
            return typed, "", ""
        picked = row.get(self.email_nav)
        if not isinstance(picked, Mapping):  # not expanded (e.g. an update's representation): the caller's
            return typed, "", ""
        name = str(picked.get(f"{self.prefix}_name") or "")
        key = str(picked.get(self.email_key) or "").strip()
        if not key:
            return "", name, (f"the e-mail {name or row.get(f'_{self.email_nav}_value')!r} picked on the request "
                              f"has no customer key ({self.email_key}); pick an e-mail the connector refreshed "
                              "from the ESP, or fill its customer key")
        return key, name, ""

    def update_body(self, update: SendRequestUpdate) -> dict[str, object]:
        p = self.prefix
        body: dict[str, object] = {}
        if update.status is not None:
            body[self.status] = STATUS_CODES[SendStatus(update.status)]
        if update.reason is not None:
            body[f"{p}_reason"] = update.reason[:100_000]
        if update.esp_job_id is not None:
            body[f"{p}_espjobid"] = str(update.esp_job_id)[:100]
        integers = (("resolved", "resolved"), ("handed_over", "handedover"), ("skipped", "skipped"),
                    ("preview_resolved", "previewresolved"), ("preview_would_send", "previewwouldsend"))
        for name, column in integers:
            value = getattr(update, name)
            if value is not None:
                body[f"{p}_{column}"] = int(value)
        for name, column in (("skipped_by_reason", "skippedbyreason"), ("preview_skipped_by_reason",
                                                                         "previewskippedbyreason")):
            value = getattr(update, name)
            if value is not None:
                body[f"{p}_{column}"] = json.dumps(dict(value), sort_keys=True)
        for name, column in (("released_on", "releasedon"), ("previewed_on", "previewedon")):
            value = getattr(update, name)
            if value is not None:
                body[f"{p}_{column}"] = iso(value)
        if update.counts:
            for name, value in update.counts.items():
                column = COUNT_COLUMNS.get(str(name).lower())
                if column is None:
                    log.warning("send_count_unknown", count_name=name)
                    continue
                body[f"{p}_{column}"] = int(value)
            body[f"{p}_trackingupdatedon"] = iso(datetime.now(timezone.utc))
        return body


def iso(dt: datetime) -> str:
    """A Dataverse date-time value (UTC, seconds); a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


MAX_TARGET_PROBLEMS = 20
"""Invalid targets named one by one on a request; the rest are counted."""

TARGET_KINDS = ", ".join(k.value for k in TargetKind)
TARGETS_SHAPE = '[{"kind": "list", "id": "<GUID>"}, ...]'
_JSON_TYPES = {int: "number", float: "number", str: "string", bool: "boolean"}
_GUID = re.compile(r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$")


def parse_targets(request_id: str, raw: object,
                  column: str = "cesp_targets") -> tuple[tuple[SendTarget, ...], tuple[str, ...]]:
    """``[{"kind": "list", "id": "<guid>"}, ...]`` -> (valid targets, what is wrong with each invalid one).

    Nothing is dropped silently: every entry that cannot be read comes back as a problem
    that names it (its position and text) and says what is wrong; the send step decides
    (``[sends] invalid_targets``) whether the request fails or the valid rest is sent.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return (), ()
    try:
        items = json.loads(str(raw))
    except ValueError as exc:
        where = f" ({exc.msg} at line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        return (), (f"{column} is not valid JSON{where}; write it as {TARGETS_SHAPE}",)
    if items is None:
        return (), (f"{column} is JSON null; write it as {TARGETS_SHAPE}",)
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        kind = _JSON_TYPES.get(type(items), type(items).__name__)
        return (), (f"{column} is a JSON {kind}, not a list of targets; write it as {TARGETS_SHAPE}",)
    targets: list[SendTarget] = []
    problems: list[str] = []
    for number, item in enumerate(items, 1):
        try:
            targets.append(_target(item))
        except ValueError as exc:
            problems.append(f"target {number} {json.dumps(item, default=str)[:120]}: {exc}")
    if problems:
        log.debug("send_request_targets_invalid", send_id=request_id, count=len(problems), first=problems[0])
    if len(problems) > MAX_TARGET_PROBLEMS:
        rest = len(problems) - MAX_TARGET_PROBLEMS
        problems = problems[:MAX_TARGET_PROBLEMS] + [f"and {rest} more invalid target(s)"]
    return tuple(targets), tuple(problems)


def _target(item: object) -> SendTarget:
    if not isinstance(item, dict):
        raise ValueError('not an object with "kind" and "id"')
    kind, record_id = item.get("kind"), item.get("id")
    if kind is None or (isinstance(kind, str) and not kind.strip()):
        raise ValueError(f'no "kind" ({TARGET_KINDS})')
    try:
        target_kind = TargetKind(str(kind).strip().lower())
    except ValueError:
        raise ValueError(f"unknown kind {kind!r}; use one of {TARGET_KINDS}") from None
    if record_id is None or (isinstance(record_id, str) and not record_id.strip()):
        raise ValueError(f'no "id": give the GUID of the {target_kind.value}')
    found = _GUID.match(str(record_id).strip()) if isinstance(record_id, str) else None
    if found is None:
        raise ValueError(f"id {record_id!r} is not a GUID (like 00000000-0000-0000-0000-000000000000)")
    return SendTarget(target_kind, found.group(1).lower())
