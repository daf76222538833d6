"""The Dataverse Web API over ``requests``: sessions, retries and error translation.

One ``requests.Session`` per thread. Every call has a timeout. Retry policy:

- 429 (service protection): wait ``Retry-After`` and repeat, whatever the method —
  a throttled request was never processed. Every request of the process to one
  organization as one user goes through that pair's :class:`~connector.crm.pacing.Pace`
  (how many in flight; paused for every thread after a 429; ``x-ms-dop-hint`` read).
- 401: renew the token once and repeat (the request was refused, not processed).
- 500/502/503/504 and dropped connections: exponential backoff with jitter, but only
  for calls the caller marked idempotent (GET, PATCH with If-Match / If-None-Match,
  a $batch of such operations, a POST that only reads). A POST that creates is never
  repeated blindly. 500 is in the set because Dataverse answers it for passing faults
  (a SQL timeout, a busy worker) and repeating a safe call is harmless; the Azure SDK
  guidelines retry the same statuses (408/429/500/502/503/504) for idempotent calls.

Everything else becomes an error of ``connector.errors`` naming the organization,
the operation, the table and the record.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter

from connector.errors import (
    AuthError,
    NotFoundError,
    PeerError,
    PermanentPeerError,
    ThrottledError,
    TransientPeerError,
)
from connector.crm.auth import PEER, MsalTokenProvider, ca_error_message
from connector.crm.pacing import Pace

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 300.0
MISSING_CUSTOMIZATION_HINTS = ("Resource not found for the segment", "does not exist on type",
                               "Could not find a property named", "is not valid for resource")
"""Dataverse's words for an unknown table, column or key: the customizations may be missing."""
THROTTLE_ATTEMPTS_FACTOR = 4
"""A 429 storm may last: allow this many times ``max_retries`` waits before giving up."""


@dataclass(frozen=True)
class Call:
    """What a request is about, for retries and error messages."""

    operation: str
    table: str = ""
    record: str = ""
    idempotent: bool = False


def set_error_details(exc: PeerError, status: int | None, code: str) -> PeerError:
    exc.status = status  # type: ignore[attr-defined]
    exc.code = code  # type: ignore[attr-defined]
    return exc


def error_fields(body: Any) -> tuple[str, str] | None:
    """(code, message) of a decoded Dataverse error body ``{"error": {...}}``; None when it holds none."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or ""), str(err.get("message") or "")[:500]
    return None


def error_of(resp: requests.Response) -> tuple[str, str]:
    """(code, message) from a Dataverse error body; tolerant of non-JSON replies."""
    try:
        body = resp.json()
    except ValueError:
        return "", (resp.text or resp.reason or "")[:300]
    return error_fields(body) or ("", str(body)[:300])


class ODataHttp:
    """Low-level Web API access for one organization."""

    def __init__(
        self,
        org_url: str,
        *,
        api_version: str = "9.2",
        tokens: MsalTokenProvider | None = None,
        auth: requests.auth.AuthBase | None = None,
        ca_bundle: Path | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        pace: Pace | None = None,
    ) -> None:
        self.org_url = org_url.rstrip("/")
        self.api_url = f"{self.org_url}/api/data/v{api_version}/"
        self.host = urlsplit(self.org_url).netloc
        self._tokens = tokens
        self._auth = auth
        self._ca_bundle = ca_bundle
        self._verify: str | bool = str(ca_bundle) if ca_bundle else True
        self.timeout = timeout
        self.max_retries = max_retries
        self._sleep = sleep
        self.pace = pace or Pace()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    # -- sessions ---------------------------------------------------------------
    def session(self) -> requests.Session:
        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = requests.Session()
            sess.verify = self._verify
            sess.headers.update({
                "Accept": "application/json",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
                "User-Agent": "crm-esp-connector",
            })
            if self._auth is not None:
                sess.auth = self._auth
            adapter = HTTPAdapter(pool_connections=2, pool_maxsize=4, max_retries=0)
            sess.mount("https://", adapter)
            sess.mount("http://", adapter)
            self._local.session = sess
            with self._lock:
                self._sessions.append(sess)
        return sess

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for sess in sessions:
            sess.close()
        self._local = threading.local()
        if self._tokens is not None and hasattr(self._tokens, "close"):
            self._tokens.close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.api_url + path.lstrip("/")

    # -- requests ---------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        call: Call,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send one request with the retry policy; statuses in ``accept`` are returned as is."""
        url = self.url(path)
        hdrs = dict(headers or {})
        body = data
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json; charset=utf-8")
        attempt = throttled = 0
        renewed = False
        waited_pause = -1  # the pause this thread has already waited out
        while True:
            if self._tokens is not None:
                try:
                    hdrs["Authorization"] = "Bearer " + self._tokens.token()
                except TransientPeerError as exc:  # asking for a token is always safe to repeat
                    if attempt < self.max_retries:
                        attempt += 1
                        self._backoff(call, attempt, f"token: {exc}")
                        continue
                    raise
            waited_pause = self._await_slot(waited_pause)
            try:
                resp = self.session().request(  # explicit verify: the environment must not override it
                    method, url, params=params, data=body, headers=hdrs, timeout=self.timeout, verify=self._verify)
            except requests.exceptions.SSLError as exc:
                raise AuthError(ca_error_message(self.host, self._ca_bundle, exc), PEER, call.operation) from exc
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                if call.idempotent and attempt < self.max_retries:
                    attempt += 1
                    self._backoff(call, attempt, f"connection: {exc.__class__.__name__}")
                    continue
                raise TransientPeerError(
                    f"Dataverse {self.host}: {self._what(call)} failed: connection lost "
                    f"({exc.__class__.__name__}) after {attempt + 1} attempt(s)", PEER, call.operation) from exc
            finally:
                self.pace.release()
            status = resp.status_code
            self.pace.hint(resp.headers.get("x-ms-dop-hint"))
            if status != 429 and status < 500:
                self.pace.healthy()
            if status in accept or status < 300:
                return resp
            if status == 429:
                retry_after = self._retry_after(resp, throttled)
                if throttled < max(self.max_retries, 1) * THROTTLE_ATTEMPTS_FACTOR:
                    throttled += 1
                    code, _message = error_of(resp)
                    resp.close()
                    wait, waited_pause = self.pace.throttled_by(code, retry_after)
                    log.warning("crm_throttled", peer=PEER, operation=call.operation, reason=code,
                                retry_after=retry_after, attempt=throttled)
                    self._sleep(wait)
                    continue
                code, message = error_of(resp)
                raise set_error_details(ThrottledError(
                    f"Dataverse {self.host}: {self._what(call)} still throttled after {throttled} waits: "
                    f"{message}", PEER, call.operation, retry_after=retry_after), status, code)
            if status == 401 and self._tokens is not None and not renewed:
                renewed = True
                resp.close()
                log.info("crm_token_renewed", peer=PEER, operation=call.operation)
                self._tokens.invalidate()
                continue
            if status in RETRY_STATUSES and call.idempotent and attempt < self.max_retries:
                attempt += 1
                resp.close()
                self._backoff(call, attempt, f"HTTP {status}")
                continue
            raise self.translate(resp, call)

    def _await_slot(self, waited_pause: int) -> int:
        """Take a request slot of the organization's pace, after any pause it is in; the pause waited for."""
        while True:
            pause = self.pace.wait_time()
            if pause > 0 and self.pace.pause_id != waited_pause:
                waited_pause = self.pace.pause_id
                self._sleep(pause)  # another thread was told to wait: so is this one
            self.pace.acquire()
            if self.pace.wait_time() > 0 and self.pace.pause_id != waited_pause:
                self.pace.release()  # a 429 came in while this thread waited for its slot
                continue
            return waited_pause

    def _retry_after(self, resp: requests.Response, throttled: int) -> float:
        value = resp.headers.get("Retry-After", "")
        try:
            seconds = float(value)
        except ValueError:
            seconds = min(2.0 ** throttled, MAX_BACKOFF_SECONDS)
        return max(0.0, min(seconds, MAX_RETRY_AFTER_SECONDS))

    def _backoff(self, call: Call, attempt: int, why: str) -> None:
        delay = random.uniform(0, min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** attempt))
        log.warning("crm_call_retried", peer=PEER, operation=call.operation, attempt=attempt,
                    reason=why, delay_s=round(delay, 2))
        self._sleep(delay)

    def _what(self, call: Call) -> str:
        what = call.operation
        if call.table:
            what += f" on {call.table}"
        if call.record:
            what += f" {call.record}"
        return what

    def translate(self, resp: requests.Response, call: Call) -> PeerError:
        """The connector error for a failed reply (status >= 300)."""
        status = resp.status_code
        code, message = error_of(resp)
        text = f"Dataverse {self.host}: {self._what(call)} failed: HTTP {status}"
        if code:
            text += f" ({code})"
        if message:
            text += f": {message}"
        if any(h in message for h in MISSING_CUSTOMIZATION_HINTS):
            text += ". If this names a connector table or column, run `connector crm-setup -c service.ini`"
        exc: PeerError
        if status == 401:
            exc = AuthError(text + ". Check the application user and [crm] client_id / credentials", PEER, call.operation)
        elif status == 403:
            exc = AuthError(text + ". Give the connector's application user a security role with this privilege",
                            PEER, call.operation)
        elif status == 404:
            exc = NotFoundError(text, PEER, call.operation)
        elif status == 429:
            exc = ThrottledError(text, PEER, call.operation, retry_after=self._retry_after(resp, 0))
        elif status >= 500:
            exc = TransientPeerError(text, PEER, call.operation)
        else:
            exc = PermanentPeerError(text, PEER, call.operation)
        return set_error_details(exc, status, code)

    # -- reads ------------------------------------------------------------------
    def get_json(self, path: str, call: Call, *, params: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None, accept: tuple[int, ...] = ()) -> dict | None:
        resp = self.request("GET", path, call, params=params, headers=headers, accept=accept)
        try:
            if resp.status_code in accept:
                return None
            return resp.json()
        except ValueError as exc:
            raise PermanentPeerError(
                f"Dataverse {self.host}: {self._what(call)}: reply is not JSON", PEER, call.operation) from exc
        finally:
            resp.close()

    def iter_pages(self, path: str, call: Call, *, params: Mapping[str, str] | None = None,
                   prefer: str = "", page_size: int = 5000) -> Iterator[dict]:
        """Yield each page's JSON, following ``@odata.nextLink`` verbatim."""
        prefs = [f"odata.maxpagesize={page_size}"] + ([prefer] if prefer else [])
        headers = {"Prefer": ",".join(prefs)}
        url: str | None = path
        query: Mapping[str, str] | None = params
        while url:
            page = self.get_json(url, call, params=query, headers=headers)
            assert page is not None
            yield page
            nxt = page.get("@odata.nextLink")
            if nxt and nxt == url:
                raise PermanentPeerError(
                    f"Dataverse {self.host}: {self._what(call)}: the server repeated a next link; "
                    "stopping to avoid an endless read", PEER, call.operation)
            url, query = nxt, None
