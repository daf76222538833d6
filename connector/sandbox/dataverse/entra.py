"""A Microsoft Entra ID authority for the sandbox, as MSAL Python calls it.

Endpoints (``{base}`` = the sandbox URL, ``{tenant}`` = its tenant id):

- ``GET /common/discovery/instance?api-version=1.1&authorization_endpoint=...``
  (instance discovery; MSAL calls it unless told ``instance_discovery=False``)
- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (tenant discovery)
- ``POST /{tenant}/oauth2/v2.0/token`` (client credentials, form post; the secret in
  the form or a Basic header) and the legacy ``/{tenant}/oauth2/token`` (``resource=``).

Tokens are JWT-shaped (header.payload.signature, HMAC-signed by the sandbox) with
``aud`` = the org URL, ``tid``, ``appid``, ``oid`` and ``exp``; the Web API checks
them and answers 401 when missing, forged, for another audience, or expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN_LIFETIME_SECONDS = 3599
"""``expires_in`` of issued tokens (Entra ID issues 60-90 minute tokens)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class TokenInfo:
    app_id: str
    object_id: str
    expires: float


class EntraAuthority:
    """Issues and checks tokens for one tenant and one confidential client."""

    def __init__(self, *, tenant_id: str, client_id: str, client_secret: str, app_object_id: str,
                 token_lifetime: int = TOKEN_LIFETIME_SECONDS) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.app_object_id = app_object_id
        self.token_lifetime = token_lifetime
        self.base_url = ""  # set once the server knows its port
        self.org_url = ""
        self._key = secrets.token_bytes(32)
        self._generation = 0
        self._lock = threading.Lock()
        self.issued = 0

    # -- tokens -------------------------------------------------------------------
    def issue(self, audience: str) -> tuple[str, int]:
        now = int(time.time())
        with self._lock:
            self.issued += 1
            payload = {"aud": audience, "iss": f"https://sts.windows.net/{self.tenant_id}/", "iat": now,
                       "nbf": now, "exp": now + self.token_lifetime, "appid": self.client_id,
                       "oid": self.app_object_id, "tid": self.tenant_id, "idtyp": "app",
                       "ver": "1.0", "gen": self._generation, "jti": uuid.uuid4().hex}
        head = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        body = _b64(json.dumps(payload).encode())
        sig = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}", self.token_lifetime

    def expire_all(self) -> None:
        """Invalidate every token issued so far (as if they had all expired)."""
        with self._lock:
            self._generation += 1

    def check(self, authorization: str | None) -> tuple[TokenInfo | None, str]:
        """(token info, "") or (None, why it is not accepted)."""
        if not authorization or not authorization.startswith("Bearer "):
            return None, "Bearer token is missing"
        token = authorization[7:].strip()
        try:
            head, body, sig = token.split(".")
            expected = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(sig, expected):
                return None, "The access token signature is invalid"
            payload = json.loads(_unb64(body))
        except (ValueError, json.JSONDecodeError):
            return None, "The access token is malformed"
        if payload.get("aud", "").rstrip("/") != self.org_url.rstrip("/"):
            return None, "The access token has an invalid audience"
        with self._lock:
            stale = payload.get("gen") != self._generation
        if stale or payload.get("exp", 0) <= time.time():
            return None, "ExpiredAuthTicket: The access token has expired"
        return TokenInfo(payload["appid"], payload["oid"], payload["exp"]), ""

    # -- WSGI -----------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        method = environ["REQUEST_METHOD"]
        if path == "/common/discovery/instance" and method == "GET":
            return self._instance_discovery(environ, start_response)
        parts = path.strip("/").split("/")
        tenant = parts[0]
        rest = "/".join(parts[1:])
        if tenant not in (self.tenant_id, "organizations", "common"):
            return _json(start_response, "400 Bad Request", _aad_error(
                "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct"
                " tenant ID and are signing into the correct cloud."))
        if rest == "v2.0/.well-known/openid-configuration" and method == "GET":
            return _json(start_response, "200 OK", self.openid_configuration())
        if rest in ("oauth2/v2.0/token", "oauth2/token") and method == "POST":
            return self._token(environ, start_response, v1=(rest == "oauth2/token"))
        return _json(start_response, "404 Not Found", _aad_error("invalid_request", 900561,
                                                                 f"The endpoint only accepts POST, GET: {path}"))

    def openid_configuration(self) -> dict:
        root = f"{self.base_url}/{self.tenant_id}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.base_url}/{self.tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "sandbox.local",
        }

    def _instance_discovery(self, environ: dict, start_response: Any) -> list[bytes]:
        params = parse_qs(environ.get("QUERY_STRING", ""))
        endpoint = (params.get("authorization_endpoint") or [""])[0]
        # MSAL sends the authorization endpoint without the port (it keeps only the host name)
        parsed, ours = urlsplit(endpoint), urlsplit(self.base_url)
        if parsed.scheme != ours.scheme or parsed.hostname != ours.hostname or parsed.path.count("/") < 2:
            return _json(start_response, "400 Bad Request", _aad_error(
                "invalid_instance", 50049, "Unknown or invalid instance."))
        tenant = parsed.path.split("/")[1]
        host = self.base_url.split("://", 1)[1]
        return _json(start_response, "200 OK", {
            "tenant_discovery_endpoint": f"{self.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        })

    def _token(self, environ: dict, start_response: Any, v1: bool) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = {k: v[0] for k, v in parse_qs(environ["wsgi.input"].read(length).decode()).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                pass
        if form.get("grant_type") != "client_credentials":
            return _json(start_response, "400 Bad Request", _aad_error(
                "unsupported_grant_type", 70003, "The app requested an unsupported grant type "
                f"'{form.get('grant_type', '')}'. The sandbox supports client_credentials."))
        if client_id != self.client_id:
            return _json(start_response, "400 Bad Request", _aad_error(
                "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found in the"
                f" directory '{self.tenant_id}'."))
        if secret is None:
            return _json(start_response, "401 Unauthorized", _aad_error(
                "invalid_client", 7000216, "'client_assertion', 'client_secret' or 'request' is required for"
                " the 'client_credentials' grant type."))
        if not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
            return _json(start_response, "401 Unauthorized", _aad_error(
                "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the"
                f" request is the client secret value, not the client secret ID, for a secret added to app"
                f" '{self.client_id}'."))
        if v1:
            resource = form.get("resource", "").rstrip("/")
        else:
            scope = form.get("scope", "")
            scopes = [s for s in scope.split() if s not in ("openid", "profile", "offline_access")]
            if len(scopes) != 1 or not scopes[0].endswith("/.default"):
                return _json(start_response, "400 Bad Request", _aad_error(
                    "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid. Client"
                    " credential flows must have a scope value with /.default suffixed to the resource"
                    " identifier (application ID URI)."))
            resource = scopes[0][: -len("/.default")].rstrip("/")
        if resource != self.org_url.rstrip("/"):
            return _json(start_response, "400 Bad Request", _aad_error(
                "invalid_resource", 500011, f"The resource principal named {resource} was not found in the"
                f" tenant named {self.tenant_id}. This can happen if the application has not been installed"
                " by the administrator of the tenant or consented to by any user in the tenant."))
        token, lifetime = self.issue(self.org_url)
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                                "access_token": token}
        if v1:
            body = {k: str(v) for k, v in body.items()} | {"resource": self.org_url,
                                                          "expires_on": str(int(time.time()) + lifetime)}
        return _json(start_response, "200 OK", body)


def _aad_error(error: str, code: int, text: str) -> dict:
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return {"error": error, "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID:"
            f" {corr} Timestamp: {now}", "error_codes": [code], "timestamp": now, "trace_id": trace,
            "correlation_id": corr}


def _json(start_response: Any, status: str, body: dict) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "no-store")])
    return [data]
