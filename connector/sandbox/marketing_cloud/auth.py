"""Authentication of the Marketing Cloud sandbox: OAuth client credentials and SOAP headers.

- ``token_reply``: ``POST /v2/token`` in Marketing Cloud's JSON shape (tokens live
  20 minutes; wrong client id/secret → 401 ``invalid_client``);
- ``authenticate``: the SOAP header must carry ``fueloauth`` (text, or nested text as
  zeep renders it; legacy ``oAuth/oAuthToken`` too) or a WS-Security UsernameToken with
  a PasswordText password. Expired token → "Token Expired"; otherwise "Login failed".
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from connector.sandbox.faults import FaultKnobs
from connector.sandbox.marketing_cloud.soap import SoapFault, local

TOKEN_SECONDS = 1200
DOCS_URI = "https://developer.salesforce.com/docs"
SCOPE = ("email_read email_write email_send list_and_subscribers_read list_and_subscribers_write "
         "tracking_events_read data_extensions_read")


class Credentials:
    """The account's API credentials and the OAuth tokens issued so far."""

    def __init__(self, client_id: str, client_secret: str, account_id: str, username: str, password: str) -> None:
        self.client_id, self.client_secret, self.account_id = client_id, client_secret, account_id
        self.username, self.password = username, password
        self.token_seconds = TOKEN_SECONDS
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_seconds
            if len(self._tokens) > 10_000:
                self._tokens = dict(list(self._tokens.items())[-5000:])
        return token

    def check(self, token: str) -> str:
        """'ok', 'expired' or 'unknown'."""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return "unknown"
        return "ok" if time.monotonic() < expiry else "expired"

    def expire_all(self) -> None:
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)


def _oauth_error(status: str, code: str, description: str) -> tuple[str, dict]:
    return status, {"error": code, "error_description": description, "error_uri": DOCS_URI}


def token_reply(payload: Any, creds: Credentials, base_url: str) -> tuple[str, dict]:
    """(HTTP status, JSON body) for a token request body already decoded from JSON."""
    if not isinstance(payload, dict):
        return _oauth_error("400 Bad Request", "invalid_request", "The request body is not a JSON object.")
    if payload.get("grant_type") != "client_credentials":
        return _oauth_error("400 Bad Request", "unsupported_grant_type", "Use grant_type client_credentials.")
    if payload.get("client_id") != creds.client_id or payload.get("client_secret") != creds.client_secret:
        return _oauth_error("401 Unauthorized", "invalid_client",
                            "Invalid client ID. Use the client ID in Marketing Cloud Installed Packages.")
    account = payload.get("account_id")
    if account not in (None, "", creds.account_id, _int_or_none(creds.account_id)):
        return _oauth_error("401 Unauthorized", "unauthorized_client",
                            "The client is not authorized for this account_id (MID).")
    return "200 OK", {
        "access_token": creds.issue(), "token_type": "Bearer", "expires_in": creds.token_seconds, "scope": SCOPE,
        "soap_instance_url": base_url + "/", "rest_instance_url": base_url + "/",
    }


def authenticate(header: Any, creds: Credentials, faults: FaultKnobs) -> None:
    """Raise the fault the real service gives when the SOAP header does not authenticate."""
    token = username = password = None
    password_type = ""
    for el in header.iter():
        if not isinstance(el.tag, str):
            continue
        name = local(el.tag)
        if name in ("fueloauth", "oAuthToken"):
            token = "".join(el.itertext()).strip()
        elif name == "Username":
            username = (el.text or "").strip()
        elif name == "Password":
            password, password_type = el.text or "", el.get("Type", "")
    if token:
        state = creds.check(token)
        if state == "expired" or faults.take("token_expired"):
            raise SoapFault("soap:Client", "Token Expired")
        if state != "ok":
            raise SoapFault("q0:Security", "Login failed", security=True)
        return
    if username is not None:
        if (username == creds.username and password == creds.password
                and (not password_type or password_type.endswith("#PasswordText"))):
            return
        raise SoapFault("q0:Security", "Login failed", security=True)
    raise SoapFault("q0:Security", "Security requirements are not satisfied because the security header is "
                    "not present in the incoming message.", security=True)


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None
