"""The SOAP call layer under the Marketing Cloud adapter.

zeep builds every request from the PartnerAPI WSDL (types, element order,
``xsi:type`` of polymorphic objects); this module posts it through our own
``requests`` session (CA bundle, timeouts), reads the reply with lxml, turns
HTTP errors and SOAP faults into ``connector.errors`` and retries the calls that
are safe to repeat through :mod:`connector.retry` (a transient failure is repeated only
for a call marked ``safe``; a "Token Expired" fault renews the token and repeats a safe
call once; a call that starts something is never marked safe).

Marketing Cloud throttles with HTTP 500: the guide's "Rate Limiting" page shows a
``soap:Server`` fault "Rate Limited" with apifault Code 17, and a proxy in front of it
may answer a plain HTTP 500 page; both are a ``ThrottledError`` (retried with backoff).
Other faults also come with HTTP 500 and are told apart by their ``soap:Fault`` body.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import requests
import structlog
import zeep
import zeep.exceptions
from lxml import etree

from connector.errors import (
    AuthError,
    PeerError,
    PeerSetupError,
    PermanentPeerError,
    ThrottledError,
    TokenExpiredError,
    TransientPeerError,
)
from connector.esp.soap_auth import SoapAuth
from connector.retry import BACKOFF_SECONDS, Failure, RetryPolicy, declare, retry_after_seconds

log = structlog.get_logger(__name__)

PEER = "esp"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
FAULT_NS = "urn:fault.partner.exacttarget.com"
RATE_LIMITED_CODE = "17"
"""apifault Code of a throttled call ("Rate Limited")."""

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=True)


def _fault_parts(fault: etree._Element) -> tuple[str, str, str, str]:
    code = (fault.findtext("faultcode") or "").strip()
    message = (fault.findtext("faultstring") or "").strip()
    api_code = (fault.findtext(f".//{{{FAULT_NS}}}Code") or "").strip()
    api_message = (fault.findtext(f".//{{{FAULT_NS}}}Message") or "").strip()
    return code, message, api_code, api_message


def fault_error(fault: etree._Element, operation: str, what: str) -> PeerError:
    """A SOAP fault as a connector error whose message names the object and the ESP's words."""
    code, message, api_code, api_message = _fault_parts(fault)
    local_code = code.rsplit(":", 1)[-1]
    detail = f"{message}" + (f" (apifault {api_code}: {api_message})" if api_code or api_message else "")
    text = f"Marketing Cloud {operation} of {what} failed: {local_code} fault: {detail}"
    if local_code == "Security" or api_code == "11" or "login failed" in message.lower():
        return AuthError(
            text + " - check [esp] username / client_id and the password or client secret",
            peer="esp",
            operation=operation,
        )
    if api_code == RATE_LIMITED_CODE or message.strip().lower() == "rate limited":
        return ThrottledError(text + " (Marketing Cloud throttles this account; slowing down)",
                              peer="esp", operation=operation)
    if local_code == "Client":
        return PermanentPeerError(text, peer="esp", operation=operation)
    if api_code in ("8",):
        return PermanentPeerError(text, peer="esp", operation=operation)
    # Server faults: unplanned outage (2), maintenance (9), "resubmit" (1) ... come and go
    return TransientPeerError(text, peer="esp", operation=operation)


def http_error(status: int, operation: str, what: str, retry_after: float | None = None) -> PeerError:
    text = f"Marketing Cloud {operation} of {what} answered HTTP {status}"
    if status in (429, 500):
        hint = " (how Marketing Cloud throttles)" if status == 500 else ""
        return ThrottledError(text + hint, peer="esp", operation=operation, retry_after=retry_after)
    if status >= 500:
        return TransientPeerError(text, peer="esp", operation=operation, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(text + " - check the [esp] credentials", peer="esp", operation=operation)
    return PermanentPeerError(text, peer="esp", operation=operation)


class SoapCaller:
    """Posts zeep-built envelopes, maps failures, repeats safe calls by the one retry policy."""

    def __init__(
        self,
        client: zeep.Client,
        session: requests.Session,
        auth: SoapAuth,
        endpoint: Callable[[], str],
        *,
        timeout: float,
        max_retries: int,
        backoff_seconds: float = BACKOFF_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self._session = session
        self._auth = auth
        self._endpoint = endpoint
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self._sleep = sleep

    def call(self, operation: str, *, safe: bool, what: str, **kwargs: Any) -> etree._Element:
        """The first child of the reply's soap:Body. ``safe`` = may be repeated (idempotent)."""
        policy = RetryPolicy(PEER, self._max_retries, backoff_seconds=self._backoff, sleep=self._sleep)
        try:
            return policy.call(lambda: self._call_once(operation, what, kwargs), call=f"{operation} of {what}",
                               idempotent=safe)
        except TokenExpiredError as exc:
            raise TransientPeerError(
                f"Marketing Cloud {operation} of {what}: the access token expired; "
                + ("a renewed token was refused too" if safe else "not repeated (the call is not safe to repeat)"),
                peer=PEER,
                operation=operation,
            ) from exc

    def _call_once(self, operation: str, what: str, kwargs: dict[str, Any]) -> etree._Element:
        try:
            soap_headers, endpoint = self._auth.soap_headers(), self._endpoint()
        except TransientPeerError as exc:  # the call was not sent: asking for a token again is always safe
            raise declare(exc, Failure.SAFE)
        try:
            envelope = self.client.create_message(
                self.client.service, operation, _soapheaders=soap_headers, **kwargs
            )
        except (zeep.exceptions.Error, TypeError, ValueError) as exc:
            raise PermanentPeerError(
                f"Marketing Cloud {operation} of {what}: the request does not fit the WSDL ({exc})",
                peer="esp", operation=operation,
            ) from exc
        envelope = self._auth.apply(envelope)
        body = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{operation}"'}
        started = time.monotonic()
        try:
            reply = self._session.post(endpoint, data=body, headers=headers, timeout=self._timeout,
                                       verify=self._session.verify)
        except requests.exceptions.SSLError as exc:
            raise PeerSetupError(
                f"Marketing Cloud {operation} of {what}: TLS verification failed ({exc}) - check [esp] ca_bundle",
                peer="esp", operation=operation,
            ) from exc
        except requests.RequestException as exc:
            raise TransientPeerError(
                f"Marketing Cloud {operation} of {what}: {type(exc).__name__} (connection dropped or timed out)",
                peer="esp",
                operation=operation,
            ) from exc
        log.debug("esp_call_done", peer="esp", operation=operation, status=reply.status_code,
                  duration_ms=int((time.monotonic() - started) * 1000), bytes=len(reply.content))
        return self._read(reply, operation, what)

    def _read(self, reply: requests.Response, operation: str, what: str) -> etree._Element:
        try:
            doc = etree.fromstring(reply.content, parser=_PARSER)
        except etree.XMLSyntaxError as exc:
            if reply.status_code != 200:
                raise http_error(reply.status_code, operation, what, retry_after_seconds(reply.headers)) from exc
            raise TransientPeerError(
                f"Marketing Cloud {operation} of {what}: the reply is not XML ({exc})", peer="esp", operation=operation
            ) from exc
        body = doc.find(f"{{{SOAP_ENV}}}Body")
        if body is None or len(body) == 0:
            if reply.status_code != 200:
                raise http_error(reply.status_code, operation, what, retry_after_seconds(reply.headers))
            raise TransientPeerError(
                f"Marketing Cloud {operation} of {what}: the reply has no SOAP body", peer="esp", operation=operation
            )
        first = body[0]
        if first.tag == f"{{{SOAP_ENV}}}Fault":
            _code, message, _api, _apimsg = _fault_parts(first)
            if message.strip().lower() == "token expired":
                self._auth.token_expired()  # the next attempt (or call) fetches a new one
                raise TokenExpiredError(message, peer=PEER, operation=operation)
            raise fault_error(first, operation, what)
        if reply.status_code != 200:
            raise http_error(reply.status_code, operation, what, retry_after_seconds(reply.headers))
        return first
