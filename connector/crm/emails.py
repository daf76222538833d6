"""The e-mail picker's table (``<prefix>_email``) kept in step with the ESP's e-mail catalogue.

Each e-mail of the catalogue is upserted by the alternate key on its customer key (``PATCH
cesp_emails(cesp_customerkey='…')`` without ``If-Match``: created when absent, updated when
present, so a refresh repeated after a lost reply writes the same row again and never a
second one). A key Dataverse cannot address a record by (``connector.crm.keys.addressable``)
goes by the record's id, or a plain create. A row whose e-mail the ESP no longer has is kept
(requests may point at it) and marked ``deleted``; rows without a customer key (made by hand)
are left alone. Writes go in ``$batch`` chunks through :class:`~connector.crm.writes.CrmWriter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from connector.crm.batch import BatchOp
from connector.crm.keys import addressable
from connector.crm.odata import Call, ODataHttp
from connector.crm.records import iso
from connector.crm.writes import CrmWriter, odata_string
from connector.models import EspEmail

DELETED = "deleted"
"""``cesp_espstatus`` of an e-mail the ESP's catalogue no longer has."""

PROBLEMS_NAMED = 10


@dataclass
class EmailRefresh:
    """What one refresh did."""

    seen: int = 0  # e-mails in the ESP's catalogue
    written: int = 0  # rows created or updated
    marked_deleted: int = 0
    problems: list[str] = field(default_factory=list)  # each names the e-mail and what to do


class EmailCatalogue:
    """Reads and writes the e-mail table of one organization."""

    def __init__(self, http: ODataHttp, writer: CrmWriter, prefix: str = "cesp") -> None:
        self.http, self.writer, self.p = http, writer, prefix
        self.entity_set = f"{prefix}_emails"
        self.key = f"{prefix}_customerkey"

    def existing(self) -> dict[str, tuple[str, str]]:
        """customer key (lower case) -> (row id, ESP status) of every row that has a key."""
        p = self.p
        out: dict[str, tuple[str, str]] = {}
        params = {"$select": f"{p}_emailid,{self.key},{p}_espstatus", "$filter": f"{self.key} ne null"}
        for page in self.http.iter_pages(self.entity_set, Call("read e-mail table", f"{p}_email", idempotent=True),
                                         params=params):
            for row in page.get("value", []):
                key = str(row.get(self.key) or "").strip()
                if key:
                    out[key.lower()] = (str(row[f"{p}_emailid"]), str(row.get(f"{p}_espstatus") or ""))
        return out

    def refresh(self, emails: Iterable[EspEmail], account: str, now: datetime) -> EmailRefresh:
        p = self.p
        existing = self.existing()
        report = EmailRefresh()
        ops: list[tuple[str, BatchOp, bool]] = []
        seen: set[str] = set()
        stamp = iso(now)
        for email in emails:
            report.seen += 1
            low = email.customer_key.lower()
            if low in seen:  # keys compare without case in Dataverse: the first one stands
                report.problems.append(f"e-mail {email.name!r}: its customer key {email.customer_key!r} differs "
                                       "only in case from another e-mail's; only the first is in the picker")
                continue
            seen.add(low)
            body = {f"{p}_name": (email.name or email.customer_key)[:200], self.key: email.customer_key[:100],
                    f"{p}_subject": email.subject[:400], f"{p}_folder": email.folder[:200],
                    f"{p}_espstatus": (email.status or "active")[:50], f"{p}_espaccount": account[:100],
                    f"{p}_espemailid": email.esp_id[:20], f"{p}_lastrefreshedon": stamp}
            ops.append((email.customer_key, self._upsert(email.customer_key, body, existing.get(low)), True))
        for low, (row_id, status) in existing.items():
            if low not in seen and status != DELETED:
                body = {f"{p}_espstatus": DELETED, f"{p}_lastrefreshedon": stamp}
                ops.append((low, BatchOp("PATCH", f"{self.entity_set}({row_id})", body, {"If-Match": "*"}), True))
                report.marked_deleted += 1
        for result in self.writer.run_ops(ops, "refresh e-mail catalogue", f"{p}_email"):
            if result.ok:
                report.written += 1
            elif len(report.problems) < PROBLEMS_NAMED:
                report.problems.append(f"e-mail {result.key!r} could not be written to {p}_email: {result.message}")
        report.written -= report.marked_deleted
        return report

    def _upsert(self, customer_key: str, body: dict, row: tuple[str, str] | None) -> BatchOp:
        if addressable(customer_key):
            return BatchOp("PATCH", f"{self.entity_set}({self.key}={odata_string(customer_key)})", body, {})
        if row is not None:
            return BatchOp("PATCH", f"{self.entity_set}({row[0]})", body, {"If-Match": "*"})
        return BatchOp("POST", self.entity_set, body, {})
