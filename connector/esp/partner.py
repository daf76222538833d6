"""Typed building blocks of PartnerAPI calls: types, filters, paged Retrieve, Create, Perform.

``PartnerApi`` wraps a ``SoapCaller`` with the few request shapes the adapter
needs, built from the WSDL's own types so element order and ``xsi:type`` are right
for whichever WSDL is configured. Replies come back as flat ``{"Field": text}``
rows (``connector.esp.events.flatten``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator, Sequence

from lxml import etree

from connector.errors import PermanentPeerError
from connector.esp.events import PARTNER_NS, flatten
from connector.esp.soap import SoapCaller
from connector.models import WriteResult


def q(name: str) -> str:
    """The qualified PartnerAPI name of an element or type."""
    return f"{{{PARTNER_NS}}}{name}"


def number(text: str) -> int:
    """An integer field of a reply; blank or malformed counts as 0."""
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else 0


def name_values(element: etree._Element, path: str) -> dict[str, str]:
    """The Name/Value pairs under ``path`` of a reply object (Subscriber ``Attributes``, a data
    extension row's ``Properties/Property``) as a dict; a nil or empty value is ""."""
    out: dict[str, str] = {}
    for item in element.iterfind(path):
        name = (item.findtext(q("Name")) or "").strip()
        if name:
            out[name] = item.findtext(q("Value")) or ""
    return out


def write_results(keys: Sequence[str], results: list[dict[str, str]], reply: etree._Element) -> list[WriteResult]:
    """One ``WriteResult`` per key of a Create / Update / Delete, matched by ``OrdinalID``
    (by position when it is missing); a key without a result failed."""
    by_ordinal: dict[int, dict[str, str]] = {}
    for position, result in enumerate(results):
        ordinal = result.get("OrdinalID", "")
        by_ordinal[int(ordinal) if ordinal.isdigit() else position] = result
    overall = reply.findtext(q("OverallStatus")) or ""
    out = []
    for index, key in enumerate(keys):
        result = by_ordinal.get(index)
        if result is None:
            out.append(WriteResult(key, False, f"no result from Marketing Cloud ({overall})"))
            continue
        ok = result.get("StatusCode") == "OK"
        out.append(WriteResult(key, ok, "" if ok else result.get("StatusMessage", overall), result.get("ErrorCode", "")))
    return out


def results(reply: etree._Element) -> list[dict[str, str]]:
    """The per-object ``Results`` of a Create / Update / Delete reply, in order."""
    return [flatten(r) for r in reply.iterfind(q("Results"))]


class PartnerApi:
    """Request shapes over one ``SoapCaller``; type factories are looked up once."""

    def __init__(self, soap: SoapCaller) -> None:
        self.soap = soap
        self._types: dict[str, Any] = {}

    def type(self, name: str) -> Any:
        factory = self._types.get(name)
        if factory is None:
            factory = self._types[name] = self.soap.client.get_type(q(name))
        return factory

    def simple(self, prop: str, operator: str, values: Sequence[str] = (), dates: Sequence[datetime] = ()) -> Any:
        kwargs: dict[str, Any] = {"Property": prop, "SimpleOperator": operator}
        if values:
            kwargs["Value"] = list(values)
        if dates:
            kwargs["DateValue"] = list(dates)
        return self.type("SimpleFilterPart")(**kwargs)

    def and_(self, left: Any, right: Any) -> Any:
        return self.type("ComplexFilterPart")(LeftOperand=left, LogicalOperator="AND", RightOperand=right)

    def pages(
        self, object_type: str, properties: Sequence[str], filter_part: Any, what: str
    ) -> Iterator[list[dict[str, str]]]:
        """Retrieve, page by page, as flat rows (``element_pages`` has the rules)."""
        for page in self.element_pages(object_type, properties, filter_part, what):
            yield [flatten(r) for r in page]

    def element_pages(
        self, object_type: str, properties: Sequence[str], filter_part: Any, what: str
    ) -> Iterator[list[etree._Element]]:
        """Retrieve, page by page (2,500 rows at most), following ContinueRequest; the ``Results``
        elements as they came (for objects with name/value collections, ``name_values``).

        The first call is retried like any read. A continuation is not: the whole result
        set keeps one RequestID and each ContinueRequest with it moves on to the next page,
        so repeating one whose reply was lost would skip a page. A failed continuation
        raises; the caller starts over (tracking: from its watermark, next run).
        """
        request: dict[str, Any] = {"ObjectType": object_type, "Properties": list(properties), "Filter": filter_part}
        first = True
        while True:
            reply = self.soap.call("Retrieve", safe=first, what=what if first else f"{what} (next page)",
                                   RetrieveRequest=request)
            first = False
            status = (reply.findtext(q("OverallStatus")) or "").strip()
            if status not in ("OK", "MoreDataAvailable"):
                raise PermanentPeerError(f"Marketing Cloud Retrieve of {what} failed: {status or 'no OverallStatus'}",
                                         peer="esp", operation="Retrieve")
            yield list(reply.iterfind(q("Results")))
            if status != "MoreDataAvailable":
                return
            request_id = (reply.findtext(q("RequestID")) or "").strip()
            if not request_id:
                raise PermanentPeerError(f"Marketing Cloud Retrieve of {what}: MoreDataAvailable without a RequestID",
                                         peer="esp", operation="Retrieve")
            # zeep insists on ObjectType; the server continues from the RequestID alone
            request = {"ObjectType": object_type, "Properties": list(properties), "ContinueRequest": request_id}

    def in_(self, prop: str, values: Sequence[str]) -> Any:
        """``prop`` equals the one value, or is IN the several."""
        return self.simple(prop, "IN" if len(values) > 1 else "equals", values)

    def rows(
        self, object_type: str, properties: Sequence[str], filter_part: Any, what: str
    ) -> Iterator[dict[str, str]]:
        for page in self.pages(object_type, properties, filter_part, what):
            yield from page

    def find_by_key(self, object_type: str, key: str, properties: Sequence[str]) -> dict[str, str] | None:
        what = f"{object_type} {key!r}"
        for row in self.rows(object_type, properties, self.simple("CustomerKey", "equals", [key]), what):
            return row
        return None

    def create_one(self, obj: Any, what: str) -> dict[str, str]:
        reply = self.soap.call("Create", safe=False, what=what, Options={}, Objects=[obj])
        rows = results(reply)
        if not rows or rows[0].get("StatusCode") != "OK":
            detail = rows[0] if rows else {}
            message = detail.get("StatusMessage") or reply.findtext(q("OverallStatus"))
            raise PermanentPeerError(
                f"Marketing Cloud could not create {what}: {message}"
                + (f" (ErrorCode {detail['ErrorCode']})" if detail.get("ErrorCode") else ""),
                peer="esp", operation="Create",
            )
        return rows[0]

    def perform_start(self, object_type: str, key: str) -> str:
        what = f"{object_type} {key!r}"
        definition = self.type(object_type)(CustomerKey=key)
        reply = self.soap.call("Perform", safe=False, what=what, Action="start",
                               Definitions={"Definition": [definition]})
        rows = [flatten(r) for r in reply.iterfind(f"{q('Results')}/{q('Result')}")]
        result = rows[0] if rows else {}
        if result.get("StatusCode") != "OK":
            message = (result.get("StatusMessage") or reply.findtext(q("OverallStatusMessage"))
                       or reply.findtext(q("OverallStatus")))
            raise PermanentPeerError(f"Marketing Cloud could not start {what}: {message}",
                                     peer="esp", operation="Perform")
        return result.get("Task.ID", "")
