"""Request/response plumbing shared by the Dataverse sandbox modules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from connector.sandbox.dataverse.schema import Entity
from connector.sandbox.dataverse.store import StoreError

API_VERSIONS = ("v9.0", "v9.1", "v9.2")

_STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
                401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                412: "Precondition Failed", 413: "Payload Too Large", 429: "Too Many Requests",
                500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


def status_line(code: int) -> str:
    return f"{code} {_STATUS_TEXT.get(code, 'Unknown')}"


@dataclass
class Request:
    method: str
    path: str  # after /api/data/v9.x/, percent-decoded (UTF-8)
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    version: str = "v9.2"
    content_ids: dict[str, str] = field(default_factory=dict)  # batch: "1" -> entity URL
    caller: str = ""
    in_batch: bool = False

    @property
    def prefer(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in _split_prefer(self.headers.get("prefer", "")):
            name, _, value = part.partition("=")
            out[name.strip().lower()] = value.strip().strip('"')
        return out

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(400, "0x80048d19", f"Error identified in Payload provided by the user: the request"
                             f" body is not valid JSON ({exc}).") from exc


def _split_prefer(text: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def json(cls, status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> "Response":
        hdrs = [("Content-Type", "application/json; odata.metadata=minimal"), ("OData-Version", "4.0")]
        return cls(status, hdrs + list(headers or []), json.dumps(payload, ensure_ascii=False).encode())

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None) -> "Response":
        return cls.json(status, {"error": {"code": code, "message": message}}, headers)

    @classmethod
    def empty(cls, status: int = 204, headers: list[tuple[str, str]] | None = None) -> "Response":
        return cls(status, [("OData-Version", "4.0")] + list(headers or []))


def parse_query(raw: str) -> dict[str, str]:
    return dict(parse_qsl(raw, keep_blank_values=True))


def split_outside(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` outside single quotes and parentheses (parts kept as they are)."""
    parts, cur, quoted, depth = [], "", False, 0
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and not quoted and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def split_path(path: str) -> list[str]:
    """Split on '/' outside single quotes and parentheses."""
    return [p for p in split_outside(path, "/") if p != ""]


_SEGMENT = re.compile(r"^([^()]+)(?:\((.*)\))?$", re.S)


def parse_segment(segment: str) -> tuple[str, str | None]:
    m = _SEGMENT.match(segment)
    if not m:
        raise StoreError(404, "0x80060888", f"Resource not found for the segment '{segment}'.")
    return m.group(1), m.group(2)


def parse_key(text: str) -> dict[str, Any] | str:
    """``<guid>`` -> guid string; ``a='x',b=1`` -> dict."""
    text = text.strip()
    if re.fullmatch(r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?", text):
        return text.strip("{}").lower()
    out: dict[str, Any] = {}
    i = 0
    while i < len(text):
        eq = text.find("=", i)
        if eq < 0:
            raise StoreError(400, "0x80060888", f"Bad Request - Error in query syntax: key '{text}'.")
        name = text[i:eq].strip()
        j = eq + 1
        if j < len(text) and text[j] == "'":
            j += 1
            val = ""
            while j < len(text):
                if text[j] == "'":
                    if j + 1 < len(text) and text[j + 1] == "'":
                        val += "'"
                        j += 2
                        continue
                    break
                val += text[j]
                j += 1
            j += 1
            value: Any = val
        else:
            end = text.find(",", j)
            end = len(text) if end < 0 else end
            raw = text[j:end].strip()
            value = int(raw) if re.fullmatch(r"-?\d+", raw) else raw.lower()
            j = end
        out[name] = value
        while j < len(text) and text[j] in ", ":
            j += 1
        i = j
    return out


def decode_path(raw_uri: str) -> tuple[str, str]:
    path, _, query = raw_uri.partition("?")
    return unquote(path, encoding="utf-8"), query


def not_found(e: Entity, rid: Any) -> StoreError:
    if isinstance(rid, dict):
        keys = ",".join(f"{k}:{v}" for k, v in rid.items())
        return StoreError(404, "0x80040217", f"A record with the specified key values does not exist in"
                          f" {e.logical_name} entity ({keys}).")
    return StoreError(404, "0x80040217", f"{e.logical_name} With Id = {rid} Does Not Exist")


def payload_error(e: Entity, text: str) -> StoreError:
    return StoreError(400, "0x80048d19", f"Error identified in Payload provided by the user for Entity :"
                      f"'{e.entity_set}', For more information on this error please follow this help link"
                      f" https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException :"
                      f" Microsoft.OData.ODataException: {text}")
