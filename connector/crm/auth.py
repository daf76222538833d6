"""Authentication to Dataverse: OAuth client credentials (msal) or Windows auth (NTLM).

``MsalTokenProvider`` keeps one msal ``ConfidentialClientApplication`` (thread-safe,
token cache in memory). msal serves a cached token until five minutes before it
expires and then fetches a new one, so a long run never presents a stale token;
``invalidate()`` drops the cached token after a 401 so the next call renews it.

Against a Microsoft authority (login.microsoftonline.com and the sovereign clouds)
msal is used exactly as Microsoft documents it. Against any other host (the
sandbox, a private Entra-compatible authority) msal is built with
``instance_discovery=False``, its documented switch for authorities it does not
know: it then reads ``<authority>/v2.0/.well-known/openid-configuration`` and the
token endpoint named there, and never reaches out to login.microsoftonline.com.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import structlog

from connector.errors import AuthError, ConfigError, TransientPeerError

log = structlog.get_logger(__name__)

PEER = "crm"


def scope_for(org_url: str) -> str:
    """The client-credentials scope of a Dataverse organization: ``<org url>/.default``."""
    return org_url.rstrip("/") + "/.default"


def ca_error_message(host: str, ca_bundle: Path | None, exc: BaseException) -> str:
    where = f"the CA file {ca_bundle}" if ca_bundle else "the system CA store"
    return (
        f"TLS certificate of {host} could not be verified against {where} ({exc.__class__.__name__}). "
        "Set [crm] ca_bundle in service.ini to the CA file that issued the server's certificate "
        "(the sandbox prints it as ca.pem); verification is never turned off."
    )


def _is_microsoft_host(host: str) -> bool:
    try:
        from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS
    except ImportError:  # pragma: no cover - msal always ships it
        return host.endswith("microsoftonline.com")
    return host in WELL_KNOWN_AUTHORITY_HOSTS


class VerifyingHttpClient:
    """The HTTP client handed to msal: passes ``verify`` and ``timeout`` on every call.

    ``requests`` lets the REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE environment variables
    override a session's ``verify``; an explicit per-call ``verify`` is kept, so the
    configured ``[crm] ca_bundle`` is what is trusted (proxies from the environment
    still apply).
    """

    def __init__(self, verify: str | bool, timeout: float) -> None:
        self._session = requests.Session()
        self._verify = verify
        self._timeout = timeout

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.get(url, verify=self._verify, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.post(url, verify=self._verify, **kwargs)

    def close(self) -> None:
        self._session.close()


class MsalTokenProvider:
    """Bearer tokens for one Dataverse organization via msal client credentials."""

    def __init__(
        self,
        *,
        authority: str,
        client_id: str,
        client_secret: str,
        org_url: str,
        timeout: float = 60.0,
        ca_bundle: Path | None = None,
    ) -> None:
        self._authority = authority.rstrip("/")
        self._client_id = client_id
        self._secret = client_secret
        self._scopes = [scope_for(org_url)]
        self._verify: str | bool = str(ca_bundle) if ca_bundle else True
        self._timeout = timeout
        self._ca_bundle = ca_bundle
        self._app: Any = None
        self._http: VerifyingHttpClient | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return urlsplit(self._authority).netloc

    def _build(self) -> Any:
        host = urlsplit(self._authority).hostname or ""
        # Microsoft clouds: msal's default (instance discovery at login.microsoftonline.com).
        # Any other host (sandbox, private authority): msal's documented opt-out, so it reads
        # the authority's own OpenID configuration and never calls out to Microsoft (msal
        # would otherwise also look up authority aliases there after a refused token).
        return self._app_with(None if _is_microsoft_host(host) else False)

    def _app_with(self, instance_discovery: Any) -> Any:
        import msal

        self._http = self._http or VerifyingHttpClient(self._verify, self._timeout)
        return msal.ConfidentialClientApplication(
            self._client_id,
            authority=self._authority,
            client_credential=self._secret,
            http_client=self._http,
            instance_discovery=instance_discovery,
        )

    def close(self) -> None:
        with self._lock:
            http, self._http, self._app = self._http, None, None
        if http is not None:
            http.close()

    def _app_or_build(self) -> Any:
        with self._lock:
            if self._app is None:
                self._app = self._build()
            return self._app

    def token(self) -> str:
        """A valid access token (from the cache when it has more than 5 minutes left)."""
        try:
            app = self._app_or_build()
            result = app.acquire_token_for_client(scopes=self._scopes)
        except requests.exceptions.SSLError as exc:
            raise AuthError(ca_error_message(self.host, self._ca_bundle, exc), PEER, "token") from exc
        except (requests.ConnectionError, requests.Timeout, requests.HTTPError,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientPeerError(
                f"Entra ID authority {self._authority} unreachable or failing: {exc.__class__.__name__}; "
                "check [crm] authority and the network", PEER, "token") from exc
        except Exception as exc:  # noqa: BLE001 - msal's own errors, translated below
            if type(exc).__name__ == "MsalServiceError":  # the authority answered 5xx
                raise TransientPeerError(
                    f"Entra ID authority {self._authority} failed: {exc}; retry later", PEER, "token") from exc
            if not isinstance(exc, ValueError):
                raise
            # msal: OIDC discovery failed (unknown tenant, bad authority)
            raise AuthError(
                f"Entra ID authority {self._authority} rejected discovery: {exc}. "
                "Check [crm] authority (https://login.microsoftonline.com/<tenant id>)", PEER, "token") from exc
        if "access_token" not in result:
            error = result.get("error", "unknown_error")
            desc = str(result.get("error_description", "")).splitlines()[0][:300]
            raise AuthError(
                f"Entra ID refused a token for client {self._client_id} at {self._authority}: {error}: {desc}. "
                "Check [crm] client_id and the client secret (CONNECTOR_CRM_CLIENT_SECRET)", PEER, "token")
        return result["access_token"]

    def invalidate(self) -> None:
        """Forget cached tokens so the next ``token()`` asks the authority again."""
        app = self._app
        if app is None:
            return
        cache = app.token_cache
        for entry in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(entry)


def ntlm_auth(username: str, password: str) -> requests.auth.AuthBase:
    """Windows (NTLM) credentials for on-premises CRM; ``DOMAIN\\user``."""
    if not username or not password:
        raise ConfigError(
            "[crm] auth = ntlm needs [crm] username (DOMAIN\\user) and the password "
            "(CONNECTOR_CRM_PASSWORD)", section="crm", key="username" if not username else "password")
    from requests_ntlm import HttpNtlmAuth

    return HttpNtlmAuth(username, password)
