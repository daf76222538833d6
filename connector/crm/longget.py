"""GET requests whose URL is too long for a plain GET, sent inside ``$batch``.

Dataverse refuses a URL over 32,768 characters (HTTP 414); inside a ``$batch`` body an
operation's URL may be up to 64 KB (Power Apps docs, webapi/compose-http-requests-handle-
errors.md and webapi/execute-batch-operations-using-web-api.md, "use FetchXML within a
batch request"). A dynamic marketing list with big criteria is such a query.
"""

from __future__ import annotations

import json
from typing import Mapping
from urllib.parse import urlencode

from connector.crm.batch import BatchOp, build_batch, parse_batch
from connector.crm.odata import Call, ODataHttp
from connector.errors import NotFoundError, PermanentPeerError

MAX_GET_URL = 32_768
"""Longest URL Dataverse accepts for a request of its own."""
MAX_BATCH_URL = 65_536
"""Longest URL of one operation inside a ``$batch`` body."""


def query_url(path: str, params: Mapping[str, str]) -> str:
    """The relative URL ``requests`` sends for ``path`` with ``params`` (same encoding)."""
    return f"{path}?{urlencode(params)}" if params else path


def get_json(http: ODataHttp, path: str, call: Call, params: Mapping[str, str],
             headers: Mapping[str, str]) -> dict:
    """GET as JSON; through ``$batch`` when the URL is over :data:`MAX_GET_URL` characters."""
    relative = query_url(path, params)
    if len(http.url(relative)) <= MAX_GET_URL:
        return http.get_json(path, call, params=params, headers=headers) or {}
    api_path = "/" + http.api_url.split("/", 3)[3]
    if len(api_path) + len(relative) > MAX_BATCH_URL:
        raise PermanentPeerError(
            f"Dataverse {http.host}: {call.operation} on {call.table} {call.record}: the query is "
            f"{len(relative):,} characters as a URL; Dataverse accepts at most {MAX_BATCH_URL:,} even inside "
            "$batch. Simplify the list's criteria (fewer values, or a static list)", "crm", call.operation)
    ctype, body = build_batch([BatchOp("GET", relative, None, dict(headers))], api_path)
    resp = http.request("POST", "$batch", call, data=body, headers={"Content-Type": ctype})
    try:
        replies = parse_batch(resp.headers.get("Content-Type", ""), resp.content)
    except ValueError as exc:
        raise PermanentPeerError(f"Dataverse {http.host}: {call.operation}: unreadable $batch reply: {exc}",
                                 "crm", call.operation) from exc
    finally:
        resp.close()
    if not replies:
        raise PermanentPeerError(f"Dataverse {http.host}: {call.operation}: empty $batch reply", "crm",
                                 call.operation)
    reply = replies[0]
    if not 200 <= reply.status < 300:
        code, message = reply.error()
        text = (f"Dataverse {http.host}: {call.operation} on {call.table} {call.record} failed: HTTP {reply.status}"
                + (f" ({code})" if code else "") + (f": {message}" if message else ""))
        raise (NotFoundError if reply.status == 404 else PermanentPeerError)(text, "crm", call.operation)
    try:
        return json.loads(reply.body)
    except ValueError as exc:
        raise PermanentPeerError(f"Dataverse {http.host}: {call.operation}: reply is not JSON", "crm",
                                 call.operation) from exc
