"""Dataverse ``$batch``: build a multipart/mixed request and read its reply.

Operations go as independent top-level parts (no change set), sent with
``Prefer: odata.continue-on-error`` so one bad record does not stop the others;
the reply has one part per operation, in order, each with its own status.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from connector.crm.odata import error_fields

MAX_BATCH = 1000
"""Dataverse refuses a $batch of more than 1,000 requests."""


@dataclass(frozen=True)
class BatchOp:
    method: str
    path: str  # relative to the Web API root, e.g. "contacts(<id>)"
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartReply:
    status: int
    headers: Mapping[str, str]
    body: str

    def error(self) -> tuple[str, str]:
        try:
            data = json.loads(self.body) if self.body.strip() else {}
        except ValueError:
            return "", self.body.strip()[:300]
        return error_fields(data) or ("", "")


def build_batch(ops: Sequence[BatchOp], api_path: str) -> tuple[str, bytes]:
    """(content type, body) of a $batch request; ``api_path`` like ``/api/data/v9.2/``."""
    if len(ops) > MAX_BATCH:
        raise ValueError(f"a $batch holds at most {MAX_BATCH} requests, got {len(ops)}")
    boundary = f"batch_{uuid.uuid4()}"
    lines: list[str] = []
    for op in ops:
        lines += [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", ""]
        lines.append(f"{op.method} {api_path}{op.path} HTTP/1.1")
        for name, value in op.headers.items():
            lines.append(f"{name}: {value}")
        if op.body is not None:
            lines.append("Content-Type: application/json; type=entry")
            lines.append("")
            lines.append(json.dumps(op.body, ensure_ascii=False))
        else:
            lines.append("")
        lines.append("")
    lines.append(f"--{boundary}--")
    lines.append("")
    return f'multipart/mixed; boundary="{boundary}"', "\r\n".join(lines).encode("utf-8")


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)


def parse_batch(content_type: str, body: bytes) -> list[PartReply]:
    """The replies of a $batch response, in order; change-set replies are flattened."""
    match = _BOUNDARY.search(content_type or "")
    if not match:
        raise ValueError(f"$batch reply without a multipart boundary (Content-Type {content_type!r})")
    return _parse_multipart(match.group(1), body.decode("utf-8", errors="replace"))


def _parse_multipart(boundary: str, text: str) -> list[PartReply]:
    replies: list[PartReply] = []
    delimiter = f"--{boundary}"
    chunks = text.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            break
        part_headers, _, rest = _split_head(chunk.lstrip("\r\n"))
        ctype = part_headers.get("content-type", "")
        inner = _BOUNDARY.search(ctype)
        if ctype.lower().startswith("multipart/mixed") and inner:
            replies.extend(_parse_multipart(inner.group(1), rest))
            continue
        replies.append(_parse_http(rest))
    return replies


def _split_head(text: str) -> tuple[dict[str, str], str, str]:
    """Split a block into (headers, first line, rest) at the first blank line."""
    normalized = text.replace("\r\n", "\n")
    head, _, rest = normalized.partition("\n\n")
    headers: dict[str, str] = {}
    first = ""
    for line in head.split("\n"):
        if ":" in line and not line.startswith("HTTP/"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        elif line.strip():
            first = line.strip()
    return headers, first, rest


def _parse_http(text: str) -> PartReply:
    headers, status_line, body = _split_head(text.lstrip("\n"))
    parts = status_line.split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        status = 0
    return PartReply(status=status, headers=headers, body=body.strip())
