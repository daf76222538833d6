"""``$batch`` for the Dataverse sandbox (OData multipart/mixed).

Change sets are all-or-nothing and may refer to earlier items of the same change set by
``Content-ID`` (``$1`` in a URL or an ``@odata.bind``); a reference to another change set
or to a part outside change sets does not resolve. At most 1000 requests per batch, each
URL at most 64 KB. Without
``Prefer: odata.continue-on-error`` processing stops at the first failure and the
batch answers with that status; with it the batch is 200 and every part has its own.
"""

from __future__ import annotations

import re
import uuid
from typing import Callable

from connector.sandbox.dataverse.http import Request, Response, parse_query, status_line
from connector.sandbox.dataverse.keys import check_batch_url
from connector.sandbox.dataverse.store import DataverseStore, StoreError

MAX_BATCH_REQUESTS = 1000


class _Part:
    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes, content_id: str | None) -> None:
        self.method, self.url, self.headers, self.body, self.content_id = method, url, headers, body, content_id


def _boundary(content_type: str) -> str:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise StoreError(400, "0x80060888", "The $batch request needs Content-Type multipart/mixed with a boundary.")
    return m.group(1)


def _split(body: bytes, boundary: str) -> list[bytes]:
    delim = b"--" + boundary.encode()
    chunks = body.split(delim)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        parts.append(chunk.strip(b"\r\n") if chunk.strip() else b"")
    return [p for p in parts if p]


def _headers_and_rest(blob: bytes) -> tuple[dict[str, str], bytes]:
    blob = blob.lstrip(b"\r\n")
    sep = re.search(rb"\r?\n\r?\n", blob)
    head, rest = (blob[: sep.start()], blob[sep.end():]) if sep else (blob, b"")
    headers = {}
    for line in head.decode("utf-8").splitlines():
        name, _, value = line.partition(":")
        if name.strip():
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _parse_http(blob: bytes, outer: dict[str, str]) -> _Part:
    blob = blob.lstrip(b"\r\n")
    line, _, rest = blob.partition(b"\n")
    bits = line.decode("utf-8").strip().split(" ")
    if len(bits) < 2:
        raise StoreError(400, "0x80060888", f"Malformed request line in $batch: {line[:80]!r}")
    headers, body = _headers_and_rest(rest) if rest.strip() else ({}, b"")
    return _Part(bits[0].upper(), bits[1], headers, body.rstrip(b"\r\n"), outer.get("content-id") or headers.get("content-id"))


def parse_batch(req: Request) -> list[list[_Part] | _Part]:
    items: list = []
    for raw in _split(req.body, _boundary(req.headers.get("content-type", ""))):
        headers, rest = _headers_and_rest(raw)
        ctype = headers.get("content-type", "")
        if ctype.startswith("multipart/mixed"):
            changeset = []
            for sub in _split(rest, _boundary(ctype)):
                sh, srest = _headers_and_rest(sub)
                changeset.append(_parse_http(srest, sh))
            items.append(changeset)
        else:
            items.append(_parse_http(rest, headers))
    return items


def _render(resp: Response, content_id: str | None) -> bytes:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    lines = [f"HTTP/1.1 {status_line(resp.status)}"] + [f"{k}: {v}" for k, v in resp.headers]
    return (head + "\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode() + resp.body + b"\r\n"


def run_batch(req: Request, store: DataverseStore, dispatch: Callable[[Request], Response]) -> Response:
    items = parse_batch(req)
    total = sum(len(i) if isinstance(i, list) else 1 for i in items)
    if total > MAX_BATCH_REQUESTS:
        raise StoreError(400, "0x8005f21a", f"The number of requests in the batch is {total}, which exceeds the"
                         f" limit of {MAX_BATCH_REQUESTS}.")
    continue_on_error = "odata.continue-on-error" in req.prefer
    batch_b = f"batchresponse_{uuid.uuid4()}"
    out: list[bytes] = []
    status = 200

    def run_one(part: _Part, content_ids: dict[str, str] | None) -> Response:
        """One operation; ``content_ids`` are its change set's (None: a part outside change sets)."""
        in_changeset = content_ids is not None
        if in_changeset and part.method == "GET":
            raise StoreError(400, "0x80060888", "GET requests are not allowed inside a change set.")
        check_batch_url(part.url)
        content_ids = {} if content_ids is None else content_ids  # $n resolves only inside its change set
        url = part.url
        m = re.match(r"^\$(\w+)(.*)$", url)
        if m:
            if m.group(1) not in content_ids:
                raise StoreError(400, "0x80060888", f"Content-ID Reference: '${m.group(1)}' does not exist in the"
                                 " batch context.")
            url = content_ids[m.group(1)] + m.group(2)
        m = re.search(r"/api/data/(v9\.\d)/(.*)$", url)
        path_q = m.group(2) if m else url.lstrip("/")
        from urllib.parse import unquote

        path, _, query = path_q.partition("?")
        headers = dict(req.headers)
        headers.pop("content-type", None)
        headers.pop("prefer", None)
        headers.pop("if-match", None)
        headers.pop("if-none-match", None)
        headers.update(part.headers)
        sub = Request(part.method, unquote(path), parse_query(query), query, headers, part.body,
                      version=req.version, content_ids=content_ids, caller=req.caller, in_batch=True)
        resp = dispatch(sub)
        if part.content_id and resp.status < 300:
            entity_id = dict((k.lower(), v) for k, v in resp.headers).get("odata-entityid")
            if entity_id:
                content_ids[part.content_id] = entity_id
        return resp

    for item in items:
        if isinstance(item, list):
            cs_b = f"changesetresponse_{uuid.uuid4()}"
            rendered: list[bytes] = []
            failed: Response | None = None
            changeset_ids: dict[str, str] = {}
            try:
                with store.transaction():
                    for part in item:
                        resp = _guard(run_one, part, changeset_ids)
                        if resp.status >= 400:
                            failed = resp
                            raise _Rollback()
                        rendered.append(f"--{cs_b}\r\n".encode() + _render(resp, part.content_id))
            except _Rollback:
                pass
            if failed is not None:
                out.append(f"--{batch_b}\r\n".encode() + _render(failed, None))
                if not continue_on_error:
                    status = failed.status
                    out = [out[-1]]
                    break
                continue
            out.append(f"--{batch_b}\r\nContent-Type: multipart/mixed; boundary={cs_b}\r\n\r\n".encode()
                       + b"".join(rendered) + f"--{cs_b}--\r\n".encode())
        else:
            resp = _guard(run_one, item, None)
            out.append(f"--{batch_b}\r\n".encode() + _render(resp, item.content_id))
            if resp.status >= 400 and not continue_on_error:
                status = resp.status
                out = [out[-1]]
                break
    body = b"".join(out) + f"--{batch_b}--\r\n".encode()
    headers = [("Content-Type", f"multipart/mixed; boundary={batch_b}"), ("OData-Version", "4.0")]
    if continue_on_error:
        headers.append(("Preference-Applied", "odata.continue-on-error"))
    return Response(status, headers, body)


class _Rollback(Exception):
    pass


def _guard(fn: Callable[..., Response], part: _Part, content_ids: dict[str, str] | None) -> Response:
    try:
        return fn(part, content_ids)
    except StoreError as exc:
        return Response.error(exc.status, exc.code, exc.message)
