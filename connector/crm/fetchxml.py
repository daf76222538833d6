"""FetchXML of dynamic marketing lists: choose the columns, page without losing anyone.

A dynamic list's ``query`` names the members; the connector keeps its filters and
links but replaces the attributes of the top entity with the columns it needs
(always including the primary id) and drops every ``order`` (recipients need none, and
a query ordered on a link-entity attribute gets no paging cookie), so the service
orders by the primary id. It pages with ``count``/``page``/``paging-cookie`` as
Dataverse documents. Paging by page numbers alone ("simple paging") stops at 50,000
rows, so when a page comes back without a cookie the next pages are asked as page 1
of the query restricted to primary ids after the last one read (:func:`after`).
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from typing import Sequence
from urllib.parse import unquote

from connector.errors import PermanentPeerError


def entity_name(fetch_xml: str) -> str:
    root = _parse(fetch_xml)
    entity = root.find("entity")
    if entity is None or not entity.get("name"):
        raise PermanentPeerError("the dynamic list's FetchXML has no <entity name=...>", "crm", "fetchxml")
    return str(entity.get("name"))


def _parse(fetch_xml: str) -> ET.Element:
    try:
        root = ET.fromstring(fetch_xml)
    except ET.ParseError as exc:
        raise PermanentPeerError(f"the dynamic list's FetchXML is not valid XML: {exc}", "crm", "fetchxml") from exc
    if root.tag != "fetch":
        raise PermanentPeerError("the dynamic list's query is not a <fetch> FetchXML query", "crm", "fetchxml")
    return root


def prepare(fetch_xml: str, primary_id: str, columns: Sequence[str]) -> ET.Element:
    """The query with the top entity's attributes replaced by ``columns`` (+ the primary id)."""
    root = _parse(fetch_xml)
    entity = root.find("entity")
    if entity is None:
        raise PermanentPeerError("the dynamic list's FetchXML has no <entity>", "crm", "fetchxml")
    for child in list(entity):
        if child.tag in ("attribute", "all-attributes"):
            entity.remove(child)
    for parent in root.iter():
        for child in list(parent):
            if child.tag == "order":
                parent.remove(child)
    entity.append(ET.Element("order", {"attribute": primary_id}))
    wanted = [primary_id] + [c for c in dict.fromkeys(columns) if c != primary_id]
    for index, name in enumerate(wanted):
        attr = ET.Element("attribute", {"name": fetch_attribute_name(name)})
        entity.insert(index, attr)
    for key in ("top", "count", "page", "paging-cookie"):
        root.attrib.pop(key, None)
    return root


def after(root: ET.Element, primary_id: str, last_id: str) -> ET.Element:
    """A copy of the prepared query restricted to primary ids after ``last_id`` (keyset paging)."""
    page = copy.deepcopy(root)
    entity = page.find("entity")
    assert entity is not None
    keyset = ET.SubElement(entity, "filter", {"type": "and"})
    ET.SubElement(keyset, "condition", {"attribute": primary_id, "operator": "gt", "value": last_id})
    return page


def fetch_attribute_name(column: str) -> str:
    """A Web API column name as FetchXML spells it (lookups ``_x_value`` are ``x``)."""
    if column.startswith("_") and column.endswith("_value"):
        return column[1:-6]
    return column


def page_query(root: ET.Element, page: int, count: int, cookie: str | None) -> str:
    root.set("count", str(count))
    root.set("page", str(page))
    if cookie:
        root.set("paging-cookie", cookie)
    else:
        root.attrib.pop("paging-cookie", None)
    return ET.tostring(root, encoding="unicode")


def next_cookie(annotation: str | None) -> str | None:
    """The paging cookie for the next page, from ``@Microsoft.Dynamics.CRM.fetchxmlpagingcookie``.

    The annotation is a ``<cookie pagingcookie="..."/>`` element whose attribute is
    URL-encoded twice; the decoded value goes into the next query's ``paging-cookie``.
    """
    if not annotation:
        return None
    try:
        element = ET.fromstring(annotation)
    except ET.ParseError:
        return None
    raw = element.get("pagingcookie")
    if not raw:
        return None
    return unquote(unquote(raw))
