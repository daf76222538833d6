"""KPI rows in CRM: the ``<prefix>_kpi`` table, customer matching, upserts by alternate key.

One row per customer and KPI, related to the customer (a lookup to contact or account,
``[kpi] customer_table``) and addressed by the alternate key (customer lookup, KPI
name). In the Web API a lookup of a key is named by its lookup property::

    PATCH cesp_kpis(_cesp_contactid_value=<guid>,cesp_name='revenue_6m')

without ``If-Match`` / ``If-None-Match`` that is an upsert: it creates the row (with the
lookup and name from the key) or updates it, so writing a value twice never makes a
second row (PD use-alternate-key-reference-record.md, "Upsert a record"). A KPI that
left the source is deactivated (``statecode`` 1) or deleted, as ``[kpi] removed`` says.

Customers are matched by ``[kpi] match_column`` among the active rows of the table, in
sets (``Microsoft.Dynamics.CRM.In``, each URL under the 32,768-character cap); string
comparison in Dataverse is case-insensitive, and so is the match.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Sequence
from urllib.parse import urlencode

from connector.crm.batch import BatchOp
from connector.crm.odata import Call, ODataHttp
from connector.crm.records import ENTITY_SETS, iso, primary_id
from connector.crm.recipients import MAX_URL_CHARS, URL_MARGIN
from connector.crm.writes import CrmWriter, odata_string
from connector.errors import NotFoundError
from connector.models import CrmTable, KpiValue, WriteResult

MATCH_SET_MAX = 200
"""Values per ``In`` filter at most (an e-mail is up to 100 characters: ~25,000 characters of URL)."""
KPI_TABLES = (CrmTable.CONTACT, CrmTable.ACCOUNT)
"""The tables a KPI row may belong to."""


@dataclass(frozen=True)
class KpiNames:
    """Logical names of the KPI table for publisher prefix ``prefix`` and customer table ``customer``."""

    prefix: str
    customer: str  # contact | account

    @property
    def table(self) -> str:
        return f"{self.prefix}_kpi"

    @property
    def entity_set(self) -> str:
        return f"{self.prefix}_kpis"

    @property
    def lookup(self) -> str:
        return f"{self.prefix}_{self.customer}id"

    @property
    def key(self) -> str:
        return f"{self.prefix}_kpi_{self.customer}_key"

    def column(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def path(self, customer_id: str, kpi: str) -> str:
        """The row's address by its alternate key (the lookup by its lookup property)."""
        return f"{self.entity_set}(_{self.lookup}_value={customer_id},{self.column('name')}={odata_string(kpi)})"


def _number(value: object) -> object:
    """A Decimal as a JSON number (float keeps 15 significant digits: the column holds 4 decimals)."""
    return float(value) if isinstance(value, Decimal) else value


class KpiRows:
    """Matching customers and writing KPI rows for one organization."""

    def __init__(self, http: ODataHttp, writer: CrmWriter, prefix: str, page_size: int) -> None:
        self.http = http
        self.writer = writer
        self.prefix = prefix
        self.page_size = page_size

    def match_customers(self, table: CrmTable, column: str, values: Sequence[str]) -> dict[str, list[str]]:
        """``value (lower case) -> ids`` of the active ``table`` rows whose ``column`` holds it."""
        table = CrmTable(table)
        wanted = list(dict.fromkeys(v.strip().lower() for v in values if v.strip()))
        found: dict[str, list[str]] = {}
        pk = primary_id(table)
        call = Call("match KPI customers", table.value, idempotent=True)
        start = 0
        while start < len(wanted):
            part, params = self._fitting(table, column, wanted[start:start + MATCH_SET_MAX])
            for page in self.http.iter_pages(ENTITY_SETS[table], call, params=params, page_size=self.page_size):
                for row in page.get("value", []):
                    key = str(row.get(column) or "").strip().lower()
                    found.setdefault(key, []).append(str(row.get(pk) or "").lower())
            start += len(part)
        return found

    def _fitting(self, table: CrmTable, column: str, values: Sequence[str]) -> tuple[Sequence[str], dict[str, str]]:
        """A head of ``values`` whose GET stays within the URL cap, with its query."""
        base = len(self.http.url(ENTITY_SETS[table])) + 1
        while True:
            quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
            params = {"$select": f"{primary_id(table)},{column}",
                      "$filter": f"statecode eq 0 and Microsoft.Dynamics.CRM.In(PropertyName='{column}',"
                                 f"PropertyValues=[{quoted}])"}
            if base + len(urlencode(params)) <= MAX_URL_CHARS - URL_MARGIN or len(values) == 1:
                return values, params
            values = values[: max(1, len(values) * 3 // 4)]

    def upsert(self, names: KpiNames, values: Sequence[KpiValue]) -> list[WriteResult]:
        """Create or update each row by its alternate key (active); one result per value, in order."""
        c = names.column
        ops = []
        for v in values:
            body: dict[str, object] = {c("value"): _number(v.value), c("period"): v.period or None,
                                       c("source"): v.source or None, "statecode": 0, "statuscode": 1}
            if v.computed_on is not None:
                body[c("lastcomputedon")] = iso(v.computed_on)
            ops.append((v.key, BatchOp("PATCH", names.path(v.customer_id, v.kpi), body), True))
        return self.writer._run_batches(ops, "write KPIs", names.table)

    def remove(self, names: KpiNames, refs: Iterable[tuple[str, str]], *, delete: bool) -> list[WriteResult]:
        """Deactivate (or delete) the rows of ``(customer id, kpi)``; a row already gone counts as done."""
        ops = []
        for customer_id, kpi in refs:
            path = names.path(customer_id, kpi)
            op = (BatchOp("DELETE", path) if delete
                  else BatchOp("PATCH", path, {"statecode": 1, "statuscode": 2}, {"If-Match": "*"}))
            ops.append((f"{customer_id}/{kpi}", op, True))
        results = self.writer._run_batches(ops, "delete KPIs" if delete else "deactivate KPIs", names.table)
        return [WriteResult(r.key, True, "already gone", "not_found") if r.code == "not_found" else r
                for r in results]

    def key_status(self, names: KpiNames) -> str:
        """EntityKeyIndexStatus of the KPI table's alternate key ("Missing" when it or the table is absent)."""
        try:
            page = self.http.get_json(f"EntityDefinitions(LogicalName='{names.table}')/Keys",
                                      Call("read alternate keys", names.table, idempotent=True),
                                      params={"$select": "LogicalName,EntityKeyIndexStatus"})
        except NotFoundError:
            return "Missing"
        for row in (page or {}).get("value", []):
            if str(row.get("LogicalName", "")).lower() == names.key:
                return str(row.get("EntityKeyIndexStatus") or "Active")
        return "Missing"
