"""Unit tests of the msal token provider against a stubbed Entra-like authority (no sockets)."""

from __future__ import annotations

import re

import pytest
import responses

from connector.crm.auth import MsalTokenProvider
from connector.errors import AuthError

AUTH = "https://login.sandbox.test/tenant-1"


def _stub_authority(token_status: int = 200) -> None:
    responses.add(responses.GET, re.compile(r"https://login\.sandbox\.test/common/discovery/instance.*"), json={
        "tenant_discovery_endpoint": AUTH + "/v2.0/.well-known/openid-configuration", "api-version": "1.1",
        "metadata": []})
    responses.add(responses.GET, AUTH + "/v2.0/.well-known/openid-configuration", json={
        "token_endpoint": AUTH + "/oauth2/v2.0/token", "authorization_endpoint": AUTH + "/oauth2/v2.0/authorize",
        "issuer": AUTH + "/v2.0"})
    if token_status == 200:
        responses.add(responses.POST, AUTH + "/oauth2/v2.0/token",
                      json={"token_type": "Bearer", "expires_in": 3599, "access_token": "abc"})
    else:
        responses.add(responses.POST, AUTH + "/oauth2/v2.0/token", status=token_status, json={
            "error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})


def _provider() -> MsalTokenProvider:
    return MsalTokenProvider(authority=AUTH, client_id="cid", client_secret="s3cret",
                             org_url="https://org.sandbox.test")


@responses.activate
def test_token_cached_and_renewed_after_invalidate() -> None:
    _stub_authority()
    tokens = _provider()
    assert tokens.token() == "abc" and tokens.token() == "abc"
    posts = [c for c in responses.calls if c.request.method == "POST"]
    assert len(posts) == 1
    assert "scope=https%3A%2F%2Forg.sandbox.test%2F.default" in posts[0].request.body
    assert all("login.sandbox.test" in c.request.url for c in responses.calls)
    tokens.invalidate()
    tokens.token()
    assert len([c for c in responses.calls if c.request.method == "POST"]) == 2


@responses.activate
def test_wrong_secret_is_auth_error_without_the_secret() -> None:
    _stub_authority(token_status=401)
    with pytest.raises(AuthError) as info:
        _provider().token()
    assert "invalid_client" in str(info.value) and "s3cret" not in str(info.value)


def test_from_config_names_missing_keys_and_builds_ntlm() -> None:
    from pydantic import SecretStr

    from connector.config import Config, CrmSettings
    from connector.crm.dataverse import DataverseCrmClient
    from connector.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        DataverseCrmClient.from_config(Config(crm=CrmSettings(url="https://org.test", authority=AUTH)))
    assert info.value.section == "crm" and info.value.key == "client_id"
    with pytest.raises(ConfigError, match="username"):
        DataverseCrmClient.from_config(Config(crm=CrmSettings(url="https://org.test", auth="ntlm")))
    client = DataverseCrmClient.from_config(Config(crm=CrmSettings(
        url="https://crm.corp.test/contoso/", auth="ntlm", username="CORP\\svc", password=SecretStr("pw"),
        api_version="9.1")))
    try:
        assert client.http.api_url == "https://crm.corp.test/contoso/api/data/v9.1/"
        assert type(client.http.session().auth).__name__ == "HttpNtlmAuth"
    finally:
        client.close()
