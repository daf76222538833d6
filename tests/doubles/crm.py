"""``FakeCrm``: a Dataverse organization in process, behind the ``CrmClient`` interface.

The organization's data is the sandbox's own ``DataverseStore`` (an in-memory SQLite
database with the Dataverse schema and the connector's customizations, or a file that
outlives a killed process): its columns, option codes, lookups, alternate keys and
normalization are the ones the sandbox serves over the Web API, and ``tests.fixtures.crm.
CrmSeeder`` seeds both the same way. Rows become models through the adapter's own mapping
(``connector.crm.records``: ``SendRequestColumns``, ``recipient_from_row``,
``parse_targets``). What the real adapter refuses, the double refuses (the contract suite,
tests/integration/test_crm_contract.py, runs over both):

- ids are GUIDs: any other key is Dataverse's 400 "Error in query syntax" (a
  ``PermanentPeerError`` from a read or update, a failed ``WriteResult`` from a bulk write);
- a record that is not there: ``None`` (a send request read), ``NotFoundError`` (an update,
  a user's roles, a list, campaign or record target), a ``not_found`` result (a write);
- a claim is guarded by the etag, and every write moves the etag on;
- a column the table does not have fails the read (400 "Could not find a property");
- campaign responses: the tracking key must be addressable (``connector.crm.keys``) and at
  most 100 characters (``unaddressable_key``), the campaign and the customer must exist, and the
  alternate key makes a repeat count as written; bounce details only on contacts and leads
  (``unsupported_table``).

Dynamic lists run their FetchXML, prepared and paged by the adapter's ``connector.crm.fetchxml``,
through the sandbox's own FetchXML evaluator. Change tracking pages the
rows changed since the link's version (the store's version numbers, as the sandbox's delta
endpoint does), then the deletions; an expired or garbled link is ``DeltaTokenExpired``. Not
modelled, and refused loudly rather than answered wrongly: the interface's optional parts the
double does not implement raise the interface's default ``NotImplementedError`` (record updates
for sync, the e-mail catalogue, requests by status, KPI rows); their tests run against the
sandbox only.

Test-facing parts (not on ``CrmClient``): ``store`` (seed it with ``CrmSeeder``), ``add_request``,
``add_list``, ``add_user``, ``add_contacts``, ``set_status``; what reached the CRM: ``requests``,
``updates``, ``responses``, ``response_attempts``, ``bounces``, ``opt_outs`` (this process's writes;
with ``db_file`` the organization itself outlives a killed process). Fault knobs: ``fail_pages``
(transient errors while paging recipients), ``fail_keys`` / ``gone_keys`` (a write of that key or
record fails transiently / with not_found), ``throttle_calls`` (the next N bulk writes are a 429),
``fail_updates`` (the next N send-request updates are a 503).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from connector.crm import fetchxml, keys
from connector.crm.base import CrmClient
from connector.crm.dataverse import is_guid
from connector.crm.odata import set_error_details
from connector.crm.recipients import list_member_table, missing_targets_error
from connector.crm.records import (
    ENTITY_SETS,
    RECIPIENT_COLUMNS,
    STATUS_CODES,
    SendRequestColumns,
    iso,
    primary_id,
    recipient_from_row,
)
from connector.crm.writes import TRACKING_KEY_LENGTH
from connector.errors import (
    DeltaTokenExpired,
    NotFoundError,
    PermanentPeerError,
    ThrottledError,
    TransientPeerError,
)
from connector.models import (
    BounceUpdate,
    CampaignResponse,
    CrmTable,
    Recipient,
    RecordRef,
    SendRequest,
    SendRequestUpdate,
    SendStatus,
    SendTarget,
    TargetKind,
    WriteResult,
)
from connector.sandbox.dataverse import apply_customizations
from connector.sandbox.dataverse.annotations import Annotations
from connector.sandbox.dataverse.fetchxml import run_fetch
from connector.sandbox.dataverse.query import CHANGE_TRACKING_DAYS
from connector.sandbox.dataverse.store import DataverseStore, StoreError, quote_ident, to_wire

HOST = "fake-crm"


def guid(label: str) -> str:
    """A stable GUID for a test's label (``guid("R1")``): the CRM takes no other ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cesp-test:{label}"))


def _bad_key(what: str, key: str, operation: str) -> PermanentPeerError:
    return PermanentPeerError(f"Dataverse {HOST}: {operation} on {what} {key} failed: HTTP 400 (0x80060888): "
                              f"Bad Request - Error in query syntax: key '{key}'.", "crm", operation)


def _not_found(what: str, key: str, operation: str) -> NotFoundError:
    return NotFoundError(f"Dataverse {HOST}: {operation} on {what} {key} failed: HTTP 404 (0x80040217): "
                         f"{what} With Id = {key} Does Not Exist", "crm", operation)


class FakeCrm(CrmClient):
    """One Dataverse organization in memory (see the module docstring for its rules)."""

    def __init__(self, db_file: Path | None = None, *, page_size: int = 5000) -> None:
        self.store = DataverseStore(db_file)
        apply_customizations(self.store)
        self.cols = SendRequestColumns()
        self.page_size = page_size  # change tracking's pages (Dataverse: 5,000 at most)
        self.min_delta_version = 0
        self.updates: list[tuple[str, SendRequestUpdate]] = []
        self.responses: dict[str, CampaignResponse] = {}
        self.response_attempts: Counter = Counter()
        self.bounces: dict[str, BounceUpdate] = {}
        self.opt_outs: set[str] = set()
        self.fail_pages = 0
        self.fail_keys: set[str] = set()
        self.gone_keys: set[str] = set()
        self.throttle_calls = 0
        self.fail_updates = 0
        self.lock = threading.Lock()

    # -- test-facing ---------------------------------------------------------------------------

    def add_user(self, roles: Sequence[str] = ("Marketing Manager",), user_id: str | None = None) -> str:
        """A CRM user holding these security roles; returns the user's id."""
        user = self.store.insert("systemusers", {**({"systemuserid": user_id} if user_id else {}),
                                                 "firstname": "Test", "lastname": "User"})
        for name in roles:
            found = [r["roleid"] for r in self.store.rows("roles") if r.get("name") == name]
            role = found[0] if found else self.store.insert("roles", {"name": name})
            self.store.associate("systemuserroles_association", user, role)
        return user

    def add_list(self, members: Sequence[Recipient], name: str = "Static") -> str:
        """A static marketing list of these contacts (inserted when new); returns the list id."""
        list_id = self.store.insert("lists", {"listname": name, "type": False, "createdfromcode": 2})
        for r in members:
            self._ensure_record(r)
            self.store.associate("listcontact_association", list_id, r.ref.id)
        return list_id

    def _ensure_record(self, r: Recipient) -> None:
        table = CrmTable(r.ref.table)
        entity_set = ENTITY_SETS[table]
        if self.store.get(entity_set, r.ref.id) is not None:
            return
        self.store.insert(entity_set, {primary_id(table): r.ref.id, "emailaddress1": r.email or None,
                                       "donotbulkemail": r.do_not_bulk_email, "donotemail": r.do_not_email,
                                       "statecode": 0 if r.active else 1, **dict(r.attributes)})

    def add_contacts(self, ids: Sequence[str]) -> None:
        """Contacts with these ids (left as they are when already there)."""
        for n, record_id in enumerate(ids):
            self._ensure_record(Recipient(RecordRef(CrmTable.CONTACT, record_id), f"p{n}@example.test"))

    def add_request(self, request_id: str, targets: Sequence[SendTarget | str] = (), owner: str | None = None,
                    status: SendStatus = SendStatus.PENDING, **columns: object) -> str:
        """A send request (list ids or targets); a new owner holding Marketing Manager unless given.

        An existing request of that id is set back to ``status`` (an admin's reset or retry)."""
        items = [{"kind": t.kind.value, "id": t.id} if isinstance(t, SendTarget) else {"kind": "list", "id": t}
                 for t in targets]
        row = {"cesp_name": f"Send {request_id}", "cesp_status": STATUS_CODES[status],
               "cesp_targets": json.dumps(items), **columns}
        if self.store.get("cesp_sendrequests", request_id) is not None:
            self.store.patch("cesp_sendrequests", request_id, {"cesp_status": STATUS_CODES[status]})
            return request_id
        row["ownerid"] = ("systemuser", owner or self.add_user())
        return self.store.insert("cesp_sendrequests", {"cesp_sendrequestid": request_id, **row})

    def set_status(self, request_id: str, status: SendStatus) -> None:
        """What a CRM user does to the request (cancel it, set it back to Pending)."""
        self.store.patch("cesp_sendrequests", request_id, {"cesp_status": STATUS_CODES[status]})

    @property
    def requests(self) -> Mapping[str, SendRequest]:
        """Every send request, as the adapter would read it."""
        return {r.id: r for r in (self.cols.from_row(row) for row in self._request_rows())}

    # -- send requests -------------------------------------------------------------------------

    def _request_rows(self) -> list[dict]:
        return list(self.store.rows("cesp_sendrequests"))

    def _request_row(self, request_id: str, operation: str) -> dict | None:
        if not is_guid(request_id):
            raise _bad_key("cesp_sendrequest", request_id, operation)
        return self.store.get("cesp_sendrequests", request_id)

    def pending_send_requests(self, limit: int = 50) -> list[SendRequest]:
        code = STATUS_CODES[SendStatus.PENDING]
        rows = sorted((r for r in self._request_rows() if r.get("cesp_status") == code),
                      key=lambda r: str(r.get("createdon") or ""))
        return [self.cols.from_row(r) for r in rows[:max(1, limit)]]

    def get_send_request(self, request_id: str) -> SendRequest | None:
        row = self._request_row(request_id, "read send request")
        return self.cols.from_row(row) if row is not None else None

    def claim_send_request(self, request: SendRequest) -> SendRequest | None:
        with self.lock:
            row = self._request_row(request.id, "claim send request")
            if row is None or (request.etag and row.get("@odata.etag") != request.etag):
                return None  # 404 / 412: someone else has it
            self.store.patch("cesp_sendrequests", request.id, {"cesp_status": STATUS_CODES[SendStatus.PROCESSING]})
            return self.get_send_request(request.id)

    def set_status_if_match(self, request: SendRequest, status: SendStatus) -> bool:
        with self.lock:
            row = self._request_row(request.id, "write send request status")
            if row is None or (request.etag and row.get("@odata.etag") != request.etag):
                return False  # 404 / 412
            self.store.patch("cesp_sendrequests", request.id, {"cesp_status": STATUS_CODES[status]})
            return True

    def update_send_request(self, request_id: str, update: SendRequestUpdate) -> None:
        body = self.cols.update_body(update)
        if not body:
            return
        if self.fail_updates > 0:
            self.fail_updates -= 1
            raise TransientPeerError("Dataverse: 503 Service Unavailable", peer="crm", operation="update")
        with self.lock:
            if self._request_row(request_id, "update send request") is None:
                raise _not_found("cesp_sendrequest", request_id, "update send request")
            self.store.patch("cesp_sendrequests", request_id, body)
            self.updates.append((request_id, update))

    # -- metadata and roles --------------------------------------------------------------------

    def column_names(self, table: CrmTable) -> frozenset[str]:
        e = self.store.entity_for_set(ENTITY_SETS[CrmTable(table)])
        return frozenset(e.attributes)

    def role_names(self) -> frozenset[str]:
        return frozenset(str(r["name"]) for r in self.store.rows("roles") if r.get("name"))

    def user_role_names(self, user_id: str) -> set[str]:
        if not is_guid(user_id):
            raise _bad_key("systemuser", user_id, "read security roles")
        if self.store.get("systemusers", user_id) is None:
            raise _not_found("systemuser", user_id, "read security roles")
        roles = list(self.store.associated_ids("systemuserroles_association", user_id))
        for team in self.store.associated_ids("teammembership_association", user_id):
            roles += self.store.associated_ids("teamroles_association", team)
        return {str(self.store.get("roles", r)["name"]) for r in roles if self.store.get("roles", r)}

    # -- recipients ----------------------------------------------------------------------------

    def _columns(self, table: CrmTable, attributes: Mapping[CrmTable, Sequence[str]], operation: str,
                 what: str, key: str) -> list[str]:
        columns = list(dict.fromkeys([primary_id(table), *RECIPIENT_COLUMNS[table],
                                      *(a for a in attributes.get(table, ()) if a and "@" not in a)]))
        known = self.column_names(table)
        entity = self.store.entity_for_set(ENTITY_SETS[table])
        for name in columns:
            if name not in known and entity.by_wire_name(name) is None:  # a lookup is read as _<name>_value
                raise PermanentPeerError(
                    f"Dataverse {HOST}: {operation} on {what} {key} failed: HTTP 400 (0x80060888): Could not find "
                    f"a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table.value}'.. If this names a "
                    "connector table or column, run `connector crm-setup -c service.ini`", "crm", operation)
        return columns

    def _recipient(self, table: CrmTable, record_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                   source: SendTarget, columns: Sequence[str]) -> Recipient:
        entity = self.store.entity_for_set(ENTITY_SETS[table])
        raw = self.store.get_raw(entity, record_id)
        assert raw is not None
        row = to_wire(entity, raw, columns, annotate=self._annotations(table, attributes))
        return recipient_from_row(table, row, attributes.get(table, ()), source)

    def _annotations(self, table: CrmTable, attributes: Mapping[CrmTable, Sequence[str]]) -> Annotations:
        """What the adapter asks for: the annotations its mapping names (``label`` lines), none otherwise."""
        return Annotations(",".join(dict.fromkeys(a.partition("@")[2] for a in attributes.get(table, ()) if "@" in a)),
                           self.store)

    def iter_recipients(self, target: SendTarget,
                        attributes: Mapping[CrmTable, Sequence[str]]) -> Iterator[Recipient]:
        kind = TargetKind(target.kind)
        if kind is TargetKind.LIST:
            members = self._list_members(target.id, attributes, target)
        elif kind is TargetKind.CAMPAIGN:
            members = self._campaign_members(target.id, attributes, target)
        else:
            members = self._single(CrmTable(kind.value), target.id, attributes, target)
        for index, recipient in enumerate(members):
            if self.fail_pages and index and index % 3 == 0:
                self.fail_pages -= 1
                raise TransientPeerError("CRM said 429", peer="crm", operation="iter_recipients")
            yield recipient

    def _single(self, table: CrmTable, record_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                source: SendTarget) -> Iterator[Recipient]:
        if not is_guid(record_id):
            raise _bad_key(table.value, record_id, "read recipient")
        columns = self._columns(table, attributes, "read recipient", table.value, record_id)
        if self.store.get(ENTITY_SETS[table], record_id) is None:
            raise NotFoundError(f"Dataverse {HOST}: the send targets {table.value} {record_id}, which does not exist "
                                "(deleted?); remove it from the send request's targets.", "crm", "read recipient")
        yield self._recipient(table, record_id, attributes, source, columns)

    def _list_members(self, list_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                      source: SendTarget) -> Iterator[Recipient]:
        if not is_guid(list_id):
            raise _bad_key("list", list_id, "read marketing list")
        row = self.store.get("lists", list_id)
        if row is None:
            raise NotFoundError(f"Dataverse {HOST}: marketing list {list_id} named in the send request does not "
                                "exist", "crm", "read marketing list")
        table = list_member_table(HOST, list_id, row)
        if row.get("type") in (True, 1, "true"):
            yield from self._dynamic_members(table, list_id, str(row.get("query") or ""), attributes, source)
            return
        columns = self._columns(table, attributes, "read list members", "list", list_id)
        for member in self.store.list_members(list_id):
            if self.store.get(ENTITY_SETS[table], member) is not None:
                yield self._recipient(table, member, attributes, source, columns)

    def _dynamic_members(self, table: CrmTable, list_id: str, query: str,
                         attributes: Mapping[CrmTable, Sequence[str]], source: SendTarget) -> Iterator[Recipient]:
        """A dynamic list: its FetchXML prepared and paged as the adapter does (``connector.crm.fetchxml``),
        run by the sandbox's own FetchXML evaluator on the organization's data."""
        if not query:
            raise PermanentPeerError(f"Dataverse {HOST}: dynamic marketing list {list_id} has no query", "crm",
                                     "read marketing list")
        name = fetchxml.entity_name(query)
        if name != table.value:
            raise PermanentPeerError(f"Dataverse {HOST}: run dynamic list query on list {list_id}: the query reads "
                                     f"{name!r} but the list holds {table.value} records", "crm",
                                     "run dynamic list query")
        columns = self._columns(table, attributes, "run dynamic list query", "list", list_id)
        root = fetchxml.prepare(query, primary_id(table), columns)
        entity = self.store.entity_for_set(ENTITY_SETS[table])
        page_no, cookie = 1, None
        while True:
            try:
                rows, more, annotation = run_fetch(self.store, entity, fetchxml.page_query(root, page_no, 5000, cookie),
                                                   annotate=self._annotations(table, attributes))
            except StoreError as exc:
                raise PermanentPeerError(f"Dataverse {HOST}: run dynamic list query on list {list_id} failed: HTTP "
                                         f"{exc.status} ({exc.code}): {exc.message}", "crm",
                                         "run dynamic list query") from exc
            for member in rows:
                yield recipient_from_row(table, member, attributes.get(table, ()), source)
            if not more or not rows:
                return
            cookie, page_no = fetchxml.next_cookie(annotation), page_no + 1

    def _campaign_members(self, campaign_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                          source: SendTarget) -> Iterator[Recipient]:
        if not is_guid(campaign_id):
            raise _bad_key("campaign", campaign_id, "read campaign lists")
        if self.store.get("campaigns", campaign_id) is None:
            raise NotFoundError(f"Dataverse {HOST}: campaign {campaign_id} named in the send request does not exist",
                                "crm", "read campaign lists")
        for list_id in self.store.associated_ids("campaignlist_association", campaign_id):
            yield from self._list_members(list_id, attributes, source)

    def _exists(self, target: SendTarget) -> bool:
        table = CrmTable(TargetKind(target.kind).value)
        return is_guid(target.id) and self.store.get(ENTITY_SETS[table], target.id) is not None

    def iter_record_targets(self, targets: Sequence[SendTarget],
                            attributes: Mapping[CrmTable, Sequence[str]]) -> Iterator[Recipient]:
        tables = {CrmTable(TargetKind(t.kind).value) for t in targets}
        columns = {t: self._columns(t, attributes, "read recipients", t.value, "(set)") for t in tables}
        missing = list(dict.fromkeys(f"{TargetKind(t.kind).value} {t.id.lower()}" for t in targets
                                     if not self._exists(t)))
        if missing:
            raise missing_targets_error(HOST, missing)
        for t in targets:
            table = CrmTable(TargetKind(t.kind).value)
            yield self._recipient(table, t.id.lower(), attributes, t, columns[table])

    def missing_records(self, targets: Sequence[SendTarget]) -> list[SendTarget]:
        return [t for t in targets if not self._exists(t)]

    def find_records(self, ids: Sequence[str]) -> dict[str, RecordRef]:
        found: dict[str, RecordRef] = {}
        for record_id in ids:
            if not is_guid(record_id):
                continue
            for table in (CrmTable.CONTACT, CrmTable.LEAD, CrmTable.ACCOUNT):
                if self.store.get(ENTITY_SETS[table], record_id.lower()) is not None:
                    found[record_id] = RecordRef(table, record_id)
                    break
        return found

    # -- writes --------------------------------------------------------------------------------

    def _storm(self) -> None:
        if self.throttle_calls > 0:
            self.throttle_calls -= 1
            raise ThrottledError("Dataverse: 429 Too Many Requests", peer="crm", operation="$batch", retry_after=1)

    def _knob_result(self, key: str) -> WriteResult | None:
        if key in self.gone_keys:
            return WriteResult(key, False, "record does not exist", "not_found")
        if key in self.fail_keys:
            return WriteResult(key, False, "HTTP 503: try later", "503")
        return None

    def _record_problem(self, key: str, table: CrmTable, record_id: str) -> WriteResult | None:
        if not is_guid(record_id):
            return WriteResult(key, False, f"HTTP 400 (0x80060888): Bad Request - Error in query syntax: key "
                                           f"'{record_id}'.", "400")
        if self.store.get(ENTITY_SETS[table], record_id) is None:
            return WriteResult(key, False, f"HTTP 404 (0x80040217): {table.value} With Id = {record_id} Does Not "
                                           "Exist", "not_found")
        return None

    def create_campaign_responses(self, responses: Sequence[CampaignResponse]) -> list[WriteResult]:
        self._storm()
        out = []
        for r in responses:
            if not keys.addressable(r.tracking_key) or len(r.tracking_key) > TRACKING_KEY_LENGTH:
                out.append(WriteResult(r.tracking_key, False, f"tracking key {r.tracking_key!r} cannot address a "
                                       "Dataverse record", "unaddressable_key"))
                continue
            bad = (self._knob_result(r.tracking_key) or self._campaign_problem(r)
                   or self._record_problem(r.tracking_key, CrmTable(r.customer.table), r.customer.id))
            if bad:
                out.append(bad)
                continue
            with self.lock:
                self.response_attempts[r.tracking_key] += 1
                if self._create_response(r):
                    self.responses[r.tracking_key] = r
            out.append(WriteResult(r.tracking_key, True))
        return out

    def _campaign_problem(self, r: CampaignResponse) -> WriteResult | None:
        if not is_guid(r.campaign_id):
            return WriteResult(r.tracking_key, False, f"HTTP 400 (0x80060888): Bad Request - Error in query syntax: "
                                                      f"key '{r.campaign_id}'.", "400")
        if self.store.get("campaigns", r.campaign_id) is None:
            return WriteResult(r.tracking_key, False, f"HTTP 404 (0x80040217): campaign With Id = {r.campaign_id} "
                                                      "Does Not Exist", "not_found")
        return None

    def _create_response(self, r: CampaignResponse) -> bool:
        """Insert by the alternate key (If-None-Match: *); False when a response has the key already."""
        row = {"cesp_trackingkey": r.tracking_key, "subject": r.subject[:200], "responsecode": r.response_code,
               "channeltypecode": r.channel_code, "receivedon": iso(r.received_on),
               "regardingobjectid": ("campaign", r.campaign_id), "emailaddress": r.email[:100] or None,
               "description": r.description or None}
        try:
            response_id = self.store.insert("campaignresponses", row)
        except StoreError as exc:
            if exc.status == 412:
                return False
            raise
        if r.closed:
            self.store.patch("campaignresponses", response_id, {"statecode": 1, "statuscode": 2})
        return True

    def set_bounces(self, updates: Sequence[BounceUpdate]) -> list[WriteResult]:
        self._storm()
        out = []
        for u in updates:
            table = CrmTable(u.ref.table)
            if table not in (CrmTable.CONTACT, CrmTable.LEAD):
                out.append(WriteResult(u.ref.id, False, f"bounce details are kept on contacts and leads, not on "
                                                        f"{table.value} records", "unsupported_table"))
                continue
            bad = self._knob_result(u.ref.id) or self._record_problem(u.ref.id, table, u.ref.id)
            if bad:
                out.append(bad)
                continue
            self.store.patch(ENTITY_SETS[table], u.ref.id, {
                "cesp_lastbounceon": iso(u.bounced_on), "cesp_lastbouncetype": str(u.bounce_type.value)[:20],
                "cesp_lastbouncejob": str(u.job_id)[:100]})
            self.bounces[u.ref.id] = u
            out.append(WriteResult(u.ref.id, True))
        return out

    def set_opt_outs(self, refs: Sequence[RecordRef]) -> list[WriteResult]:
        self._storm()
        out = []
        for ref in refs:
            table = CrmTable(ref.table)
            bad = self._knob_result(ref.id) or self._record_problem(ref.id, table, ref.id)
            if bad:
                out.append(bad)
                continue
            self.store.patch(ENTITY_SETS[table], ref.id, {"donotbulkemail": True})
            self.opt_outs.add(ref.id)
            out.append(WriteResult(ref.id, True))
        return out

    def tracking_key_status(self) -> tuple[str, str]:
        """The status of the tracking key as the organization builds it (the sandbox's key jobs)."""
        key = self.store.schema.entities["campaignresponse"].keys.get("cesp_trackingkey_key")
        name = "campaignresponse.cesp_trackingkey_key"
        return (key.status or "Active", name) if key is not None else ("Missing", name)

    def expire_delta_links(self) -> None:
        """Every change-tracking link handed out so far is expired (a full resync is needed)."""
        self.min_delta_version = self.store.version + 1

    def iter_changes(self, table: CrmTable, columns: Sequence[str],
                     delta_link: str | None) -> Iterator[tuple[list[dict], list[str], str | None]]:
        """Change tracking as Dataverse pages it: the rows changed since the link's version up to a
        snapshot taken at the start (later changes come with the next link), then the deletions,
        ``page_size`` a page, the new link on the last page only."""
        table = CrmTable(table)
        e = self.store.entity_for_set(ENTITY_SETS[table])
        if delta_link:
            select, since = self._parse_delta_link(table, delta_link)
        else:
            select, since = list(dict.fromkeys([primary_id(table), *columns])), 0
            self._columns(table, {table: select}, "read changes", table.value, "(changes)")
        snap = self.store.version
        cols = self.store.columns(e)
        rows = [dict(zip(cols, r)) for r in self.store.execute(
            f"SELECT {', '.join(quote_ident(c) for c in cols)} FROM {quote_ident('e_' + e.logical_name)}"
            " WHERE versionnumber > ? AND versionnumber <= ? ORDER BY versionnumber", (since, snap))]
        items: list[dict | str] = [to_wire(e, raw, select) for raw in rows]
        if since > 0:
            items += [str(rid) for rid, in self.store.execute(
                "SELECT id FROM _deleted WHERE entity = ? AND version > ? AND version <= ? ORDER BY version",
                (e.logical_name, since, snap))]
        stamp = datetime.now(timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
        link = f"{HOST}/{e.entity_set}?$select={','.join(select)}&$deltatoken={snap}!{stamp}"
        for start in range(0, max(len(items), 1), self.page_size):
            page = items[start:start + self.page_size]
            last = start + self.page_size >= len(items)
            yield ([i for i in page if isinstance(i, dict)], [i for i in page if isinstance(i, str)],
                   link if last else None)

    def _parse_delta_link(self, table: CrmTable, link: str) -> tuple[list[str], int]:
        found = re.fullmatch(rf"{re.escape(HOST)}/{ENTITY_SETS[table]}\?\$select=([\w,]+)&\$deltatoken=(.*)", link)
        token = re.fullmatch(r"(\d+)!(\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2})", found.group(2).strip()) if found else None
        why = "The delta token is not valid. Please perform a full sync."
        if token is not None:
            version = int(token.group(1))
            issued = datetime.strptime(token.group(2), "%m/%d/%Y %H:%M:%S").replace(tzinfo=timezone.utc)
            if version > self.store.version:
                token = None
            elif version < self.min_delta_version or datetime.now(timezone.utc) - issued > timedelta(
                    days=CHANGE_TRACKING_DAYS):
                why, token = "Version stamp associated with the client has expired. Please perform a full sync.", None
        if token is None or found is None:
            raise set_error_details(DeltaTokenExpired(
                f"Dataverse {HOST}: the change-tracking token for {table.value} has expired or is no longer valid "
                f"(HTTP 400 (0x80044352): {why}); a full resync is needed", "crm", "read changes"), 400,
                "delta_expired")
        return found.group(1).split(","), int(token.group(1))

    def close(self) -> None:
        """Nothing to release: the organization lives as long as the double (steps close their clients)."""


__all__ = ["FakeCrm", "guid"]
