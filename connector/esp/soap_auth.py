"""Authentication for the Marketing Cloud SOAP API.

Two ways in:

* OAuth 2.0 client credentials ("enhanced package"): ``POST <auth_url>/v2/token``
  returns an access token (about 20 minutes) and the tenant's ``soap_instance_url``;
  each SOAP call carries it in a ``fueloauth`` header. The token is cached and
  renewed shortly before it expires; a "Token Expired" fault invalidates it once.
* WS-Security UsernameToken (PasswordText) for an API user.

Tokens and passwords never reach a log line or an error message.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import requests
import structlog
from lxml import etree
from zeep.wsse.username import UsernameToken

from connector.errors import AuthError, PeerSetupError, PermanentPeerError, ThrottledError, TransientPeerError

log = structlog.get_logger(__name__)

FUELOAUTH = "{http://exacttarget.com}fueloauth"
RENEW_MARGIN_SECONDS = 120.0
"""A token is renewed this long before it expires, so a call never carries a dying one."""


class SoapAuth:
    """What every SOAP call needs from the authentication: headers, an envelope hook."""

    def soap_headers(self) -> list[etree._Element]:
        return []

    def apply(self, envelope: etree._Element) -> etree._Element:
        return envelope

    def token_expired(self) -> None:
        """The server said "Token Expired": forget the current token."""

    @property
    def soap_instance_url(self) -> str:
        return ""


class WsseAuth(SoapAuth):
    """WS-Security UsernameToken with a plain-text password (what Marketing Cloud expects)."""

    def __init__(self, username: str, password: str) -> None:
        self._token = UsernameToken(username, password)

    def apply(self, envelope: etree._Element) -> etree._Element:
        envelope, _headers = self._token.apply(envelope, {})
        return envelope

    def __repr__(self) -> str:
        return "WsseAuth(***)"


class OAuthAuth(SoapAuth):
    """OAuth client-credentials token source, thread-safe, renewed before expiry."""

    def __init__(
        self,
        session: requests.Session,
        auth_url: str,
        client_id: str,
        client_secret: str,
        *,
        account_id: str = "",
        timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not auth_url:
            raise AuthError("[esp] auth_url is empty: OAuth needs the tenant auth base URL",
                            peer="esp", operation="token")
        self._session = session
        self._url = auth_url.rstrip("/") + "/v2/token"
        self._client_id = client_id
        self._secret = client_secret
        self._account_id = account_id
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._expires_at = 0.0
        self._soap_instance_url = ""

    def __repr__(self) -> str:
        return f"OAuthAuth(url={self._url!r}, client_id={self._client_id!r})"

    @property
    def soap_instance_url(self) -> str:
        if not self._soap_instance_url:
            self.token()
        return self._soap_instance_url

    def token(self) -> str:
        with self._lock:
            if not self._token or self._clock() >= self._expires_at - RENEW_MARGIN_SECONDS:
                self._fetch()
            return self._token

    def token_expired(self) -> None:
        with self._lock:
            self._token = ""

    def soap_headers(self) -> list[etree._Element]:
        header = etree.Element(FUELOAUTH, nsmap={None: "http://exacttarget.com"})
        header.text = self.token()
        return [header]

    def _fetch(self) -> None:
        body = {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._secret}
        if self._account_id:
            body["account_id"] = self._account_id
        try:
            reply = self._session.post(self._url, json=body, timeout=self._timeout, verify=self._session.verify)
        except requests.exceptions.SSLError as exc:
            raise PeerSetupError(
                f"TLS verification of {self._url} failed: {exc} - check [esp] ca_bundle", peer="esp", operation="token"
            ) from exc
        except requests.RequestException as exc:
            raise TransientPeerError(
                f"Marketing Cloud token request to {self._url} failed: {type(exc).__name__}",
                peer="esp", operation="token",
            ) from exc
        self._check_status(reply)
        try:
            data = reply.json()
            token = str(data["access_token"])
            expires_in = float(data.get("expires_in", 1080))
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentPeerError(
                f"Marketing Cloud token reply from {self._url} has no access_token", peer="esp", operation="token"
            ) from exc
        self._token = token
        self._expires_at = self._clock() + expires_in
        instance = str(data.get("soap_instance_url") or "")
        if instance:
            self._soap_instance_url = instance
        log.info("esp_token_fetched", peer="esp", expires_in=int(expires_in))

    def _check_status(self, reply: requests.Response) -> None:
        status = reply.status_code
        if status == 200:
            return
        where = f"Marketing Cloud token endpoint {self._url}"
        if status in (400, 401, 403):
            raise AuthError(
                f"{where} refused the client credentials (HTTP {status}): check [esp] client_id, "
                "[esp] account_id and the secret in CONNECTOR_ESP_CLIENT_SECRET",
                peer="esp",
                operation="token",
            )
        if status in (429, 500):
            raise ThrottledError(f"{where} answered HTTP {status}", peer="esp", operation="token")
        if status >= 500:
            raise TransientPeerError(f"{where} answered HTTP {status}", peer="esp", operation="token")
        raise PermanentPeerError(f"{where} answered HTTP {status}", peer="esp", operation="token")
