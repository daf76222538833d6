"""``DataverseCrmClient``: the CRM interface on the Dataverse / Dynamics 365 Web API.

Wire details live in ``odata`` (sessions, retries, errors, paging), ``batch``
($batch), ``fetchxml`` (dynamic lists), ``records`` (OData rows <-> project types),
``recipients`` (streaming a send's targets) and ``writes`` (bulk writes).
Column names follow docs/contracts.md with the publisher prefix of ``[crm] prefix``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from typing import Iterable, Iterator, Mapping, Sequence

import structlog

from connector.crm.auth import MsalTokenProvider, ntlm_auth
from connector.crm.base import CrmClient
from connector.crm.batch import MAX_BATCH, BatchOp
from connector.crm.emails import EmailCatalogue, EmailRefresh
from connector.crm.columns import read_columns
from connector.crm.kpi import KpiNames, KpiRows
from connector.crm.odata import Call, ODataHttp, set_error_details
from connector.crm.pacing import pace_for
from connector.crm.recipients import RecipientReader
from connector.crm.records import ENTITY_SETS, SendRequestColumns, primary_id
from connector.crm.writes import CrmWriter
from connector.errors import ConfigError, DeltaTokenExpired, NotFoundError, PermanentPeerError, TransientPeerError
from connector.models import (
    EspEmail,
    BounceUpdate,
    CampaignResponse,
    ColumnInfo,
    CrmTable,
    KpiValue,
    Recipient,
    RecordRef,
    SendRequest,
    SendRequestUpdate,
    SendStatus,
    SendTarget,
    Subscriber,
    TargetKind,
    WriteResult,
)

log = structlog.get_logger(__name__)

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
FIND_CHUNK = 100
"""Ids per ``Microsoft.Dynamics.CRM.In`` filter: ~4 KB of URL, far below the 32 KB cap."""
DELTA_EXPIRED_HINTS = ("expired", "full sync", "0x80044352")


def is_guid(value: str) -> bool:
    return bool(GUID.match(value or ""))


class DataverseCrmClient(CrmClient):
    """Dynamics 365 / Dataverse Web API client (thread-safe; one session per thread)."""

    def __init__(self, http: ODataHttp, *, prefix: str = "cesp", page_size: int = 5000,
                 batch_size: int = 500) -> None:
        self.http = http
        self.prefix = prefix
        self.page_size = max(1, min(page_size, 5000))
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.cols = SendRequestColumns(prefix)
        self.reader = RecipientReader(http, self.page_size)
        self.writer = CrmWriter(http, prefix, self.batch_size)
        self.emails = EmailCatalogue(http, self.writer, prefix)
        self.kpis = KpiRows(http, self.writer, prefix, self.page_size)

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
                timeout=timeout, ca_bundle=crm.ca_bundle)
        else:
            password = crm.password.get_secret_value() if crm.password is not None else ""
            auth = ntlm_auth(crm.username, password)
        user = crm.client_id if crm.auth == "oauth" else crm.username
        http = ODataHttp(crm.url, api_version=crm.api_version, tokens=tokens, auth=auth,
                         ca_bundle=crm.ca_bundle, timeout=timeout, max_retries=crm.max_retries,
                         pace=pace_for(crm.url, str(user or ""), crm.batch_size))
        return cls(http, prefix=crm.prefix, page_size=crm.page_size, batch_size=crm.batch_size)

    def close(self) -> None:
        self.writer.close()
        self.http.close()

    def who_am_i(self) -> dict[str, str]:
        """``WhoAmI``: the user the connector acts as, its business unit and organization."""
        body = self.http.get_json("WhoAmI", Call("who am I", idempotent=True)) or {}
        return {k: str(body.get(k, "")) for k in ("UserId", "BusinessUnitId", "OrganizationId")}

    # -- send requests ------------------------------------------------------------
    def pending_send_requests(self, limit: int = 50) -> list[SendRequest]:
        c = self.cols
        params = {
            "$select": ",".join(c.select),
            "$expand": c.expand,
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
                                 params={"$select": ",".join(c.select), "$expand": c.expand}, accept=(404,))
        return self.with_related_targets(c.from_row(row)) if row is not None else None

    def send_request_exists(self, request_id: str) -> bool:
        c = self.cols
        row = self.http.get_json(f"{c.entity_set}({request_id})",
                                 Call("look up send request", c.table, request_id, idempotent=True),
                                 params={"$select": c.id}, accept=(404,))
        return row is not None

    def requests_in_status(self, status: SendStatus, limit: int = 50) -> list[SendRequest]:
        """Send requests in ``status`` (e.g. Preview requested), oldest first, with their related targets."""
        c = self.cols
        params = {"$select": ",".join(c.select), "$expand": c.expand,
                  "$filter": f"{c.status} eq {c.code(status)}", "$orderby": "createdon asc",
                  "$top": str(max(1, limit))}
        page = self.http.get_json(c.entity_set, Call(f"read {status.value} send requests", c.table,
                                                     idempotent=True), params=params)
        return [self.with_related_targets(c.from_row(row)) for row in (page or {}).get("value", [])]

    def with_related_targets(self, request: SendRequest) -> SendRequest:
        """``request`` with the records related to it through its N:N target relationships added to its
        ``cesp_targets``: the union, de-duplicated, JSON targets first, then lists, contacts, leads and
        accounts each in id order (the same order on every read, so a resumed resolve continues in place)."""
        related = self.relationship_targets(request.id)
        if not related:
            return request
        seen = {(TargetKind(t.kind), t.id.lower()) for t in request.targets}
        extra = [t for t in related if (TargetKind(t.kind), t.id.lower()) not in seen]
        return dataclasses.replace(request, targets=request.targets + tuple(extra))

    def relationship_targets(self, request_id: str) -> list[SendTarget]:
        """The lists, contacts, leads and accounts related to the send request (``GET
        <set>(<id>)/<nav>?$select=<pk>``, every page of each related set)."""
        c = self.cols
        out: list[SendTarget] = []
        for kind, nav in c.target_navs.items():
            pk = f"{kind.value}id"
            call = Call("read send request targets", c.table, request_id, idempotent=True)
            ids: list[str] = []
            for page in self.http.iter_pages(f"{c.entity_set}({request_id})/{nav}", call,
                                             params={"$select": pk}, page_size=self.page_size):
                ids.extend(str(row[pk]).lower() for row in page.get("value", []) if row.get(pk))
            out.extend(SendTarget(kind, i) for i in sorted(set(ids)))
        return out

    def claim_send_request(self, request: SendRequest) -> SendRequest | None:
        """Pending -> Processing guarded by the etag; None when someone else claimed it.

        The PATCH is not repeated blindly: after a lost connection the record is read
        back. Still Pending -> claim again with its new etag; Processing -> the lost
        reply was ours (the caller holds the state lease for this request, the
        primary guard) and the claim stands; anything else -> not ours.
        """
        try:
            return self._claim(request)
        except TransientPeerError as exc:
            current = self.get_send_request(request.id)
            if current is None:
                return None
            if current.status is SendStatus.PENDING:
                return self._claim(current)
            if current.status is SendStatus.PROCESSING:
                log.warning("send_claim_reply_lost", send_id=request.id, error=str(exc))
                return current
            return None

    def _claim(self, request: SendRequest) -> SendRequest | None:
        c = self.cols
        call = Call("claim send request", c.table, request.id)
        headers = {"If-Match": request.etag or "*", "Prefer": "return=representation"}
        resp = self.http.request(
            "PATCH", f"{c.entity_set}({request.id})?$select={','.join(c.select)}", call,
            json_body={c.status: c.code(SendStatus.PROCESSING)}, headers=headers, accept=(412, 404))
        try:
            if resp.status_code in (412, 404):
                log.info("send_claim_lost", send_id=request.id, status=resp.status_code)
                return None
            if resp.status_code == 200 and resp.content:
                claimed = c.from_row(resp.json())  # an update's representation has no $expand: the e-mail
                claimed = dataclasses.replace(claimed, email_key=request.email_key, email_name=request.email_name,
                                              email_problem=request.email_problem)  # as read (etag-guarded)
                return self.with_related_targets(claimed)
        finally:
            resp.close()
        return self.get_send_request(request.id)

    def set_status_if_match(self, request: SendRequest, status: SendStatus) -> bool:
        """One PATCH of the status column with ``If-Match: <etag>`` (the claim's rule); 412 / 404 -> False."""
        c = self.cols
        call = Call("write send request status", c.table, request.id)  # not repeated blindly, as the claim
        resp = self.http.request("PATCH", f"{c.entity_set}({request.id})", call,
                                 json_body={c.status: c.code(status)},
                                 headers={"If-Match": request.etag or "*"}, accept=(412, 404))
        resp.close()
        if resp.status_code in (412, 404):
            log.info("send_status_write_refused", send_id=request.id, status=status.value, http=resp.status_code)
            return False
        return True

    def update_send_request(self, request_id: str, update: SendRequestUpdate) -> None:
        c = self.cols
        body = c.update_body(update)
        if not body:
            return
        call = Call("update send request", c.table, request_id, idempotent=True)
        self.http.request("PATCH", f"{c.entity_set}({request_id})", call, json_body=body,
                          headers={"If-Match": "*"}).close()

    def column_names(self, table: CrmTable) -> frozenset[str]:
        call = Call("read column definitions", table.value, idempotent=True)
        body = self.http.get_json(f"EntityDefinitions(LogicalName='{table.value}')/Attributes", call,
                                  params={"$select": "LogicalName"}) or {}
        return frozenset(str(a["LogicalName"]) for a in body.get("value", []) if a.get("LogicalName"))

    def role_names(self) -> frozenset[str]:
        call = Call("read security roles", "role", idempotent=True)
        names: set[str] = set()
        for page in self.http.iter_pages("roles", call, params={"$select": "name"}, page_size=self.page_size):
            names.update(str(r["name"]) for r in page.get("value", []) if r.get("name"))
        return frozenset(names)

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
    def iter_recipients(self, target: SendTarget,
                        attributes: Mapping[CrmTable, Sequence[str]]) -> Iterator[Recipient]:
        return self.reader.iter_recipients(target, attributes)

    def iter_record_targets(self, targets: Sequence[SendTarget],
                            attributes: Mapping[CrmTable, Sequence[str]]) -> Iterator[Recipient]:
        return self.reader.iter_record_targets(targets, attributes)

    def missing_records(self, targets: Sequence[SendTarget]) -> list[SendTarget]:
        return self.reader.missing_records(targets)

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
    def refresh_email_catalogue(self, emails: Iterable[EspEmail], account: str, now: datetime) -> EmailRefresh:
        return self.emails.refresh(emails, account, now)

    def replace_preview_sample(self, request_id: str, sample: Sequence[Subscriber]) -> list[WriteResult]:
        """The request's preview sample (``<prefix>_previewrecipient`` rows) replaced by ``sample``."""
        p = self.prefix
        entity_set, pk, lookup = f"{p}_previewrecipients", f"{p}_previewrecipientid", f"{p}_sendrequestid"
        call = Call("read preview sample", f"{p}_previewrecipient", request_id, idempotent=True)
        old = [str(row[pk]) for page in self.http.iter_pages(
            entity_set, call, params={"$select": pk, "$filter": f"_{lookup}_value eq {request_id}"})
            for row in page.get("value", []) if row.get(pk)]
        ops = [(f"old-{i}", BatchOp("DELETE", f"{entity_set}({i})"), True) for i in old]
        for n, sub in enumerate(sample):
            body = {f"{p}_name": (sub.email or sub.subscriber_key)[:200],
                    f"{lookup}@odata.bind": f"/{self.cols.entity_set}({request_id})",
                    f"{p}_subscriberkey": sub.subscriber_key[:254],
                    f"{p}_attributes": json.dumps(dict(sub.attributes), sort_keys=True, default=str)[:100000]}
            if sub.ref is not None:
                body.update({f"{p}_recordtable": CrmTable(sub.ref.table).value, f"{p}_recordid": sub.ref.id})
            ops.append((f"new-{n}", BatchOp("POST", entity_set, body), True))
        return self.writer.run_ops(ops, "write preview sample", f"{p}_previewrecipient")

    def create_campaign_responses(self, responses: Sequence[CampaignResponse]) -> list[WriteResult]:
        return self.writer.create_campaign_responses(responses)

    def set_bounces(self, updates: Sequence[BounceUpdate]) -> list[WriteResult]:
        return self.writer.set_bounces(updates)

    def set_opt_outs(self, refs: Sequence[RecordRef]) -> list[WriteResult]:
        return self.writer.set_opt_outs(refs)

    def update_records(self, table: CrmTable, updates: Sequence[tuple[str, Mapping[str, object]]]) -> list[WriteResult]:
        return self.writer.update_records(table, updates)

    def column_definitions(self, table: CrmTable) -> dict[str, ColumnInfo]:
        return read_columns(self.http, table)

    def tracking_key_status(self) -> tuple[str, str]:
        """EntityKeyIndexStatus of the campaign responses' tracking key ("Missing" when absent)."""
        name = f"{self.prefix}_trackingkey_key"
        try:
            page = self.http.get_json("EntityDefinitions(LogicalName='campaignresponse')/Keys",
                                      Call("read alternate keys", "campaignresponse", idempotent=True),
                                      params={"$select": "LogicalName,EntityKeyIndexStatus"})
        except NotFoundError:
            return "Missing", f"campaignresponse.{name}"
        for row in (page or {}).get("value", []):
            if str(row.get("LogicalName", "")).lower() == name:
                return str(row.get("EntityKeyIndexStatus") or "Active"), f"campaignresponse.{name}"
        return "Missing", f"campaignresponse.{name}"

    # -- KPI rows -----------------------------------------------------------------
    def match_customers(self, table: CrmTable, column: str, values: Sequence[str]) -> dict[str, list[str]]:
        return self.kpis.match_customers(table, column, values)

    def upsert_kpis(self, customer_table: CrmTable, values: Sequence[KpiValue]) -> list[WriteResult]:
        return self.kpis.upsert(KpiNames(self.prefix, CrmTable(customer_table).value), values)

    def remove_kpis(self, customer_table: CrmTable, refs: Sequence[tuple[str, str]],
                    *, delete: bool = False) -> list[WriteResult]:
        return self.kpis.remove(KpiNames(self.prefix, CrmTable(customer_table).value), refs, delete=delete)

    def kpi_key_status(self, customer_table: CrmTable) -> tuple[str, str]:
        names = KpiNames(self.prefix, CrmTable(customer_table).value)
        return self.kpis.key_status(names), f"{names.table}.{names.key}"

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
                raise set_error_details(DeltaTokenExpired(
                    f"Dataverse {self.http.host}: the change-tracking token for {table.value} has expired or is "
                    f"no longer valid ({exc}); a full resync is needed", "crm", "read changes"),
                    getattr(exc, "status", None), "delta_expired") from exc
            raise
