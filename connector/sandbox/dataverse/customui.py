"""Forms and views as the Dataverse sandbox takes them: systemforms, savedqueries, PublishXml.

A ``systemforms`` or ``savedqueries`` row is checked when it is created or updated, the
way the real service refuses what it cannot show (rules and sources: docs/sandbox.md,
"Forms and views"):

- FormXml is well-formed, has ``form/tabs``, every ``tab`` its ``columns/column``; every
  control's ``datafieldname`` is a column of the form's table; a subgrid names a
  relationship of that table (``RelationshipName``) and the table on its other side
  (``TargetEntityType``), and a ``ViewId`` is a braced GUID;
- a view's ``returnedtypecode`` is a table; only public views (querytype 0) can be
  created (the others exist once per table and can only be updated); its FetchXml is
  well-formed and queries that table with columns it has; its LayoutXml is one ``grid``
  with every required attribute, ``object`` = the table's type code, ``jump`` a column,
  one ``row name="result"`` whose ``id`` is the primary key, and cells naming columns.

``PublishXml`` publishes the tables its ParameterXml names (``importexportxml/entities``):
their forms get ``publishedon``. A form or view written after that is unpublished until
the next PublishXml (:meth:`Customizations.unpublished`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from connector.sandbox.dataverse.http import Request, Response
from connector.sandbox.dataverse.schema import Entity
from connector.sandbox.dataverse.store import DataverseStore, StoreError, utcnow_text

SUBGRID_CLASSID = "{e7a81278-8635-4d9e-8d4d-59480b391c5b}"
PUBLIC_VIEW = 0
GRID_ATTRIBUTES = ("name", "object", "jump", "select", "icon", "preview")
GUID_BRACED = re.compile(r"\{[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}\}")
CODE = "0x80040203"  # InvalidArgument [unverified: the code the real service gives each refusal]


def refuse(message: str) -> StoreError:
    return StoreError(400, CODE, message)


def _parse(text: Any, what: str) -> ET.Element:
    if not isinstance(text, str) or not text.strip():
        raise refuse(f"{what} is required.")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise refuse(f"{what} is not well-formed XML: {exc}.") from None


class Customizations:
    """Checks of form and view rows, and the PublishXml action, for one organization."""

    def __init__(self, store: DataverseStore) -> None:
        self.store = store

    def _table(self, name: Any, what: str) -> Entity:
        e = self.store.schema.entity(str(name or ""))
        if e is None:
            raise refuse(f"{what} '{name}' is not a table of this organization.")
        return e

    def check(self, e: Entity, row: dict, creating: bool) -> None:
        """Refuse a systemform / savedquery row (the merged values after the write) that cannot be shown."""
        if e.logical_name == "systemform":
            self.check_form(row)
        elif e.logical_name == "savedquery":
            self.check_view(row, creating)

    # -- forms ---------------------------------------------------------------------------
    def check_form(self, row: dict) -> None:
        table = self._table(row.get("objecttypecode"), "systemform.objecttypecode")
        if row.get("type") is None:
            raise refuse("systemform.type is required (2 = Main).")
        form = _parse(row.get("formxml"), "systemform.formxml")
        if form.tag != "form":
            raise refuse(f"FormXml: the root element must be <form>, not <{form.tag}>.")
        tabs = form.findall("tabs")
        if len(tabs) != 1:
            raise refuse("FormXml: <form> needs one <tabs> element.")
        for tab in tabs[0].findall("tab"):
            columns = tab.findall("columns")
            if len(columns) != 1 or not columns[0].findall("column"):
                raise refuse(f"FormXml: tab '{tab.get('name', '')}' needs one <columns> with a <column>.")
        for control in form.iter("control"):
            self._check_control(table, control)

    def _check_control(self, table: Entity, control: ET.Element) -> None:
        field = control.get("datafieldname")
        if field and field not in table.attributes:
            raise refuse(f"FormXml: control '{control.get('id', '')}' shows '{field}', which is not a column of"
                         f" '{table.logical_name}'.")
        if (control.get("classid") or "").lower() != SUBGRID_CLASSID:
            return
        params = control.find("parameters")
        relationship = (params.findtext("RelationshipName") if params is not None else "") or ""
        target = (params.findtext("TargetEntityType") if params is not None else "") or ""
        view = (params.findtext("ViewId") if params is not None else None)
        other = self._related(table.logical_name, relationship)
        if other is None:
            raise refuse(f"FormXml: subgrid '{control.get('id', '')}' names relationship '{relationship}', which"
                         f" '{table.logical_name}' does not have.")
        if target != other:
            raise refuse(f"FormXml: subgrid '{control.get('id', '')}': relationship '{relationship}' relates"
                         f" '{other}', not '{target}' (TargetEntityType).")
        if view is not None and not GUID_BRACED.fullmatch(view):
            raise refuse(f"FormXml: subgrid '{control.get('id', '')}': ViewId '{view}' is not a GUID in braces.")

    def _related(self, table: str, relationship: str) -> str | None:
        """The table on the other side of ``relationship`` from ``table`` (N:N, or 1:N by lookup)."""
        found = self.store.schema.many_to_many.get(relationship)
        if found is not None:
            entity1, entity2, _ = found
            if table in (entity1, entity2):
                return entity2 if table == entity1 else entity1
        for other in self.store.schema.entities.values():  # 1:N: the lookup on the many side made by it
            for attr in other.attributes.values():
                if relationship and attr.relationship == relationship and table in attr.targets:
                    return other.logical_name
        return None

    # -- views ---------------------------------------------------------------------------
    def check_view(self, row: dict, creating: bool) -> None:
        table = self._table(row.get("returnedtypecode"), "savedquery.returnedtypecode")
        querytype = row.get("querytype")
        if querytype is None:
            raise refuse("savedquery.querytype is required (0 = public view).")
        if creating and querytype != PUBLIC_VIEW:
            raise refuse(f"savedquery.querytype {querytype}: only public views (0) can be created; the other"
                         " kinds exist once per table and can only be updated.")
        self._check_fetch(table, _parse(row.get("fetchxml"), "savedquery.fetchxml"))
        self._check_layout(table, _parse(row.get("layoutxml"), "savedquery.layoutxml"))

    def _check_fetch(self, table: Entity, fetch: ET.Element) -> None:
        entity = fetch.find("entity") if fetch.tag == "fetch" else None
        if entity is None:
            raise refuse("FetchXml: the root element must be <fetch> with an <entity>.")
        if entity.get("name") != table.logical_name:
            raise refuse(f"FetchXml: the view's entity is '{entity.get('name')}', its returnedtypecode"
                         f" '{table.logical_name}'.")
        self._check_fetch_columns(table, entity)

    def _check_fetch_columns(self, table: Entity, node: ET.Element) -> None:
        for child in node:
            if child.tag == "link-entity":
                self._check_fetch_columns(self._table(child.get("name"), "FetchXml: link-entity"), child)
                continue
            names = [child.get("attribute")] if child.tag in ("order", "condition") else (
                [child.get("name")] if child.tag == "attribute" else [])
            for name in names:
                if name and name not in table.attributes:
                    raise refuse(f"FetchXml: '{table.logical_name}' entity doesn't contain attribute with"
                                 f" Name = '{name}'.")
            if child.tag == "filter":
                self._check_fetch_columns(table, child)

    def _check_layout(self, table: Entity, grid: ET.Element) -> None:
        if grid.tag != "grid":
            raise refuse(f"LayoutXml: the root element must be <grid>, not <{grid.tag}>.")
        missing = [a for a in GRID_ATTRIBUTES if grid.get(a) is None]
        if missing:
            raise refuse(f"LayoutXml: <grid> needs the attributes {', '.join(missing)}.")
        if grid.get("object") != str(table.object_type_code):
            raise refuse(f"LayoutXml: grid object '{grid.get('object')}' is not the type code of"
                         f" '{table.logical_name}' ({table.object_type_code}).")
        if grid.get("jump") not in table.attributes:
            raise refuse(f"LayoutXml: jump '{grid.get('jump')}' is not a column of '{table.logical_name}'.")
        rows = grid.findall("row")
        if len(rows) != 1 or rows[0].get("name") != "result" or rows[0].get("id") != table.primary_id:
            raise refuse(f"LayoutXml: <grid> needs one <row name=\"result\" id=\"{table.primary_id}\">.")
        for cell in rows[0].findall("cell"):
            name = cell.get("name", "")
            if "." not in name and name not in table.attributes:  # a.b: a link-entity's column
                raise refuse(f"LayoutXml: cell '{name}' is not a column of '{table.logical_name}'.")

    # -- publishing ----------------------------------------------------------------------
    def publish_xml(self, req: Request) -> Response:
        body = req.json()
        root = _parse(body.get("ParameterXml") if isinstance(body, dict) else None, "ParameterXml")
        if root.tag != "importexportxml":
            raise refuse("ParameterXml: the root element must be <importexportxml>.")
        tables = [self._table((node.text or "").strip(), "ParameterXml: entity").logical_name
                  for node in root.findall("entities/entity")]
        now = utcnow_text()
        with self.store.transaction():
            self._published_table()
            version = self.store.version
            for table in tables:
                self.store.execute("UPDATE e_systemform SET publishedon = ? WHERE objecttypecode = ?", (now, table))
                self.store.execute("INSERT OR REPLACE INTO sandbox_published (entity, version) VALUES (?, ?)",
                                   (table, version))
        return Response.empty(204, [])

    def _published_table(self) -> None:
        self.store.execute("CREATE TABLE IF NOT EXISTS sandbox_published (entity TEXT PRIMARY KEY,"
                           " version INTEGER NOT NULL)")

    def unpublished(self, table: str) -> list[str]:
        """Names of ``table``'s forms and views written since its last PublishXml (or never published)."""
        self._published_table()
        found = self.store.execute("SELECT version FROM sandbox_published WHERE entity = ?", (table,))
        version = found[0][0] if found else -1
        forms = self.store.execute("SELECT name FROM e_systemform WHERE objecttypecode = ? AND versionnumber > ?",
                                   (table, version))
        views = self.store.execute("SELECT name FROM e_savedquery WHERE returnedtypecode = ? AND versionnumber > ?",
                                   (table, version))
        return [r[0] for r in forms + views]
