"""``DataverseCrmClient``: the CRM interface on the Dataverse / Dynamics 365 Web API.

Wire details live in ``odata`` (sessions, retries, errors), ``batch`` ($batch),
``fetchxml`` (dynamic lists) and ``records`` (OData rows <-> project types).
Column names follow docs/contracts.md with the publisher prefix of ``[crm] prefix``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

import structlog

from connector.crm import fetchxml
from connector.crm.auth import MsalTokenProvider, ntlm_auth
from connector.crm.base import CrmClient, records_by_ref
from connector.crm.batch import MAX_BATCH, BatchOp, build_batch, parse_batch
from connector.crm.odata import Call, ODataHttp
from connector.crm.records import (
    ENTITY_SETS,
    LIST_MEMBER_NAV,
    MEMBER_TABLE_BY_CODE,
    RECIPIENT_COLUMNS,
    SendRequestColumns,
    primary_id,
    recipient_from_row,
)
from connector.errors import ConfigError, NotFoundError, PeerError, PermanentPeerError
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

log = structlog.get_logger(__name__)

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
FIND_CHUNK = 100
"""Ids per ``Microsoft.Dynamics.CRM.In`` filter: ~4 KB of URL, far below the 32 KB cap."""
FETCH_ANNOTATIONS = (
    'odata.include-annotations="Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords"'
)
DELTA_EXPIRED_HINTS = ("expired", "full sync", "0x80044352")


def is_guid(value: str) -> bool:
    return bool(GUID.match(value or ""))


def odata_string(value: str) -> str:
    """A string literal for a URL key or filter: quotes doubled, then percent-encoded."""
    return "'" + quote(value.replace("'", "''"), safe="") + "'"


def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class DataverseCrmClient(CrmClient):
    """Dynamics 365 / Dataverse Web API client (thread-safe; one session per thread)."""

    def __init__(self, http: ODataHttp, *, prefix: str = "cesp", page_size: int = 5000,
                 batch_size: int = 500) -> None:
        self.http = http
        self.prefix = prefix
        self.page_size = max(1, min(page_size, 5000))
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.cols = SendRequestColumns(prefix)

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_config(cls, config: object) -> "DataverseCrmClient":
        crm = config.crm  # type: ignore[attr-defined]
        timeout = float(config.timeouts.crm_seconds)  # type: ignore[attr-defined]
        if not crm.url:
            raise ConfigError("[crm] url is required (https://<org>.crm.dynamics.com)", section="crm", key="url")
        tokens = auth = None
        if crm.auth == "oauth":
            missing = [k for k in ("authority", "client_id") if not getattr(crm, k)]
            if crm.client_secret is None:
                missing.append("client_secret")
            if missing:
                raise ConfigError(
                    f"[crm] auth = oauth needs {', '.join('[crm] ' + m for m in missing)} "
                    "(the secret from CONNECTOR_CRM_CLIENT_SECRET or the secrets file)",
                    section="crm", key=missing[0])
            tokens = MsalTokenProvider(
                authority=crm.authority, client_id=crm.client_id,
                client_secret=crm.client_secret.get_secret_value(), org_url=crm.url,
                verify=str(crm.ca_bundle) if crm.ca_bundle else True, timeout=timeout,
                ca_bundle=crm.ca_bundle)
        else:
            password = crm.password.get_secret_value() if crm.password is not None else ""
            auth = ntlm_auth(crm.username, password)
        http = ODataHttp(crm.url, api_version=crm.api_version, tokens=tokens, auth=auth,
                         ca_bundle=crm.ca_bundle, timeout=timeout, max_retries=crm.max_retries)
        return cls(http, prefix=crm.prefix, page_size=crm.page_size, batch_size=crm.batch_size)

    def close(self) -> None:
        self.http.close()

    # -- send requests ------------------------------------------------------------
    def pending_send_requests(self, limit: int = 50) -> list[SendRequest]:
        c = self.cols
        params = {
            "$select": ",".join(c.select),
            "$filter": f"{c.status} eq {c.code(SendStatus.PENDING)}",
            "$orderby": "createdon asc",
            "$top": str(max(1, limit)),
        }
        page = self.http.get_json(c.entity_set, Call("read pending send requests", c.table, idempotent=True),
                                  params=params)
        return [c.from_row(row) for row in (page or {}).get("value", [])]

    def get_send_request(self, request_id: str) -> SendRequest | None:
        c = self.cols
        row = self.http.get_json(f"{c.entity_set}({request_id})",
                                 Call("read send request", c.table, request_id, idempotent=True),
                                 params={"$select": ",".join(c.select)}, accept=(404,))
        return c.from_row(row) if row is not None else None

    def claim_send_request(self, request: SendRequest) -> SendRequest | None:
        c = self.cols
        call = Call("claim send request", c.table, request.id, idempotent=True)
        headers = {"If-Match": request.etag or "*", "Prefer": "return=representation"}
        resp = self.http.request(
            "PATCH", f"{c.entity_set}({request.id})?$select={','.join(c.select)}", call,
            json_body={c.status: c.code(SendStatus.PROCESSING)}, headers=headers, accept=(412, 404))
        try:
            if resp.status_code in (412, 404):
                log.info("send_claim_lost", send_id=request.id, status=resp.status_code)
                return None
            if resp.status_code == 200 and resp.content:
                return c.from_row(resp.json())
        finally:
            resp.close()
        return self.get_send_request(request.id)

    def update_send_request(self, request_id: str, update: SendRequestUpdate) -> None:
        c = self.cols
        body = c.update_body(update)
        if not body:
            return
        call = Call("update send request", c.table, request_id, idempotent=True)
        self.http.request("PATCH", f"{c.entity_set}({request_id})", call, json_body=body,
                          headers={"If-Match": "*"}).close()

    def user_role_names(self, user_id: str) -> set[str]:
        call = Call("read security roles", "systemuser", user_id, idempotent=True)
        names: set[str] = set()
        for page in self.http.iter_pages(f"systemusers({user_id})/systemuserroles_association", call,
                                         params={"$select": "name"}, page_size=self.page_size):
            names.update(str(r["name"]) for r in page.get("value", []) if r.get("name"))
        names.update(self._team_role_names(user_id))
        return names

    def _team_role_names(self, user_id: str) -> set[str]:
        """Roles held through team membership; skipped where the organization does not expose it."""
        call = Call("read team roles", "systemuser", user_id, idempotent=True)
        names: set[str] = set()
        try:
            teams = [str(t["teamid"]) for page in self.http.iter_pages(
                f"systemusers({user_id})/teammembership_association", call,
                params={"$select": "teamid"}, page_size=self.page_size) for t in page.get("value", [])]
            for team_id in teams:
                for page in self.http.iter_pages(f"teams({team_id})/teamroles_association", call,
                                                 params={"$select": "name"}, page_size=self.page_size):
                    names.update(str(r["name"]) for r in page.get("value", []) if r.get("name"))
        except PermanentPeerError as exc:
            if getattr(exc, "status", None) in (400, 404):
                log.debug("crm_team_roles_unavailable", user_id=user_id)
                return set()
            raise
        return names

    # -- recipients ---------------------------------------------------------------
    def iter_recipients(self, target: SendTarget, attributes: Mapping[CrmTable, Sequence[str]]) -> Iterator[Recipient]:
        kind = TargetKind(target.kind)
        if kind is TargetKind.LIST:
            yield from self._list_members(target.id, attributes, target)
        elif kind is TargetKind.CAMPAIGN:
            yield from self._campaign_members(target.id, attributes, target)
        else:
            yield from self._single(CrmTable(kind.value), target.id, attributes, target)

    def _columns(self, table: CrmTable, attributes: Mapping[CrmTable, Sequence[str]]) -> list[str]:
        extra = [a for a in attributes.get(table, ()) if a]
        return list(dict.fromkeys([primary_id(table), *RECIPIENT_COLUMNS[table], *extra]))

    def _single(self, table: CrmTable, record_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                source: SendTarget) -> Iterator[Recipient]:
        call = Call("read recipient", table.value, record_id, idempotent=True)
        row = self.http.get_json(f"{ENTITY_SETS[table]}({record_id})", call,
                                 params={"$select": ",".join(self._columns(table, attributes))}, accept=(404,))
        if row is None:
            raise NotFoundError(
                f"Dataverse {self.http.host}: the send targets {table.value} {record_id}, which does not exist "
                "(deleted?); remove it from the send request's targets", "crm", "read recipient")
        yield recipient_from_row(table, row, attributes.get(table, ()), source)

    def _list_members(self, list_id: str, attributes: Mapping[CrmTable, Sequence[str]],
                      source: SendTarget) -> Iterator[Recipient]:
        call = Call("read marketing list", "list", list_id, idempotent=True)
        row = self.http.get_json(f"lists({list_id})", call,
                                 params={"$select": "listname,type,createdfromcode,query"}, accept=(404,))
        if row is None:
            raise NotFoundError(f"Dataverse {self.http.host}: marketing list {list_id} named in the send "
                                "request does not exist", "crm", "read marketing list")
        try:
            table = MEMBER_TABLE_BY_CODE[int(row.get("createdfromcode") or 2)]
        except (KeyError, ValueError) as exc:
            raise PermanentPeerError(
                f"Dataverse {self.http.host}: marketing list {list_id} has member type "
                f"{row.get('createdfromcode')!r}; only accounts (1), contacts (2) and leads (4) can receive email",
                "crm", "read marketing list") from exc
        columns = self._columns(table, attributes)
        wanted = attributes.get(table, ())
        if row.get("type") in (True, 1, "true"):
            query = row.get("query") or ""
            if not query:
                raise PermanentPeerError(f"Dataverse {self.http.host}: dynamic marketing list {list_id} has no "
                                         "query", "crm", "read marketing list")
            for member in self._fetch(table, query, columns, Call("run dynamic list query", "list", list_id,
                                                                  idempotent=True)):
                yield recipient_from_row(table, member, wanted, source)
            return
        nav = LIST_MEMBER_NAV[table]
        members = Call("read list members", "list", list_id, idempotent=True)
        for page in self.http.iter_pages(f"lists({list_id})/{nav}", members,
                                         params={"$select": ",".join(columns)}, page_size=self.page_size):
            for member in page.get("value", []):
                yield recipient_from_row(table, member, wanted, source)

    def _fetch(self, table: CrmTable, query: str, columns: Sequence[str], call: Call) -> Iterator[dict]:
        name = fetchxml.entity_name(query)
        if name != table.value:
            raise PermanentPeerError(
                f"Dataverse {self.http.host}: {call.operation} on list {call.record}: the query reads {name!r} "
                f"but the list holds {table.value} records", "crm", call.operation)
        root = fetchxml.prepare(query, primary_id(table), columns)
        page_no, cookie = 1, None
        while True:
            xml = fetchxml.page_query(root, page_no, self.page_size, cookie)
            page = self.http.get_json(ENTITY_SETS[table], call, params={"fetchXml": xml},
                                      headers={"Prefer": FETCH_ANNOTATIONS})
            rows = (page or {}).get("value", [])
            yield from rows
            more = (page or {}).get("@Microsoft.Dynamics.CRM.morerecords")
            if not more or not rows:
                return
            cookie = fetchxml.next_cookie((page or {}).get("@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"))
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

    # -- lookups ------------------------------------------------------------------
    def find_records(self, ids: Sequence[str]) -> dict[str, RecordRef]:
        wanted = {i.lower(): i for i in ids if is_guid(i)}
        found: dict[str, RecordRef] = {}
        for table in (CrmTable.CONTACT, CrmTable.LEAD, CrmTable.ACCOUNT):
            remaining = [k for k in wanted if wanted[k] not in found]
            pk = primary_id(table)
            for start in range(0, len(remaining), FIND_CHUNK):
                chunk = remaining[start:start + FIND_CHUNK]
                values = ",".join(f"'{i}'" for i in chunk)
                params = {"$select": pk,
                          "$filter": f"Microsoft.Dynamics.CRM.In(PropertyName='{pk}',PropertyValues=[{values}])"}
                call = Call("find records", table.value, idempotent=True)
                for page in self.http.iter_pages(ENTITY_SETS[table], call, params=params, page_size=5000):
                    for row in page.get("value", []):
                        key = str(row.get(pk, "")).lower()
                        if key in wanted:
                            found[wanted[key]] = RecordRef(table, wanted[key])
        return found

    # -- writes ---------------------------------------------------------------------
    def create_campaign_responses(self, responses: Sequence[CampaignResponse]) -> list[WriteResult]:
        ops: list[tuple[str, BatchOp, bool]] = []
        key_col = f"{self.prefix}_trackingkey"
        for r in responses:
            path = f"campaignresponses({key_col}={odata_string(r.tracking_key)})"
            ops.append((r.tracking_key, BatchOp("PATCH", path, self._response_body(r), {"If-None-Match": "*"}), True))
            if r.closed:
                close = {"statecode": 1, "statuscode": 2}
                ops.append((r.tracking_key, BatchOp("PATCH", path, close, {"If-Match": "*"}), False))
        results = self._run_batches(ops, "create campaign responses", "campaignresponse", exists_ok=True)
        return _merge_results(results, [r.tracking_key for r in responses])

    def _response_body(self, r: CampaignResponse) -> dict:
        table = CrmTable(r.customer.table)
        body: dict[str, object] = {
            "subject": r.subject[:200],
            "responsecode": r.response_code,
            "channeltypecode": r.channel_code,
            "receivedon": iso(r.received_on),
            "regardingobjectid_campaign_campaignresponse@odata.bind": f"/campaigns({r.campaign_id})",
            "campaignresponse_activity_parties": [{
                f"partyid_{table.value}@odata.bind": f"/{ENTITY_SETS[table]}({r.customer.id})",
                "participationtypemask": 11,
            }],
        }
        if r.email:
            body["emailaddress"] = r.email[:100]
        if r.description:
            body["description"] = r.description
        return body

    def set_bounces(self, updates: Sequence[BounceUpdate]) -> list[WriteResult]:
        ops: list[tuple[str, BatchOp, bool]] = []
        rejected: dict[str, WriteResult] = {}
        p = self.prefix
        for u in updates:
            table = CrmTable(u.ref.table)
            if table not in (CrmTable.CONTACT, CrmTable.LEAD):
                rejected[u.ref.id] = WriteResult(u.ref.id, False, f"bounce details are kept on contacts and leads, "
                                                 f"not on {table.value} records", "unsupported_table")
                continue
            body = {f"{p}_lastbounceon": iso(u.bounced_on), f"{p}_lastbouncetype": str(u.bounce_type.value)[:20],
                    f"{p}_lastbouncejob": str(u.job_id)[:100]}
            ops.append((u.ref.id, BatchOp("PATCH", f"{ENTITY_SETS[table]}({u.ref.id})", body,
                                          {"If-Match": "*"}), True))
        results = {r.key: r for r in self._run_batches(ops, "set bounce details", "contact/lead")}
        results.update(rejected)
        return [results[u.ref.id] for u in updates]

    def set_opt_outs(self, refs: Sequence[RecordRef]) -> list[WriteResult]:
        ops = [(ref.id, BatchOp("PATCH", f"{ENTITY_SETS[CrmTable(ref.table)]}({ref.id})",
                                {"donotbulkemail": True}, {"If-Match": "*"}), True) for ref in refs]
        results = {r.key: r for r in self._run_batches(ops, "set opt-outs", "contact/lead/account")}
        return [results[ref.id] for ref in refs]

    def _run_batches(self, ops: Sequence[tuple[str, BatchOp, bool]], operation: str, table: str,
                     *, exists_ok: bool = False) -> list[WriteResult]:
        """Run ops in $batch chunks; one WriteResult per op (primary ops only carry the key's outcome)."""
        out: list[WriteResult] = []
        api_path = "/" + self.http.api_url.split("/", 3)[3]
        for start in range(0, len(ops), self.batch_size):
            chunk = ops[start:start + self.batch_size]
            ctype, body = build_batch([op for _, op, _ in chunk], api_path)
            call = Call(operation, table, f"({len(chunk)} records)", idempotent=True)
            resp = self.http.request("POST", "$batch", call, data=body, headers={
                "Content-Type": ctype, "Prefer": "odata.continue-on-error"})
            try:
                replies = parse_batch(resp.headers.get("Content-Type", ""), resp.content)
            except ValueError as exc:
                raise PermanentPeerError(f"Dataverse {self.http.host}: {operation}: unreadable $batch reply: {exc}",
                                         "crm", operation) from exc
            finally:
                resp.close()
            failed = 0
            for index, (key, _op, primary) in enumerate(chunk):
                reply = replies[index] if index < len(replies) else None
                result = _result(key, reply, exists_ok and primary)
                failed += not result.ok
                if primary:
                    out.append(result)
                elif not result.ok:  # a follow-up (closing a response) is retried with the next event
                    log.warning("crm_followup_failed", operation=operation, key=key, reason=result.message)
            log.info("crm_batch_written", operation=operation, count=len(chunk), failed=failed)
        return out

    # -- change tracking ----------------------------------------------------------
    def iter_changes(self, table: CrmTable, columns: Sequence[str],
                     delta_link: str | None) -> Iterator[tuple[list[dict], list[str], str | None]]:
        table = CrmTable(table)
        pk = primary_id(table)
        call = Call("read changes", table.value, idempotent=True)
        if delta_link:
            pages = self.http.iter_pages(delta_link, call, prefer="odata.track-changes", page_size=self.page_size)
        else:
            select = ",".join(dict.fromkeys([pk, *columns]))
            pages = self.http.iter_pages(ENTITY_SETS[table], call, params={"$select": select},
                                         prefer="odata.track-changes", page_size=self.page_size)
        try:
            for page in pages:
                changed: list[dict] = []
                deleted: list[str] = []
                for row in page.get("value", []):
                    if "$deletedEntity" in str(row.get("@odata.context", "")) or row.get("reason") == "deleted":
                        deleted.append(str(row.get("id") or row.get(pk)))
                    else:
                        changed.append(row)
                yield changed, deleted, page.get("@odata.deltaLink")
        except PermanentPeerError as exc:
            text = str(exc).lower()
            if delta_link and getattr(exc, "status", 0) in (400, 410, 412) and any(h in text for h in DELTA_EXPIRED_HINTS):
                err = PermanentPeerError(
                    f"Dataverse {self.http.host}: the change-tracking token for {table.value} has expired; "
                    "a full resync is needed", "crm", "read changes")
                err.code = "delta_expired"  # type: ignore[attr-defined]
                err.status = getattr(exc, "status", None)  # type: ignore[attr-defined]
                raise err from exc
            raise


def _result(key: str, reply: object, exists_ok: bool) -> WriteResult:
    if reply is None:
        return WriteResult(key, False, "not processed: the $batch reply ended early", "not_processed")
    status = reply.status  # type: ignore[attr-defined]
    if 200 <= status < 300:
        return WriteResult(key, True)
    if status == 412 and exists_ok:
        return WriteResult(key, True, "already exists", "exists")
    code, message = reply.error()  # type: ignore[attr-defined]
    detail = f"HTTP {status}" + (f" ({code})" if code else "") + (f": {message}" if message else "")
    if status == 404:
        return WriteResult(key, False, detail or "record does not exist", "not_found")
    return WriteResult(key, False, detail, str(status))


def _merge_results(results: Iterable[WriteResult], keys: Sequence[str]) -> list[WriteResult]:
    """One result per key: the first failure wins, else the first (create) result."""
    merged: dict[str, WriteResult] = {}
    for r in results:
        prev = merged.get(r.key)
        if prev is None or (prev.ok and not r.ok):
            merged[r.key] = r
    return [merged.get(k, WriteResult(k, False, "not processed", "not_processed")) for k in keys]


__all__ = ["DataverseCrmClient", "records_by_ref", "PeerError", "json"]
