"""The CRM customizations the connector needs, applied through the Dataverse metadata API.

``plan()`` reads ``EntityDefinitions`` (tables, their ``Attributes`` and ``Keys``) and
lists what is missing; ``apply()`` creates exactly that, with the calls a real
organization accepts:

- table: ``POST EntityDefinitions`` (EntityMetadata with its primary name column)
- column: ``POST EntityDefinitions(LogicalName='t')/Attributes``
- lookup column: ``POST RelationshipDefinitions`` (OneToManyRelationshipMetadata with
  its Lookup), the documented way to create a lookup
- alternate key: ``POST EntityDefinitions(LogicalName='t')/Keys``
- change tracking: ``PUT EntityDefinitions(LogicalName='t')`` with the table's definition
  and ``ChangeTrackingEnabled: true`` (contact, lead, account: ``iter_changes``)

A new alternate key is built by a background job in Dataverse (EntityKeyIndexStatus
Pending -> InProgress -> Active, or Failed when rows already share a value); ``run``
waits for the connector's keys (``wait_for_keys``), reports a Failed key with the values
that are duplicated, and on a later run reactivates a Failed key once they are gone
(``ReactivateEntityKey``). Running it again finds everything present and does nothing.
Names: docs/contracts.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from connector.crm.odata import Call, ODataHttp
from connector.crm.records import STATUS_CODES, STATUS_LABELS
from connector.crm.ui import FORM_TYPE_MAIN, QUERY_TYPE_PUBLIC, Form, View, forms, kpi_form, views
from connector.errors import NotFoundError

log = structlog.get_logger(__name__)

LANGUAGE = 1033
COUNT_COLUMNS = (
    ("resolved", "Recipients resolved"), ("handedover", "Recipients handed over"), ("skipped", "Recipients skipped"),
    ("sentcount", "Sent"), ("deliveredcount", "Delivered"), ("opencount", "Opens"),
    ("uniqueopencount", "Unique opens"), ("clickcount", "Clicks"), ("uniqueclickcount", "Unique clicks"),
    ("hardbouncecount", "Hard bounces"), ("softbouncecount", "Soft bounces"), ("blockbouncecount", "Block bounces"),
    ("technicalbouncecount", "Technical bounces"), ("unknownbouncecount", "Unknown bounces"),
    ("unsubscribecount", "Unsubscribes"), ("notsentcount", "Not sent"),
)
STATUS_OPTIONS = tuple((code, STATUS_LABELS[status]) for status, code in STATUS_CODES.items())
"""The send status picklist: the codes the client reads and writes (records.STATUS_CODES)."""


def label(text: str) -> dict:
    localized = {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": LANGUAGE}
    return {"@odata.type": "Microsoft.Dynamics.CRM.Label", "LocalizedLabels": [localized],
            "UserLocalizedLabel": localized}


def _required(level: str = "None") -> dict:
    return {"Value": level, "CanBeChanged": True, "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"}


@dataclass(frozen=True)
class Column:
    """One column to create, as attribute metadata."""

    table: str
    schema_name: str  # e.g. cesp_LastBounceOn; the logical name is its lower case
    kind: str  # String, Memo, Integer, Decimal, Boolean, DateTime, Picklist, Lookup
    display: str
    max_length: int = 0
    options: tuple[tuple[int, str], ...] = ()
    target: str = ""  # Lookup: the referenced table
    primary_name: bool = False

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    def metadata(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@odata.type": f"Microsoft.Dynamics.CRM.{self.kind}AttributeMetadata",
            "AttributeType": self.kind,
            "AttributeTypeName": {"Value": f"{self.kind}Type"},
            "SchemaName": self.schema_name,
            "DisplayName": label(self.display),
            "Description": label(f"{self.display} (email connector)"),
            "RequiredLevel": _required("ApplicationRequired" if self.primary_name else "None"),
        }
        if self.kind == "String":
            body.update({"MaxLength": self.max_length or 100, "FormatName": {"Value": "Text"}})
            if self.primary_name:
                body["IsPrimaryName"] = True
        elif self.kind == "Memo":
            body.update({"MaxLength": self.max_length or 1048576, "Format": "TextArea"})
        elif self.kind == "Integer":
            body.update({"MinValue": 0, "MaxValue": 2147483647, "Format": "None"})
        elif self.kind == "Decimal":  # Dataverse's widest range; 4 decimals (rows.VALUE_PRECISION)
            body.update({"MinValue": -100_000_000_000, "MaxValue": 100_000_000_000, "Precision": 4})
        elif self.kind == "DateTime":
            body.update({"Format": "DateAndTime", "DateTimeBehavior": {"Value": "UserLocal"}})
        elif self.kind == "Boolean":
            body.update({"DefaultValue": False, "OptionSet": {
                "TrueOption": {"Value": 1, "Label": label("Yes")},
                "FalseOption": {"Value": 0, "Label": label("No")},
                "OptionSetType": "Boolean"}})
        elif self.kind == "Picklist":
            body["OptionSet"] = {
                "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata", "IsGlobal": False,
                "OptionSetType": "Picklist",
                "Options": [{"Value": value, "Label": label(text)} for value, text in self.options]}
        elif self.kind == "Lookup":
            body["Targets"] = [self.target]
        return body

    def relationship(self) -> dict[str, Any]:
        """OneToManyRelationshipMetadata creating this lookup column (real service's way)."""
        lookup = self.metadata()
        lookup.pop("Targets", None)
        prefix = self.logical_name.split("_")[0]
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
            "SchemaName": f"{prefix}_{self.target.removeprefix(prefix + '_')}_{self.table}",
            "ReferencedEntity": self.target,
            "ReferencedAttribute": f"{self.target}id",
            "ReferencingEntity": self.table,
            "ReferencingEntityNavigationPropertyName": self.logical_name,
            "CascadeConfiguration": {"Assign": "NoCascade", "Delete": "RemoveLink", "Merge": "NoCascade",
                                     "Reparent": "NoCascade", "Share": "NoCascade", "Unshare": "NoCascade"},
            "Lookup": lookup,
        }


@dataclass(frozen=True)
class Table:
    schema_name: str
    display: str
    display_plural: str
    primary_name: Column
    description: str = "A request to send an email through the email connector"
    ownership: str = "UserOwned"

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    def metadata(self) -> dict[str, Any]:
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
            "SchemaName": self.schema_name,
            "DisplayName": label(self.display),
            "DisplayCollectionName": label(self.display_plural),
            "Description": label(self.description),
            "OwnershipType": self.ownership,
            "IsActivity": False,
            "HasActivities": False,
            "HasNotes": False,
            "ChangeTrackingEnabled": True,
            "Attributes": [self.primary_name.metadata()],
        }


@dataclass(frozen=True)
class AltKey:
    table: str
    schema_name: str
    columns: tuple[str, ...]
    display: str

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    def metadata(self) -> dict[str, Any]:
        return {"SchemaName": self.schema_name, "DisplayName": label(self.display), "KeyAttributes": list(self.columns)}


@dataclass(frozen=True)
class ManyToMany:
    """An N:N relationship (its intersect table has the same name), as ManyToManyRelationshipMetadata."""

    schema_name: str  # e.g. cesp_sendrequest_list; also both navigation properties' name
    entity1: str
    entity2: str
    display: str

    def metadata(self) -> dict[str, Any]:
        menu = {"Behavior": "UseLabel", "Group": "Details", "Label": label(self.display), "Order": 10000}
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.ManyToManyRelationshipMetadata",
            "SchemaName": self.schema_name, "IntersectEntityName": self.schema_name,
            "Entity1LogicalName": self.entity1, "Entity2LogicalName": self.entity2,
            "Entity1NavigationPropertyName": self.schema_name, "Entity2NavigationPropertyName": self.schema_name,
            "Entity1AssociatedMenuConfiguration": menu, "Entity2AssociatedMenuConfiguration": menu,
        }


@dataclass
class Customizations:
    tables: list[Table] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    keys: list[AltKey] = field(default_factory=list)
    tracked: list[str] = field(default_factory=list)  # tables that need change tracking
    relationships: list[ManyToMany] = field(default_factory=list)
    forms: list[Form] = field(default_factory=list)
    views: list[View] = field(default_factory=list)


TRACKED_TABLES = ("contact", "lead", "account")
"""Tables the connector reads incrementally (``iter_changes``): change tracking must be on."""
KEY_POLL_SECONDS = 5.0
"""How often ``wait_for_keys`` asks for the keys' index status."""
KEY_WAIT_SECONDS = 1800.0
"""How long ``connector crm-setup`` waits for its keys by default (big tables take long)."""
DUPLICATES_SHOWN = 10


def kpi_customizations(prefix: str, customer: str) -> tuple[Table, list[Column], AltKey]:
    """The KPI table (docs/kpi.md): one row per customer and KPI, keyed by (customer lookup, KPI name)."""
    p = prefix
    t = f"{p}_kpi"
    name = Column(t, f"{p}_Name", "String", "KPI", 100, primary_name=True)
    table = Table(f"{p}_Kpi", "Customer KPI", "Customer KPIs", name,
                  "A KPI of a customer, computed outside CRM and loaded by the email connector",
                  "OrganizationOwned")
    lookup = Column(t, f"{p}_{customer.capitalize()}Id", "Lookup", customer.capitalize(), target=customer)
    cols = [lookup,
            Column(t, f"{p}_Value", "Decimal", "Value"),
            Column(t, f"{p}_Period", "String", "Period", 100),
            Column(t, f"{p}_Source", "String", "Source", 100),
            Column(t, f"{p}_LastComputedOn", "DateTime", "Last computed on")]
    key = AltKey(t, f"{p}_kpi_{customer}_key", (lookup.logical_name, name.logical_name), f"{customer} and KPI")
    return table, cols, key


def customizations(prefix: str = "cesp", kpi_customer: str = "") -> Customizations:
    """Everything docs/contracts.md lists, for publisher prefix ``prefix``; with ``kpi_customer``
    (contact or account: ``[kpi] customer_table``) also the KPI table (docs/kpi.md)."""
    p = prefix
    t = f"{p}_sendrequest"
    name = Column(t, f"{p}_Name", "String", "Name", 200, primary_name=True)
    e = f"{p}_email"
    s = f"{p}_previewrecipient"
    cols = [
        Column(e, f"{p}_CustomerKey", "String", "Customer key", 100),
        Column(e, f"{p}_Subject", "String", "Subject", 400),
        Column(e, f"{p}_Folder", "String", "Folder", 200),
        Column(e, f"{p}_EspStatus", "String", "Status at the ESP", 50),
        Column(e, f"{p}_EspAccount", "String", "ESP account", 100),
        Column(e, f"{p}_EspEmailId", "String", "ESP e-mail id", 20),
        Column(e, f"{p}_LastRefreshedOn", "DateTime", "Last refreshed"),
        Column(t, f"{p}_Status", "Picklist", "Send status", options=STATUS_OPTIONS),
        Column(t, f"{p}_Targets", "Memo", "Targets (JSON)"),
        Column(t, f"{p}_CampaignId", "Lookup", "Campaign", target="campaign"),
        Column(t, f"{p}_EmailId", "Lookup", "E-mail", target=e),
        Column(t, f"{p}_EmailKey", "String", "Email key", 100),
        Column(t, f"{p}_SendClassificationKey", "String", "Send classification key", 100),
        Column(t, f"{p}_ForceBatching", "Boolean", "Force file batching"),
        Column(t, f"{p}_EspJobId", "String", "ESP job id", 100),
        Column(t, f"{p}_Reason", "Memo", "Reason"),
        Column(t, f"{p}_SkippedByReason", "Memo", "Skipped by reason (JSON)"),
        Column(t, f"{p}_ReleasedOn", "DateTime", "Released on"),
        Column(t, f"{p}_TrackingUpdatedOn", "DateTime", "Tracking updated on"),
        *[Column(t, f"{p}_{c}", "Integer", text) for c, text in COUNT_COLUMNS],
        Column(t, f"{p}_PreviewResolved", "Integer", "Preview: recipients resolved"),
        Column(t, f"{p}_PreviewWouldSend", "Integer", "Preview: would send"),
        Column(t, f"{p}_PreviewSkippedByReason", "Memo", "Preview: skipped by reason (JSON)"),
        Column(t, f"{p}_PreviewedOn", "DateTime", "Previewed on"),
        Column(s, f"{p}_SendRequestId", "Lookup", "Send request", target=t),
        Column(s, f"{p}_RecordTable", "String", "Table", 20),
        Column(s, f"{p}_RecordId", "String", "Record id", 36),
        Column(s, f"{p}_SubscriberKey", "String", "Subscriber key", 254),
        Column(s, f"{p}_Attributes", "Memo", "Mapped attributes (JSON)", 100000),
    ]
    for table in ("contact", "lead"):
        cols += [Column(table, f"{p}_LastBounceOn", "DateTime", "Last bounce on"),
                 Column(table, f"{p}_LastBounceType", "String", "Last bounce type", 20),
                 Column(table, f"{p}_LastBounceJob", "String", "Last bounce job", 100)]
    cols.append(Column("campaignresponse", f"{p}_TrackingKey", "String", "Tracking key", 100))
    keys = [AltKey(e, f"{p}_email_customerkey_key", (f"{p}_customerkey",), "Customer key"),
            AltKey("campaignresponse", f"{p}_trackingkey_key", (f"{p}_trackingkey",), "Tracking key")]
    tables = [
        Table(f"{p}_Email", "ESP e-mail", "ESP e-mails", Column(e, f"{p}_Name", "String", "Name", 200,
                                                                  primary_name=True),
              "An e-mail of the ESP's catalogue, kept in step by the email connector"),
        Table(f"{p}_SendRequest", "Email send request", "Email send requests", name),
        Table(f"{p}_PreviewRecipient", "Preview recipient", "Preview recipients",
              Column(s, f"{p}_Name", "String", "E-mail address", 200, primary_name=True),
              "A sample recipient of a send request's preview, with the attributes the ESP would get"),
    ]
    relationships = [ManyToMany(f"{p}_sendrequest_{other}", t, other, text)
                     for other, text in TARGET_RELATIONSHIPS]
    ui = forms(p)
    if kpi_customer:
        kpi_table, kpi_columns, kpi_key = kpi_customizations(p, kpi_customer)
        tables.append(kpi_table)
        cols += kpi_columns
        keys.append(kpi_key)
        ui.append(kpi_form(p, kpi_customer, kpi_columns[0].relationship()["SchemaName"]))
    return Customizations(tables, cols, keys, list(TRACKED_TABLES), relationships, ui, views(p))


TARGET_RELATIONSHIPS = (("list", "Marketing lists"), ("contact", "Contacts"), ("lead", "Leads"),
                        ("account", "Accounts"))
"""The send request's N:N targets: ``<prefix>_sendrequest_<table>``."""


@dataclass(frozen=True)
class Action:
    kind: str  # table | column | key | relationship | option | change tracking
    table: str
    name: str
    method: str
    path: str
    body: dict
    fallback_path: str = ""
    fallback_body: dict | None = None

    def describe(self) -> str:
        if self.kind in ("table", "change tracking", "relationship"):
            return f"{self.kind} {self.name}"
        if self.kind in ("form", "view"):
            return f"{self.kind} {self.table}: {self.name}"
        if self.kind == "publish":
            return f"publish {self.name}"
        return f"{self.kind} {self.table}.{self.name}"


@dataclass(frozen=True)
class KeyFailure:
    """A key whose index could not be built: the values held by more than one row."""

    table: str
    key: str
    columns: tuple[str, ...]
    duplicates: tuple[tuple[str, int], ...]  # (value, rows), the first few

    def describe(self) -> str:
        shown = ", ".join(f"{value!r} ({rows} rows)" for value, rows in self.duplicates) or "none found any more"
        return (f"key {self.table}.{self.key} failed: rows share the same {'/'.join(self.columns)}: {shown}. "
                f"Delete or merge the duplicate {self.table} rows (keep one per value), then run "
                "`connector crm-setup` again: it reactivates the key")


@dataclass
class SetupReport:
    present: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # settings changed on existing tables, forms, views
    published: list[str] = field(default_factory=list)  # PublishXml: the tables whose forms/views were written
    keys: dict[str, str] = field(default_factory=dict)  # "table.key" -> EntityKeyIndexStatus
    failed: list[KeyFailure] = field(default_factory=list)
    waited: bool = False


class CrmSetup:
    """Reads what exists and creates what is missing."""

    def __init__(self, http: ODataHttp, prefix: str = "cesp", kpi_customer: str = "") -> None:
        self.http = http
        self.spec = customizations(prefix, kpi_customer)

    def _table_exists(self, logical: str) -> bool:
        page = self.http.get_json("EntityDefinitions", Call("read table definitions", logical, idempotent=True),
                                  params={"$select": "LogicalName,EntitySetName",
                                          "$filter": f"LogicalName eq '{logical}'"})
        return bool((page or {}).get("value"))

    def _names(self, table: str, nav: str, call: str) -> set[str]:
        try:
            page = self.http.get_json(f"EntityDefinitions(LogicalName='{table}')/{nav}",
                                      Call(call, table, idempotent=True), params={"$select": "LogicalName"})
        except NotFoundError:
            return set()
        return {str(row.get("LogicalName", "")).lower() for row in (page or {}).get("value", [])}

    def plan(self) -> tuple[list[Action], list[str]]:
        """(actions to take, names already present)."""
        actions: list[Action] = []
        present: list[str] = []
        tables_missing: set[str] = set()
        for table in self.spec.tables:
            if self._table_exists(table.logical_name):
                present.append(f"table {table.logical_name}")
            else:
                tables_missing.add(table.logical_name)
                actions.append(Action("table", table.logical_name, table.logical_name, "POST",
                                      "EntityDefinitions", table.metadata()))
        existing: dict[str, set[str]] = {}
        for col in self.spec.columns:
            if col.table not in existing:
                existing[col.table] = (set() if col.table in tables_missing
                                       else self._names(col.table, "Attributes", "read column definitions"))
            names = existing[col.table]
            if col.logical_name in names:
                present.append(f"column {col.table}.{col.logical_name}")
                continue
            attrs_path = f"EntityDefinitions(LogicalName='{col.table}')/Attributes"
            if col.kind == "Lookup":
                actions.append(Action("column", col.table, col.logical_name, "POST", "RelationshipDefinitions",
                                      col.relationship(), attrs_path, col.metadata()))
            else:
                actions.append(Action("column", col.table, col.logical_name, "POST", attrs_path, col.metadata()))
        for col in self.spec.columns:
            if col.kind == "Picklist" and col.logical_name in existing.get(col.table, set()):
                actions += self._missing_options(col, present)
        for rel in self.spec.relationships:
            if self._relationship_exists(rel.schema_name):
                present.append(f"relationship {rel.schema_name}")
            else:
                actions.append(Action("relationship", rel.entity1, rel.schema_name, "POST", "RelationshipDefinitions",
                                      rel.metadata()))
        for key in self.spec.keys:
            names = (set() if key.table in tables_missing
                     else self._names(key.table, "Keys", "read alternate keys"))
            if key.logical_name in names:
                present.append(f"key {key.table}.{key.logical_name}")
            else:
                actions.append(Action("key", key.table, key.logical_name, "POST",
                                      f"EntityDefinitions(LogicalName='{key.table}')/Keys", key.metadata()))
        for table in self.spec.tracked:
            definition = self._definition(table)
            if definition.get("ChangeTrackingEnabled"):
                present.append(f"change tracking {table}")
            else:
                body = {k: v for k, v in definition.items() if not k.startswith("@odata.context")}
                body["@odata.type"] = "Microsoft.Dynamics.CRM.EntityMetadata"
                body["ChangeTrackingEnabled"] = True
                actions.append(Action("change tracking", table, table, "PUT",
                                      f"EntityDefinitions(LogicalName='{table}')", body))
        return actions, present

    def _relationship_exists(self, schema_name: str) -> bool:
        page = self.http.get_json("RelationshipDefinitions", Call("read relationship definitions", schema_name,
                                                                   idempotent=True),
                                  params={"$select": "SchemaName", "$filter": f"SchemaName eq '{schema_name}'"})
        return bool((page or {}).get("value"))

    def _missing_options(self, col: Column, present: list[str]) -> list[Action]:
        """InsertOptionValue for each option of ``col`` the organization's column lacks."""
        path = f"EntityDefinitions(LogicalName='{col.table}')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
        page = self.http.get_json(path, Call("read choice options", col.table, col.logical_name, idempotent=True),
                                  params={"$select": "LogicalName", "$expand": "OptionSet"}) or {}
        found = next((a for a in page.get("value", []) if str(a.get("LogicalName", "")).lower() == col.logical_name),
                     {})
        have = {int(o.get("Value")) for o in (found.get("OptionSet") or {}).get("Options", [])}
        out = []
        for value, text in col.options:
            name = f"{col.logical_name}={value} ({text})"
            if value in have:
                present.append(f"option {col.table}.{name}")
                continue
            out.append(Action("option", col.table, name, "POST", "InsertOptionValue", {
                "EntityLogicalName": col.table, "AttributeLogicalName": col.logical_name, "Value": value,
                "Label": label(text)}))
        return out

    def _definition(self, table: str) -> dict:
        """The table's definition (no collections), as ``PUT EntityDefinitions`` wants it back."""
        return self.http.get_json(f"EntityDefinitions(LogicalName='{table}')",
                                  Call("read table definition", table, idempotent=True)) or {}

    def run(self, *, dry_run: bool = False, progress: Callable[[str], None] | None = None,
            wait: bool = True, wait_seconds: float = KEY_WAIT_SECONDS,
            poll_seconds: float = KEY_POLL_SECONDS) -> SetupReport:
        actions, present = self.plan()
        report = SetupReport(present=present)
        self._take(actions, report, dry_run, progress)
        ui_actions, ui_present = self.plan_ui()  # after the tables and columns the forms show
        report.present += ui_present
        self._take(ui_actions, report, dry_run, progress)
        if not dry_run:
            self.wait_for_keys(report, progress=progress, wait_seconds=wait_seconds if wait else 0.0,
                               poll_seconds=poll_seconds)
        return report

    def _take(self, actions: list[Action], report: SetupReport, dry_run: bool,
              progress: Callable[[str], None] | None) -> None:
        for action in actions:
            if dry_run:
                report.planned.append(action.describe())
                continue
            self._apply(action)
            changed = action.kind == "change tracking" or action.method == "PATCH"
            if action.kind == "publish":  # "published cesp_sendrequest, contact, lead"
                done, verb, item = report.published, "published", action.name
            else:
                done, verb = (report.changed, "changed") if changed else (report.created, "created")
                item = action.describe()
            done.append(item)
            log.info("crm_customization_created", item=action.describe())
            if progress:
                progress(f"{verb:<8} {item}")

    # -- forms and views ---------------------------------------------------------------
    def plan_ui(self) -> tuple[list[Action], list[str]]:
        """Forms and views to create or bring up to date, then one PublishXml for their tables."""
        columns: dict[str, set[str]] = {}

        def exists(table: str, column: str) -> bool:
            if table not in columns:
                columns[table] = self._names(table, "Attributes", "read column definitions")
            return column in columns[table]

        actions: list[Action] = []
        present: list[str] = []
        unpublished: set[str] = set()
        for form in self.spec.forms:
            xml = form.formxml(exists)
            body = {"formid": form.form_id, "name": form.name, "description": form.description,
                    "objecttypecode": form.table, "type": FORM_TYPE_MAIN, "formxml": xml}
            current = self._row("systemforms", form.form_id, "formxml,publishedon", "read form", form.table)
            self._plan_row(actions, present, "form", form.table, form.name, f"systemforms({form.form_id})",
                           "systemforms", body, current, {"formxml": xml})
            if current is not None and not current.get("publishedon"):
                unpublished.add(form.table)  # created by a run that stopped before publishing
        for view in self.spec.views:
            otc = self._object_type_code(view.table)
            body = {"savedqueryid": view.view_id, "name": view.name, "description": view.description,
                    "returnedtypecode": view.table, "querytype": QUERY_TYPE_PUBLIC,
                    "fetchxml": view.fetchxml(), "layoutxml": view.layoutxml(otc)}
            current = self._row("savedqueries", view.view_id, "fetchxml,layoutxml", "read view", view.table)
            self._plan_row(actions, present, "view", view.table, view.name, f"savedqueries({view.view_id})",
                           "savedqueries", body, current, {"fetchxml": body["fetchxml"],
                                                           "layoutxml": body["layoutxml"]})
        tables = sorted({a.table for a in actions} | unpublished)
        if tables:
            xml = "<importexportxml><entities>" + "".join(f"<entity>{t}</entity>" for t in tables) + \
                  "</entities></importexportxml>"
            actions.append(Action("publish", ",".join(tables), ", ".join(tables), "POST", "PublishXml",
                                  {"ParameterXml": xml}))
        return actions, present

    @staticmethod
    def _plan_row(actions: list[Action], present: list[str], kind: str, table: str, name: str, path: str,
                  collection: str, body: dict, current: dict | None, wanted: dict) -> None:
        if current is None:
            actions.append(Action(kind, table, name, "POST", collection, body))
        elif any(current.get(k) != v for k, v in wanted.items()):
            actions.append(Action(kind, table, name, "PATCH", path, wanted))
        else:
            present.append(f"{kind} {table}: {name}")

    def _row(self, entity_set: str, rid: str, select: str, call: str, table: str) -> dict | None:
        try:
            return self.http.get_json(f"{entity_set}({rid})", Call(call, table, rid, idempotent=True),
                                      params={"$select": select})
        except NotFoundError:
            return None

    def _object_type_code(self, table: str) -> int:
        """The table's ObjectTypeCode (a view's grid names it); 0 while the table does not exist (dry run)."""
        try:
            found = self.http.get_json(f"EntityDefinitions(LogicalName='{table}')",
                                       Call("read table definition", table, idempotent=True),
                                       params={"$select": "ObjectTypeCode"})
        except NotFoundError:
            return 0
        return int((found or {}).get("ObjectTypeCode") or 0)

    # -- alternate keys ------------------------------------------------------------------
    def key_statuses(self) -> dict[str, str]:
        """``table.key`` -> EntityKeyIndexStatus of the connector's keys ("Missing" when absent)."""
        out: dict[str, str] = {}
        for key in self.spec.keys:
            try:
                page = self.http.get_json(f"EntityDefinitions(LogicalName='{key.table}')/Keys",
                                          Call("read alternate keys", key.table, idempotent=True),
                                          params={"$select": "LogicalName,EntityKeyIndexStatus"})
            except NotFoundError:
                page = None
            found = {str(row.get("LogicalName", "")).lower(): str(row.get("EntityKeyIndexStatus") or "Active")
                     for row in (page or {}).get("value", [])}
            out[f"{key.table}.{key.logical_name}"] = found.get(key.logical_name, "Missing")
        return out

    def wait_for_keys(self, report: SetupReport, *, progress: Callable[[str], None] | None = None,
                      wait_seconds: float = KEY_WAIT_SECONDS, poll_seconds: float = KEY_POLL_SECONDS,
                      sleep: Callable[[float], None] = time.sleep) -> None:
        """Wait until every key is Active or Failed (or the time is up); Failed keys with their duplicates."""
        started = time.monotonic()
        reactivated: set[str] = set()
        last: dict[str, str] = {}
        while True:
            statuses = self.key_statuses()
            for name, status in statuses.items():
                if status == "Failed" and name not in reactivated and self._reactivate(name, report, progress):
                    reactivated.add(name)
                    statuses[name] = "Pending"
            if statuses != last and progress:
                waited = int(time.monotonic() - started)
                for name, status in statuses.items():
                    progress(f"key      {name}: {status}" + (f" (after {waited} s)" if waited else ""))
            last = dict(statuses)
            report.keys = statuses
            busy = [n for n, s in statuses.items() if s in ("Pending", "InProgress")]
            if not busy or time.monotonic() - started >= wait_seconds:
                break
            report.waited = True
            sleep(min(poll_seconds, max(0.0, wait_seconds - (time.monotonic() - started))))
        report.failed = [self._failure(n) for n, s in report.keys.items() if s == "Failed"]
        for failure in report.failed:
            log.error("crm_key_failed", table=failure.table, key=failure.key, reason=failure.describe())

    def _spec_key(self, name: str) -> AltKey:
        return next(k for k in self.spec.keys if f"{k.table}.{k.logical_name}" == name)

    def _reactivate(self, name: str, report: SetupReport, progress: Callable[[str], None] | None) -> bool:
        """A Failed key whose duplicates are gone gets its index job run again."""
        key = self._spec_key(name)
        if self._duplicates(key):
            return False
        self.http.request("POST", "ReactivateEntityKey", Call("reactivate key", key.table, key.logical_name),
                          json_body={"EntityLogicalName": key.table,
                                     "EntityKeyLogicalName": key.logical_name}).close()
        report.changed.append(f"reactivated key {name}")
        log.info("crm_key_reactivated", table=key.table, key=key.logical_name)
        if progress:
            progress(f"changed  reactivated key {name} (no duplicate values left)")
        return True

    def _failure(self, name: str) -> KeyFailure:
        key = self._spec_key(name)
        return KeyFailure(key.table, key.logical_name, key.columns, tuple(self._duplicates(key)))

    def _duplicates(self, key: AltKey) -> list[tuple[str, int]]:
        """Values of a one-column key held by more than one row (case-insensitive), the first few.

        A key over several columns (the KPI table's) is only ever written through upserts by that
        key, so its rows cannot share values: none are looked for."""
        if len(key.columns) != 1:
            return []
        column = key.columns[0]
        entity_set = ENTITY_SETS_FOR_KEYS.get(key.table, key.table + "s")
        params = {"$select": column, "$filter": f"{column} ne null", "$orderby": f"{column} asc"}
        counts: dict[str, int] = {}
        previous = None
        for page in self.http.iter_pages(entity_set, Call("find duplicate key values", key.table, idempotent=True),
                                         params=params):
            for row in page.get("value", []):
                value = str(row.get(column, ""))
                if previous is not None and value.lower() == previous.lower():
                    counts[previous] = counts.get(previous, 1) + 1
                else:
                    if len(counts) >= DUPLICATES_SHOWN:
                        return list(counts.items())
                    previous = value
        return list(counts.items())

    def _apply(self, action: Action) -> None:
        call = Call(f"create {action.kind}", action.table, action.name)
        headers = {"MSCRM.MergeLabels": "true"} if action.method == "PUT" else None  # keep other languages' labels
        resp = self.http.request(action.method, action.path, call, json_body=action.body, headers=headers,
                                 accept=(404, 405, 501) if action.fallback_path else ())
        status = resp.status_code
        resp.close()
        if status < 300:
            return
        # An organization (or sandbox) without RelationshipDefinitions: create the lookup as a column.
        log.info("crm_lookup_via_attributes", table=action.table, column=action.name, status=status)
        self.http.request("POST", action.fallback_path, call, json_body=action.fallback_body).close()


ENTITY_SETS_FOR_KEYS = {"campaignresponse": "campaignresponses"}


__all__ = ["CrmSetup", "KeyFailure", "SetupReport", "customizations", "kpi_customizations"]
