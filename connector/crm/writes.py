"""CRM writes in bulk through ``$batch``: campaign responses, bounce details, opt-outs, synced columns.

Every operation is a PATCH guarded by ``If-None-Match: *`` (create only) or
``If-Match: *`` (update only), so a whole batch is safe to repeat after a dropped
connection; batches go with ``Prefer: odata.continue-on-error`` and give one
``WriteResult`` per record.

How many operations a batch holds and how many batches are in flight at once is the
organization's :class:`~connector.crm.pacing.Pace` (shared by every step): each next
batch takes the current batch size (capped by ``[crm] batch_size``, and small enough
that one call's operations fill every slot), and up to the current parallelism batches
run at the same time. The operations of one record (a
response and its closing update) always travel in the same batch, in order.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Iterable, Mapping, Sequence
from urllib.parse import quote

import structlog

from connector.crm import keys
from connector.crm.batch import BatchOp, build_batch, parse_batch
from connector.crm.odata import Call, ODataHttp
from connector.crm.pacing import MAX_PARALLELISM, START_BATCH
from connector.crm.records import ENTITY_SETS, iso
from connector.errors import PermanentPeerError
from connector.models import BounceUpdate, CampaignResponse, CrmTable, RecordRef, WriteResult

log = structlog.get_logger(__name__)

TRACKING_KEY_LENGTH = 100
"""``cesp_trackingkey`` is a String 100 column (docs/contracts.md)."""


def odata_string(value: str) -> str:
    """A string literal for a URL key or filter: quotes doubled, then percent-encoded."""
    return "'" + quote(value.replace("'", "''"), safe="") + "'"


class CrmWriter:
    """Bulk writes for one organization."""

    def __init__(self, http: ODataHttp, prefix: str, batch_size: int) -> None:
        self.http = http
        self.prefix = prefix
        self.batch_size = batch_size
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=MAX_PARALLELISM, thread_name_prefix="crm-batch")
            return self._pool

    def create_campaign_responses(self, responses: Sequence[CampaignResponse]) -> list[WriteResult]:
        ops: list[tuple[str, BatchOp, bool]] = []
        refused: list[WriteResult] = []
        key_col = f"{self.prefix}_trackingkey"
        for r in responses:
            if not keys.addressable(r.tracking_key) or len(r.tracking_key) > TRACKING_KEY_LENGTH:
                refused.append(WriteResult(r.tracking_key, False, f"tracking key {r.tracking_key!r} cannot address a "
                                           "Dataverse record (longer than 100 characters or holding one of "
                                           "< > * % & : / \\ + ? #); build it with tracking_key()",
                                           "unaddressable_key"))
                continue
            path = f"campaignresponses({key_col}={odata_string(r.tracking_key)})"
            ops.append((r.tracking_key, BatchOp("PATCH", path, self._response_body(r), {"If-None-Match": "*"}), True))
            if r.closed:
                close = {"statecode": 1, "statuscode": 2}
                ops.append((r.tracking_key, BatchOp("PATCH", path, close, {"If-Match": "*"}), False))
        results = self._run_batches(ops, "create campaign responses", "campaignresponse", exists_ok=True)
        return _merge_results([*refused, *results], [r.tracking_key for r in responses])

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

    def update_records(self, table: CrmTable, updates: Sequence[tuple[str, Mapping[str, object]]]) -> list[WriteResult]:
        """PATCH columns of existing records (``If-Match: *``: never creates one); one result per id."""
        entity_set = ENTITY_SETS[CrmTable(table)]
        ops = [(record_id, BatchOp("PATCH", f"{entity_set}({record_id})", dict(values), {"If-Match": "*"}), True)
               for record_id, values in updates]
        results = {r.key: r for r in self._run_batches(ops, "update synced columns", CrmTable(table).value)}
        return [results[record_id] for record_id, _ in updates]

    def run_ops(self, ops: Sequence[tuple[str, BatchOp, bool]], operation: str, table: str) -> list[WriteResult]:
        """Other modules' writes (``(key, op, primary)``) in $batch chunks; one result per primary op."""
        return self._run_batches(ops, operation, table)

    def _run_batches(self, ops: Sequence[tuple[str, BatchOp, bool]], operation: str, table: str,
                     *, exists_ok: bool = False) -> list[WriteResult]:
        """Run ops in $batch chunks, several at once; one WriteResult per primary op, in order."""
        if not ops:
            return []
        groups = _groups(ops)
        pace = self.http.pace
        spread = max(START_BATCH, -(-len(ops) // pace.limit()))  # enough batches to fill every slot
        done: dict[int, list[WriteResult]] = {}
        running: dict[Future, int] = {}
        index = 0
        try:
            while groups or running:
                while groups and len(running) < pace.limit():
                    chunk = _take(groups, max(1, min(self.batch_size, pace.batch_size, spread)))
                    future = self._executor().submit(contextvars.copy_context().run, self._send_batch, chunk,
                                                     operation, table, exists_ok)
                    running[future] = index
                    index += 1
                finished, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    done[running.pop(future)] = future.result()
        finally:
            for future in running:  # an error stops the rest; wait for what is already on the wire
                future.cancel()
            wait(list(running))
        return [result for i in sorted(done) for result in done[i]]

    def _send_batch(self, chunk: Sequence[tuple[str, BatchOp, bool]], operation: str, table: str,
                    exists_ok: bool) -> list[WriteResult]:
        api_path = "/" + self.http.api_url.split("/", 3)[3]
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
        # the last attempt's time to its reply (not the waits of earlier 429s), and its epoch
        self.http.pace.batch_healthy(resp.elapsed.total_seconds(), getattr(resp, "pace_epoch", None))
        out: list[WriteResult] = []
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


def _groups(ops: Sequence[tuple[str, BatchOp, bool]]) -> list[list[tuple[str, BatchOp, bool]]]:
    """Consecutive operations of the same key, kept together (reversed: ``pop()`` takes the next)."""
    groups: list[list[tuple[str, BatchOp, bool]]] = []
    for item in ops:
        if groups and groups[-1][0][0] == item[0]:
            groups[-1].append(item)
        else:
            groups.append([item])
    groups.reverse()
    return groups


def _take(groups: list[list[tuple[str, BatchOp, bool]]], size: int) -> list[tuple[str, BatchOp, bool]]:
    chunk: list[tuple[str, BatchOp, bool]] = []
    while groups and (not chunk or len(chunk) + len(groups[-1]) <= size):
        chunk.extend(groups.pop())
    return chunk


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
        return WriteResult(key, False, detail, "not_found")
    return WriteResult(key, False, detail, str(status))


def _merge_results(results: Iterable[WriteResult], keys: Sequence[str]) -> list[WriteResult]:
    """One result per key: the first failure wins, else the first (create) result."""
    merged: dict[str, WriteResult] = {}
    for r in results:
        prev = merged.get(r.key)
        if prev is None or (prev.ok and not r.ok):
            merged[r.key] = r
    return [merged.get(k, WriteResult(k, False, "not processed", "not_processed")) for k in keys]
