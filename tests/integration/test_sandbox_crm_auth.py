"""The Dataverse sandbox's Entra ID authority, as MSAL and plain requests see it."""

from __future__ import annotations

import msal
import pytest
import requests


@pytest.fixture
def http():
    # requests lets REQUESTS_CA_BUNDLE override a session's verify: give msal a session that
    # ignores the environment, so the sandbox CA is what is checked
    with requests.Session() as session:
        session.trust_env = False
        yield session


def _app(crm, http, **kw):
    http.verify = str(crm.ca_file)
    return msal.ConfidentialClientApplication(
        crm.client_id, authority=crm.authority, client_credential=kw.pop("secret", crm.client_secret),
        http_client=http, **kw)


@pytest.mark.parametrize("discovery", ["endpoint", "off", "no-validate"])
def test_msal_confidential_client_gets_a_token(crm_sandbox, http, discovery):
    kw = {"endpoint": {"instance_discovery": f"{crm_sandbox.authority_url}/common/discovery/instance"},
          "off": {"instance_discovery": False},
          "no-validate": {"validate_authority": False}}[discovery]
    app = _app(crm_sandbox, http, **kw)
    result = app.acquire_token_for_client(scopes=[crm_sandbox.scope])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer" and result["expires_in"] > 3000
    r = requests.get(crm_sandbox.api_url + "WhoAmI", verify=str(crm_sandbox.ca_file),
                     headers={"Authorization": f"Bearer {result['access_token']}"}, timeout=10)
    assert r.status_code == 200
    assert r.json()["UserId"] == crm_sandbox.app_user_id


def test_wrong_secret_is_rejected_like_entra(crm_sandbox, http):
    result = _app(crm_sandbox, http, secret="wrong", instance_discovery=False).acquire_token_for_client(
        scopes=[crm_sandbox.scope])
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided")


def test_token_endpoint_shapes(crm_sandbox):
    url = f"{crm_sandbox.authority}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": crm_sandbox.client_id,
            "client_secret": crm_sandbox.client_secret, "scope": crm_sandbox.scope}
    verify = str(crm_sandbox.ca_file)
    ok = requests.post(url, data=form, verify=verify, timeout=10)
    assert ok.status_code == 200 and set(ok.json()) >= {"token_type", "expires_in", "access_token"}
    bad_scope = requests.post(url, data=form | {"scope": "https://other.example/.default"}, verify=verify, timeout=10)
    assert bad_scope.status_code == 400 and bad_scope.json()["error"] == "invalid_resource"
    bad_secret = requests.post(url, data=form | {"client_secret": "x"}, verify=verify, timeout=10)
    assert bad_secret.status_code == 401 and bad_secret.json()["error"] == "invalid_client"
    conf = requests.get(f"{crm_sandbox.authority}/v2.0/.well-known/openid-configuration", verify=verify, timeout=10)
    assert conf.json()["token_endpoint"] == url


def test_web_api_needs_a_valid_unexpired_token(crm_sandbox, crm_token):
    verify = str(crm_sandbox.ca_file)
    assert requests.get(crm_sandbox.api_url + "contacts", verify=verify, timeout=10).status_code == 401
    forged = requests.get(crm_sandbox.api_url + "contacts", verify=verify, timeout=10,
                          headers={"Authorization": "Bearer a.b.c"})
    assert forged.status_code == 401
    token = crm_token()
    good = requests.get(crm_sandbox.api_url + "contacts", verify=verify, timeout=10,
                        headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 200
    crm_sandbox.expire_tokens()
    expired = requests.get(crm_sandbox.api_url + "contacts", verify=verify, timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
    assert expired.status_code == 401 and "WWW-Authenticate" in expired.headers
