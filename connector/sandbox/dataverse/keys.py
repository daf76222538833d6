"""Which record addresses and URLs the real Dataverse front end refuses.

- Request paths: IIS/ASP.NET refuses a decoded request path holding any of
  ``< > * % & : \\ ?`` (``requestPathInvalidCharacters``) with a plain 400 page, before
  Dataverse sees the request; a URL longer than 32,768 characters gets a 414 page.
- Alternate-key values: "If the data within a column used in an alternate key contains
  ``< > * % & : / \\`` then update or upsert (PATCH) actions will not work"
  (PD maker/data-platform/define-alternate-keys-reference-records.md). ``/`` and ``\\``
  break the OData path parser ("Bad Request - Error in query syntax.", 0x8006088a); the
  others are refused wherever the key is used (a ``$batch`` part, ``@odata.bind``), and
  ``+`` with them (MicrosoftDocs/dynamics-365-customer-engagement issue 2697).
- Inside ``$batch`` a request URL may be up to 64 KB.
"""

from __future__ import annotations

from typing import Any

from connector.sandbox.dataverse.http import Response
from connector.sandbox.dataverse.store import StoreError

REQUEST_PATH_INVALID = frozenset("<>*%&:\\?")
"""ASP.NET's default ``requestPathInvalidCharacters`` (checked on the decoded path)."""
KEY_SYNTAX_BREAKERS = frozenset("/\\")
KEY_REFUSED = frozenset("<>*%&:+")
MAX_URL = 32_768
"""Longest request URL (path and query) the Web API accepts outside ``$batch``."""
MAX_BATCH_URL = 65_536
"""Longest request URL of one operation inside a ``$batch`` body."""


def path_refusal(decoded_path: str) -> Response | None:
    """The 400 page IIS answers for a dangerous character in the decoded request path."""
    bad = next((ch for ch in decoded_path if ch in REQUEST_PATH_INVALID), None)
    if bad is None:
        return None
    text = f"A potentially dangerous Request.Path value was detected from the client ({bad})."
    return _page(400, "Bad Request", text)


def url_refusal(raw_uri: str) -> Response | None:
    """The 414 page for a request URL over :data:`MAX_URL` characters."""
    if len(raw_uri) <= MAX_URL:
        return None
    return _page(414, "Request URL Too Long", "HTTP Error 414. The request URL is too long.")


def check_batch_url(url: str) -> None:
    if len(url) > MAX_BATCH_URL:
        raise StoreError(400, "0x80060888", "Invalid URI: The Uri string is too long.")


def check_key_values(values: dict[str, Any]) -> None:
    """Refuse an alternate-key value Dataverse cannot address a record by."""
    for name, value in values.items():
        if not isinstance(value, str):
            continue
        if any(ch in KEY_SYNTAX_BREAKERS for ch in value):
            raise StoreError(400, "0x8006088a", "Bad Request - Error in query syntax.")
        bad = next((ch for ch in value if ch in KEY_REFUSED), None)
        if bad is not None:
            raise StoreError(400, "0x8006088a", f"A potentially dangerous Request.Path value was detected from"
                             f" the client ({bad}). The value of key '{name}' holds a character an alternate key"
                             " can't be addressed by: < > * % & : / \\ +")


def _page(status: int, title: str, text: str) -> Response:
    body = (f"<HTML><HEAD><TITLE>{title}</TITLE></HEAD><BODY><h2>{title}</h2><hr><p>{text}</p>"
            "</BODY></HTML>").encode()
    return Response(status, [("Content-Type", "text/html; charset=us-ascii")], body)
