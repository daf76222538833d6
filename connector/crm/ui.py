"""The forms and views the connector adds to CRM, described once and rendered as XML.

A :class:`Form` (tabs, sections, fields and subgrids) renders as FormXml for a
``systemforms`` row; a :class:`View` (columns, conditions, order) renders as the FetchXml
and LayoutXml of a ``savedqueries`` row. ``connector crm-setup`` creates them through the
Web API and publishes them (``PublishXml``); ``--export-solution`` writes the same rows into
customizations.xml. Both read :func:`forms` and :func:`views`. Layout: docs/crm.md.

Hooks for columns other issues add: :data:`ENGAGEMENT_COLUMNS` (the engagement section
of contact and lead) and the ``optional`` fields of the send request's form (the send
time). A field whose column the organization does not have is left out, never refused:
add a column to ``customizations()`` and to the hook, and the next ``crm-setup`` shows it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable
from xml.sax.saxutils import escape, quoteattr

from connector.crm.records import STATUS_CODES
from connector.models import SendStatus

FORM_TYPE_MAIN = 2
"""systemform.type of a main form."""
QUERY_TYPE_PUBLIC = 0
"""savedquery.querytype of a public view (the only kind that can be created)."""
SUBGRID_CLASSID = "{E7A81278-8635-4d9e-8D4D-59480B391C5B}"
CONTROL_CLASSIDS = {
    "String": "{4273EDBD-AC1D-40d3-9FB2-095C621B552D}", "Memo": "{E0DECE4B-6FC8-4a8f-A065-082708572369}",
    "Integer": "{C6D124CA-7EDA-4a60-AEA9-7FB8D318B68F}", "DateTime": "{5B773807-9FB2-42db-97C3-7A91EFF8ADFF}",
    "Picklist": "{3EF39988-22BB-4f0b-BBBE-64B5A3748AEE}", "Lookup": "{270BD3DB-D9AF-4782-9025-509E298DEC0A}",
    "Boolean": "{B0C6723A-8503-4fd7-BB28-C8A06AC933C2}",
}
"""Control class of a field, by column kind (the classids the form editor writes)."""
LANGUAGE = 1033

ENGAGEMENT_COLUMNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    table: (("donotbulkemail", "Do not allow bulk e-mails", "Boolean"),
            ("{p}_lastbounceon", "Last bounce on", "DateTime"),
            ("{p}_lastbouncetype", "Last bounce type", "String"),
            ("{p}_lastbouncejob", "Last bounce job", "String"))
    for table in ("contact", "lead")
}
"""The engagement section of contact and lead: (column, label, kind), ``{p}`` = publisher prefix.

The hook for engagement columns other issues add (last open, last click, engagement
score ...): append them here; a column the organization lacks is left out of the form."""

Exists = Callable[[str, str], bool]
"""``exists(table, column)``: does the organization (or the solution) have that column?"""


def _id(*parts: str) -> str:
    """A stable GUID for a form or view: the same in every organization and in the solution."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "connector-ui:" + ":".join(parts)))


@dataclass(frozen=True)
class Field:
    column: str
    label: str
    kind: str  # a CONTROL_CLASSIDS key
    optional: bool = False  # a column another issue adds: left out until it exists


@dataclass(frozen=True)
class Subgrid:
    name: str
    label: str
    relationship: str  # the N:N relationship's SchemaName
    target: str  # the related table


@dataclass(frozen=True)
class Section:
    name: str
    label: str
    items: tuple[Field | Subgrid, ...]


@dataclass(frozen=True)
class Tab:
    name: str
    label: str
    sections: tuple[Section, ...]


def _label(text: str) -> str:
    return f"<labels><label description={quoteattr(text)} languagecode=\"{LANGUAGE}\" /></labels>"


@dataclass(frozen=True)
class Form:
    table: str
    name: str
    description: str
    tabs: tuple[Tab, ...]

    @property
    def form_id(self) -> str:
        return _id("form", self.table, self.name)

    def fields(self, exists: Exists) -> list[str]:
        """The columns the form shows in an organization where ``exists`` holds."""
        return [item.column for tab in self.tabs for section in tab.sections for item in section.items
                if isinstance(item, Field) and (not item.optional or exists(self.table, item.column))]

    def subgrids(self) -> list[Subgrid]:
        return [item for tab in self.tabs for section in tab.sections for item in section.items
                if isinstance(item, Subgrid)]

    def formxml(self, exists: Exists) -> str:
        tabs = "".join(self._tab(tab, exists) for tab in self.tabs)
        return f"<form><tabs>{tabs}</tabs></form>"

    def _tab(self, tab: Tab, exists: Exists) -> str:
        sections = "".join(self._section(s, exists) for s in tab.sections)
        return (f"<tab name={quoteattr(tab.name)} id=\"{{{_id('tab', self.form_id, tab.name)}}}\" expanded=\"true\""
                f" showlabel=\"true\">{_label(tab.label)}<columns><column width=\"100%\"><sections>{sections}"
                "</sections></column></columns></tab>")

    def _section(self, section: Section, exists: Exists) -> str:
        rows = "".join(f"<row>{self._cell(item)}</row>" for item in section.items
                       if not (isinstance(item, Field) and item.optional and not exists(self.table, item.column)))
        sid = _id("section", self.form_id, section.name)
        return (f"<section name={quoteattr(section.name)} id=\"{{{sid}}}\" showlabel=\"true\" showbar=\"false\""
                f" columns=\"1\">{_label(section.label)}<rows>{rows}</rows></section>")

    def _cell(self, item: Field | Subgrid) -> str:
        cid = _id("cell", self.form_id, item.column if isinstance(item, Field) else item.name)
        if isinstance(item, Field):
            control = (f"<control id={quoteattr(item.column)} classid=\"{CONTROL_CLASSIDS[item.kind]}\""
                       f" datafieldname={quoteattr(item.column)} />")
            return f"<cell id=\"{{{cid}}}\" showlabel=\"true\">{_label(item.label)}{control}</cell>"
        params = (f"<parameters><RecordsPerPage>10</RecordsPerPage><AutoExpand>Fixed</AutoExpand>"
                  f"<EnableQuickFind>false</EnableQuickFind><EnableViewPicker>true</EnableViewPicker>"
                  f"<RelationshipName>{escape(item.relationship)}</RelationshipName>"
                  f"<TargetEntityType>{escape(item.target)}</TargetEntityType></parameters>")
        return (f"<cell id=\"{{{cid}}}\" showlabel=\"true\" rowspan=\"6\" colspan=\"1\">{_label(item.label)}"
                f"<control id={quoteattr(item.name)} classid=\"{SUBGRID_CLASSID}\" indicationOfSubgrid=\"true\">"
                f"{params}</control></cell>")


@dataclass(frozen=True)
class Condition:
    column: str
    operator: str  # a FetchXML operator: eq, in, eq-userid, last-x-days ...
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class View:
    table: str
    primary_id: str
    name: str
    description: str
    columns: tuple[tuple[str, int], ...]  # (column, width in pixels); the first is the jump column
    conditions: tuple[Condition, ...]
    order: tuple[str, bool]  # (column, descending)

    @property
    def view_id(self) -> str:
        return _id("view", self.table, self.name)

    def fetchxml(self) -> str:
        attrs = "".join(f"<attribute name={quoteattr(c)} />" for c, _ in self.columns)
        conditions = "".join(_condition(c) for c in self.conditions)
        column, descending = self.order
        return (f"<fetch version=\"1.0\" mapping=\"logical\"><entity name={quoteattr(self.table)}>{attrs}"
                f"<attribute name={quoteattr(self.primary_id)} />"
                f"<order attribute={quoteattr(column)} descending=\"{str(descending).lower()}\" />"
                f"<filter type=\"and\">{conditions}</filter></entity></fetch>")

    def layoutxml(self, object_type_code: int) -> str:
        cells = "".join(f"<cell name={quoteattr(c)} width=\"{w}\" />" for c, w in self.columns)
        return (f"<grid name=\"resultset\" object=\"{object_type_code}\" jump={quoteattr(self.columns[0][0])}"
                f" select=\"1\" icon=\"1\" preview=\"1\"><row name=\"result\" id={quoteattr(self.primary_id)}>"
                f"{cells}</row></grid>")


def _condition(c: Condition) -> str:
    head = f"<condition attribute={quoteattr(c.column)} operator={quoteattr(c.operator)}"
    if c.operator == "in":
        return head + ">" + "".join(f"<value>{escape(v)}</value>" for v in c.values) + "</condition>"
    if c.values:
        return head + f" value={quoteattr(c.values[0])} />"
    return head + " />"


OPEN_STATUSES = (SendStatus.DRAFT, SendStatus.PREVIEW_REQUESTED, SendStatus.PREVIEWED, SendStatus.PENDING,
                 SendStatus.PROCESSING, SendStatus.IMPORTING, SendStatus.SCHEDULED)
"""What "My pending sends" lists: every status before Sent / Failed / Cancelled."""


def kpi_form(prefix: str, customer: str, relationship: str) -> Form:
    """The customer's KPIs (docs/kpi.md): a main form of contact or account with the KPI rows' subgrid."""
    grid = Subgrid("kpi_grid", "KPIs", relationship, f"{prefix}_kpi")
    return Form(customer, "Customer KPIs", "KPIs computed outside CRM, loaded by the email connector", (
        Tab("kpis", "KPIs", (Section("kpis", "KPIs", (grid,)),)),))


def forms(prefix: str = "cesp") -> list[Form]:
    """The send request's main form and the engagement forms of contact and lead."""
    p = prefix
    t = f"{p}_sendrequest"
    general = Section("general", "Send", (
        Field(f"{p}_name", "Name", "String"), Field(f"{p}_campaignid", "Campaign", "Lookup"),
        Field(f"{p}_emailid", "E-mail", "Lookup"), Field(f"{p}_sendon", "Send time", "DateTime", optional=True),
        Field(f"{p}_status", "Send status", "Picklist"), Field("ownerid", "Owner", "Lookup")))
    targets = Section("targets", "Who receives it", tuple(
        Subgrid(f"{other}_grid", label, f"{p}_sendrequest_{other}", other)
        for other, label in (("list", "Marketing lists"), ("contact", "Contacts"), ("lead", "Leads"),
                             ("account", "Accounts"))))
    preview = Section("preview", "Preview", (
        Field(f"{p}_previewresolved", "Preview: recipients resolved", "Integer"),
        Field(f"{p}_previewwouldsend", "Preview: would send", "Integer"),
        Field(f"{p}_previewskippedbyreason", "Preview: skipped by reason", "Memo"),
        Field(f"{p}_previewedon", "Previewed on", "DateTime")))
    counts = Section("counts", "Recipients", (
        Field(f"{p}_resolved", "Recipients resolved", "Integer"),
        Field(f"{p}_handedover", "Recipients handed over", "Integer"),
        Field(f"{p}_skipped", "Recipients skipped", "Integer"),
        Field(f"{p}_skippedbyreason", "Skipped by reason", "Memo"),
        Field(f"{p}_reason", "Reason", "Memo"),
        Field(f"{p}_espjobid", "ESP job", "String"), Field(f"{p}_releasedon", "Released on", "DateTime")))
    tracking = Section("tracking", "Tracking", tuple(
        Field(f"{p}_{column}", label, "Integer") for column, label in (
            ("sentcount", "Sent"), ("deliveredcount", "Delivered"), ("opencount", "Opens"),
            ("uniqueopencount", "Unique opens"), ("clickcount", "Clicks"), ("uniqueclickcount", "Unique clicks"),
            ("hardbouncecount", "Hard bounces"), ("softbouncecount", "Soft bounces"),
            ("unsubscribecount", "Unsubscribes"), ("notsentcount", "Not sent"))
    ) + (Field(f"{p}_trackingupdatedon", "Tracking updated on", "DateTime"),))
    send_form = Form(t, "Email send request", "What to send, to whom, and what came of it (email connector)", (
        Tab("general", "General", (general,)), Tab("targets", "Targets", (targets,)),
        Tab("results", "Results", (preview, counts, tracking))))
    engagement = [Form(table, "Email engagement", "Bounces and opt-outs the email connector writes back", (
        Tab("engagement", "Email engagement", (Section("engagement", "Email engagement", tuple(
            Field(column.format(p=p), label, kind, optional=True)
            for column, label, kind in ENGAGEMENT_COLUMNS[table])),)),))
        for table in ENGAGEMENT_COLUMNS]
    return [send_form, *engagement]


def views(prefix: str = "cesp") -> list[View]:
    """The send request's public views."""
    p = prefix
    t = f"{p}_sendrequest"

    def code(status: SendStatus) -> str:
        return str(STATUS_CODES[status])

    listed = ((f"{p}_name", 250), (f"{p}_status", 120), (f"{p}_campaignid", 150), (f"{p}_emailid", 150),
              ("createdon", 130))
    return [
        View(t, f"{t}id", "My pending sends", "My send requests not sent, failed or cancelled yet",
             listed, (Condition("ownerid", "eq-userid"), Condition(f"{p}_status", "in", tuple(
                 code(s) for s in OPEN_STATUSES))), ("createdon", True)),
        View(t, f"{t}id", "Failed sends", "Send requests that failed, with the reason",
             ((f"{p}_name", 250), (f"{p}_reason", 300), ("ownerid", 120), ("modifiedon", 130)),
             (Condition(f"{p}_status", "eq", (code(SendStatus.FAILED),)),), ("modifiedon", True)),
        View(t, f"{t}id", "Sent in the last 30 days", "Send requests released in the last 30 days, with tracking",
             ((f"{p}_name", 250), (f"{p}_releasedon", 130), (f"{p}_handedover", 100), (f"{p}_opencount", 80),
              (f"{p}_clickcount", 80), (f"{p}_espjobid", 120)),
             (Condition(f"{p}_status", "eq", (code(SendStatus.SENT),)),
              Condition(f"{p}_releasedon", "last-x-days", ("30",))), (f"{p}_releasedon", True)),
    ]


__all__ = ["ENGAGEMENT_COLUMNS", "Form", "View", "forms", "kpi_form", "views"]
