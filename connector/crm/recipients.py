"""Recipients of a send target, streamed page by page from the Web API.

Static lists through the list-member association of their member type, dynamic
lists by running their FetchXML with paging cookies, a campaign through its lists,
single contacts, leads and accounts. Many single-record targets are read in sets:
one GET per set of ids of one table (``$filter`` with ``Microsoft.Dynamics.CRM.In``),
each URL kept under Dataverse's 32,768-character cap. Nothing is filtered here: the
send step decides about every recipient and reports each skip.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence
from urllib.parse import urlencode

import structlog

from connector.crm import fetchxml, longget
from connector.crm.odata import Call, ODataHttp
from connector.crm.records import (
    ENTITY_SETS,
    LIST_MEMBER_NAV,
    MEMBER_TABLE_BY_CODE,
    RECIPIENT_COLUMNS,
    primary_id,
    recipient_from_row,
)
from connector.errors import NotFoundError, PermanentPeerError
from connector.models import CrmTable, Recipient, SendTarget, TargetKind

log = structlog.get_logger(__name__)

MAX_URL_CHARS = longget.MAX_GET_URL
"""Longest request URL Dataverse takes outside ``$batch`` (32,768: "Compose HTTP requests and handle errors")."""

URL_MARGIN = 2_000
"""Kept free in a set's URL: room for a ``$skiptoken`` should the server page the reply anyway."""

RECORD_SET_MAX = 500
"""Ids per ``In`` filter at most: well below SQL Server's 2,100 query parameters behind Dataverse,
and about 23,000 characters of URL for GUIDs (what decides is ``MAX_URL_CHARS``)."""

MISSING_NAMED = 10
"""Missing records named one by one in the error; the rest are counted."""

FETCH_ANNOTATIONS = (
    'odata.include-annotations="Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords"'
)


def list_member_table(host: str, list_id: str, row: Mapping[str, object]) -> CrmTable:
    """The table a marketing list's members are in (its ``createdfromcode``); a list of any other
    member type is a ``PermanentPeerError``: only accounts, contacts and leads receive email."""
    try:
        return MEMBER_TABLE_BY_CODE[int(str(row.get("createdfromcode") or 2))]
    except (KeyError, ValueError) as exc:
        raise PermanentPeerError(
            f"Dataverse {host}: marketing list {list_id} has member type "
            f"{row.get('createdfromcode')!r}; only accounts (1), contacts (2) and leads (4) can receive email",
            "crm", "read marketing list") from exc


def missing_targets_error(host: str, missing: Sequence[str]) -> NotFoundError:
    """The error for record targets that do not exist (``"contact <id>"`` each), the first ones named."""
    named = ", ".join(missing[:MISSING_NAMED]) + (
        f" and {len(missing) - MISSING_NAMED} more" if len(missing) > MISSING_NAMED else "")
    return NotFoundError(f"Dataverse {host}: the send targets {len(missing)} record(s) that do not exist "
                         f"(deleted?): {named}; remove them from the send request's targets.", "crm", "read recipients")


class RecipientReader:
    """Streams the recipients of one target; one page in memory at a time."""

    def __init__(self, http: ODataHttp, page_size: int) -> None:
        self.http = http
        self.page_size = page_size

    def iter_recipients(self, target: SendTarget,
                        attributes: Mapping[CrmTable, Sequence[str]]) -> Iterator[Recipient]:
        kind = TargetKind(target.kind)
        if kind is TargetKind.LIST:
            yield from self._list_members(target.id, attributes, target)
        elif kind is TargetKind.CAMPAIGN:
            yield from self._campaign_members(target.id, attributes, target)
        else:
            yield from self._single(CrmTable(kind.value), target.id, attributes, target)

    def iter_record_targets(self, targets: Sequence[SendTarget],
                            attributes: Mapping[CrmTable, Sequence[str]]) -> Iterator[Recipient]:
        """The records of single-record targets (contact, lead, account), in target order.

        Read in sets (one GET per ``RECORD_SET_MAX`` ids of a table or fewer, as the URL cap
        allows); a target whose record does not exist is a ``NotFoundError`` naming it, raised
        before any recipient is yielded. Holds one row per target: callers pass bounded groups.
        """
        wanted: dict[CrmTable, list[str]] = {}
        for target in targets:
            wanted.setdefault(CrmTable(TargetKind(target.kind).value), []).append(target.id.lower())
        rows: dict[tuple[CrmTable, str], dict] = {}
        missing: list[str] = []
        for table, ids in wanted.items():
            unique = list(dict.fromkeys(ids))
            found = self._read_set(table, unique, self._columns(table, attributes), self._prefer(table, attributes))
            rows.update(((table, key), row) for key, row in found.items())
            missing += [f"{table.value} {key}" for key in unique if key not in found]
        if missing:
            raise missing_targets_error(self.http.host, missing)
        for target in targets:
            table = CrmTable(TargetKind(target.kind).value)
            yield recipient_from_row(table, rows[(table, target.id.lower())], attributes.get(table, ()), target)

    def missing_records(self, targets: Sequence[SendTarget]) -> list[SendTarget]:
        """The targets whose record does not exist, asked in sets (the id column only)."""
        wanted: dict[CrmTable, list[str]] = {}
        for target in targets:
            wanted.setdefault(CrmTable(TargetKind(target.kind).value), []).append(target.id.lower())
        found: set[tuple[CrmTable, str]] = set()
        for table, ids in wanted.items():
            found.update((table, key) for key in self._read_set(table, list(dict.fromkeys(ids)), [primary_id(table)]))
        return [t for t in targets if (CrmTable(TargetKind(t.kind).value), t.id.lower()) not in found]

    def _read_set(self, table: CrmTable, ids: Sequence[str], columns: Sequence[str],
                  prefer: str = "") -> dict[str, dict]:
        found: dict[str, dict] = {}
        pk = primary_id(table)
        call = Call("read recipients", table.value, idempotent=True)
        start = 0
        size = max(1, min(RECORD_SET_MAX, self.page_size))  # one page per set
        while start < len(ids):
            part, params = self._fitting(table, ids[start:start + size], columns)
            for page in self.http.iter_pages(ENTITY_SETS[table], call, params=params, prefer=prefer,
                                             page_size=self.page_size):
                for row in page.get("value", []):
                    found[str(row.get(pk) or "").lower()] = row
            start += len(part)
        return found

    def _fitting(self, table: CrmTable, ids: Sequence[str],
                 columns: Sequence[str]) -> tuple[Sequence[str], dict[str, str]]:
        """A head of ``ids`` whose GET stays within ``MAX_URL_CHARS`` (less the margin), with its query."""
        base = len(self.http.url(ENTITY_SETS[table])) + 1
        while True:
            values = ",".join(f"'{i}'" for i in ids)
            params = {"$select": ",".join(columns),
                      "$filter": f"Microsoft.Dynamics.CRM.In(PropertyName='{primary_id(table)}',"
                                 f"PropertyValues=[{values}])"}
            if base + len(urlencode(params)) <= MAX_URL_CHARS - URL_MARGIN or len(ids) == 1:
                return ids, params
            ids = ids[: max(1, len(ids) * 3 // 4)]

    def _columns(self, table: CrmTable, attributes: Mapping[CrmTable, Sequence[str]]) -> list[str]:
        """The ``$select`` of a table's rows (annotations the mapping wants are asked for by ``_prefer``)."""
        extra = [a for a in attributes.get(table, ()) if a and "@" not in a]
        return list(dict.fromkeys([primary_id(table), *RECIPIENT_COLUMNS[table], *extra]))

    @staticmethod
    def _prefer(table: CrmTable, attributes: Mapping[CrmTable, Sequence[str]], base: str = "") -> str:
        """``odata.include-annotations`` naming the annotations the mapping reads (``label`` lines), and ``base``."""
        wanted = list(dict.fromkeys(a.partition("@")[2] for a in attributes.get(table, ()) if "@" in a))
        if base:
            wanted = base.partition("=")[2].strip('"').split(",") + wanted
        return f'odata.include-annotations="{",".join(wanted)}"' if wanted else ""

    def _single(self, table: CrmTable, record_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                source: SendTarget) -> Iterator[Recipient]:
        call = Call("read recipient", table.value, record_id, idempotent=True)
        row = self.http.get_json(f"{ENTITY_SETS[table]}({record_id})", call,
                                 params={"$select": ",".join(self._columns(table, attributes))},
                                 headers=({"Prefer": prefer} if (prefer := self._prefer(table, attributes)) else None),
                                 accept=(404,))
        if row is None:
            raise NotFoundError(
                f"Dataverse {self.http.host}: the send targets {table.value} {record_id}, which does not exist "
                "(deleted?); remove it from the send request's targets.", "crm", "read recipient")
        yield recipient_from_row(table, row, attributes.get(table, ()), source)

    def _list_members(self, list_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                      source: SendTarget) -> Iterator[Recipient]:
        call = Call("read marketing list", "list", list_id, idempotent=True)
        row = self.http.get_json(f"lists({list_id})", call,
                                 params={"$select": "listname,type,createdfromcode,query"}, accept=(404,))
        if row is None:
            raise NotFoundError(f"Dataverse {self.http.host}: marketing list {list_id} named in the send "
                                "request does not exist", "crm", "read marketing list")
        table = list_member_table(self.http.host, list_id, row)
        columns = self._columns(table, attributes)
        wanted = attributes.get(table, ())
        if row.get("type") in (True, 1, "true"):
            query = row.get("query") or ""
            if not query:
                raise PermanentPeerError(f"Dataverse {self.http.host}: dynamic marketing list {list_id} has no "
                                         "query", "crm", "read marketing list")
            for member in self._fetch(table, query, columns, Call("run dynamic list query", "list", list_id,
                                                                  idempotent=True),
                                      self._prefer(table, attributes, FETCH_ANNOTATIONS)):
                yield recipient_from_row(table, member, wanted, source)
            return
        nav = LIST_MEMBER_NAV[table]
        members = Call("read list members", "list", list_id, idempotent=True)
        for page in self.http.iter_pages(f"lists({list_id})/{nav}", members, params={"$select": ",".join(columns)},
                                         prefer=self._prefer(table, attributes), page_size=self.page_size):
            for member in page.get("value", []):
                yield recipient_from_row(table, member, wanted, source)

    def _fetch(self, table: CrmTable, query: str, columns: Sequence[str], call: Call,
               prefer: str = FETCH_ANNOTATIONS) -> Iterator[dict]:
        name = fetchxml.entity_name(query)
        if name != table.value:
            raise PermanentPeerError(
                f"Dataverse {self.http.host}: {call.operation} on list {call.record}: the query reads {name!r} "
                f"but the list holds {table.value} records", "crm", call.operation)
        pk = primary_id(table)
        root = fetchxml.prepare(query, pk, columns)
        page_no, cookie, last_id = 1, None, None
        while True:
            if last_id is None:
                xml = fetchxml.page_query(root, page_no, self.page_size, cookie)
            else:  # no paging cookie: page 1 of the members after the last one read, never page numbers
                xml = fetchxml.page_query(fetchxml.after(root, pk, last_id), 1, self.page_size, None)
            page = longget.get_json(self.http, ENTITY_SETS[table], call, {"fetchXml": xml},
                                    {"Prefer": prefer})
            rows = page.get("value", [])
            yield from rows
            if not page.get("@Microsoft.Dynamics.CRM.morerecords") or not rows:
                return
            cookie = fetchxml.next_cookie(page.get("@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"))
            if cookie is None or last_id is not None:
                if last_id is None:
                    log.info("crm_fetch_paged_by_key", peer="crm", operation=call.operation, record=call.record,
                             reason="no paging cookie: simple paging would stop at 50,000 rows")
                last_id = str(rows[-1].get(pk) or "")
                if not last_id:
                    raise PermanentPeerError(
                        f"Dataverse {self.http.host}: {call.operation} on list {call.record}: a page without a "
                        f"paging cookie and without {pk}; cannot continue safely", "crm", call.operation)
            page_no += 1

    def _campaign_members(self, campaign_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                          source: SendTarget) -> Iterator[Recipient]:
        call = Call("read campaign lists", "campaign", campaign_id, idempotent=True)
        list_ids: list[str] = []
        try:
            for page in self.http.iter_pages(f"campaigns({campaign_id})/campaignlist_association", call,
                                             params={"$select": "listid"}, page_size=self.page_size):
                list_ids.extend(str(r["listid"]) for r in page.get("value", []) if r.get("listid"))
        except NotFoundError as exc:
            raise NotFoundError(f"Dataverse {self.http.host}: campaign {campaign_id} named in the send request "
                                "does not exist", "crm", call.operation) from exc
        for list_id in list_ids:
            yield from self._list_members(list_id, attributes, source)
