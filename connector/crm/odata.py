"""The Dataverse Web API over ``requests``: sessions, retries and error translation.

One ``requests.Session`` per thread. Every call has a timeout. Each failure is classified
for :mod:`connector.retry` (the one retry policy of every peer):

- 429 (service protection): ``Failure.SAFE``, repeated after ``Retry-After`` whatever the
  method — a throttled request was never processed — up to 4 × ``max_retries`` waits. Every
  request of the process to one organization as one user goes through that pair's
  :class:`~connector.crm.pacing.Pace` (how many in flight; paused for every thread after a
  429 — told to it before the request's slot is freed — for as long as the pacer says;
  ``x-ms-dop-hint`` read).
- 401 with an OAuth token: ``Failure.RENEW_TOKEN``, the token is dropped and the request
  repeated once whatever the method (Dataverse checks the token before it acts).
- A token that could not be fetched: ``Failure.SAFE`` (asking for a token is always safe).
- 500/502/503/504 and dropped connections: ``Failure.IF_IDEMPOTENT``, repeated with jittered
  backoff only for calls the caller marked idempotent (GET, PATCH with If-Match /
  If-None-Match, a $batch of such operations, a POST that only reads). A POST that creates
  is never repeated blindly. 500 is in the set because Dataverse answers it for passing
  faults (a SQL timeout, a busy worker) and repeating a safe call is harmless; the Azure SDK
  guidelines retry the same statuses (408/429/500/502/503/504) for idempotent calls.
  Other 5xx are ``Failure.NEVER`` in the call (a ``TransientPeerError`` for the next run).

Everything else becomes an error of ``connector.errors`` naming the organization,
the operation, the table and the record.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from connector.errors import (
    AuthError,
    NotFoundError,
    PeerError,
    PermanentPeerError,
    ThrottledError,
    TokenExpiredError,
    TransientPeerError,
)
from connector.crm.auth import PEER, MsalTokenProvider, ca_error_message
from connector.crm.pacing import Pace
from connector.retry import Failure, RetryPolicy, declare, retry_after_seconds


RETRY_STATUSES = frozenset({500, 502, 503, 504})
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


class _Unauthorized(TokenExpiredError):
    """Internal: a 401 with an OAuth token (dropped already); ``refusal`` is what goes up if renewing does not help."""

    def __init__(self, refusal: PeerError) -> None:
        super().__init__(str(refusal), PEER, refusal.operation)
        self.refusal = refusal


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
        tries = throttled = 0
        waited_pause = -1  # the pause this thread has already waited out

        def attempt() -> requests.Response:
            nonlocal tries, throttled, waited_pause
            tries += 1
            if self._tokens is not None:
                try:
                    hdrs["Authorization"] = "Bearer " + self._tokens.token()
                except TransientPeerError as exc:  # asking for a token is always safe to repeat
                    raise declare(exc, Failure.SAFE)
            waited_pause, epoch = self._await_slot(waited_pause)
            try:
                resp = self.session().request(  # explicit verify: the environment must not override it
                    method, url, params=params, data=body, headers=hdrs, timeout=self.timeout, verify=self._verify)
                if resp.status_code == 429:  # told to the pace while the slot is held: no thread slips past it
                    self.pace.throttled_by(error_of(resp)[0], retry_after_seconds(resp.headers) or 0.0)
            except requests.exceptions.SSLError as exc:
                raise AuthError(ca_error_message(self.host, self._ca_bundle, exc), PEER, call.operation) from exc
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                raise TransientPeerError(
                    f"Dataverse {self.host}: {self._what(call)} failed: connection lost "
                    f"({exc.__class__.__name__}) after {tries} attempt(s)", PEER, call.operation) from exc
            finally:
                self.pace.release()
            status = resp.status_code
            self.pace.hint(resp.headers.get("x-ms-dop-hint"))
            if status != 429 and status < 500:
                self.pace.healthy(epoch)  # ignored if a 429 came in since it was sent
            if status in accept or status < 300:
                resp.pace_epoch = epoch  # type: ignore[attr-defined]  # for Pace.batch_healthy
                return resp
            throttled += status == 429
            try:
                raise self._failure(resp, call, throttled)
            finally:
                resp.close()

        def pace(exc: BaseException, wait: float) -> float:
            """After a 429 this thread waits out the organization's whole pause (others' 429s too)."""
            nonlocal waited_pause
            if isinstance(exc, ThrottledError):
                waited_pause = self.pace.pause_id  # read first: the wait below covers this pause
                wait = max(wait, self.pace.wait_time())
            return wait

        try:
            return self._policy().call(attempt, call=self._what(call), idempotent=call.idempotent, pace=pace)
        except _Unauthorized as exc:
            raise exc.refusal from None

    def _policy(self) -> RetryPolicy:
        """Read per call: tests and benches change ``max_retries`` and ``_sleep`` on a built client."""
        return RetryPolicy(PEER, self.max_retries, renew_any_call=True, sleep=self._sleep,
                           throttle_retries=max(self.max_retries, 1) * THROTTLE_ATTEMPTS_FACTOR)

    def _failure(self, resp: requests.Response, call: Call, throttled: int) -> PeerError:
        """The error of a refused reply, classified for the retry policy."""
        if resp.status_code == 429:
            return self._throttled(resp, call, throttled)
        if resp.status_code == 401 and self._tokens is not None:
            self._tokens.invalidate()
            return _Unauthorized(self.translate(resp, call))
        return self.translate(resp, call)

    def _throttled(self, resp: requests.Response, call: Call, times: int) -> ThrottledError:
        """A 429: never processed, so repeated whatever the call (``Failure.SAFE``)."""
        code, message = error_of(resp)
        exc = ThrottledError(f"Dataverse {self.host}: {self._what(call)} throttled {times} time(s) (HTTP 429"
                             f"{', ' + code if code else ''}): {message}", PEER, call.operation,
                             retry_after=retry_after_seconds(resp.headers))
        return declare(set_error_details(exc, 429, code), Failure.SAFE)

    def _await_slot(self, waited_pause: int) -> tuple[int, int]:
        """Take a request slot of the organization's pace, after any pause it is in:
        (the pause waited for, the pace's epoch the request is sent in)."""
        while True:
            pause = self.pace.wait_time()
            if pause > 0 and self.pace.pause_id != waited_pause:
                waited_pause = self.pace.pause_id
                self._sleep(pause)  # another thread was told to wait: so is this one
            epoch = self.pace.acquire()
            if self.pace.wait_time() > 0 and self.pace.pause_id != waited_pause:
                self.pace.release()  # a 429 came in while this thread waited for its slot
                continue
            return waited_pause, epoch

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
            exc = ThrottledError(text, PEER, call.operation, retry_after=retry_after_seconds(resp.headers))
        elif status >= 500:
            exc = TransientPeerError(text, PEER, call.operation)
        else:
            exc = PermanentPeerError(text, PEER, call.operation)
        if status >= 500 and status not in RETRY_STATUSES:
            declare(exc, Failure.NEVER)  # 501, 505 ...: repeating in the call cannot help; the next run may
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
