"""Operator problems hold a send request, they never fail it (issue 19, item 6).

A wrong ESP client secret or a CA bundle that does not trust the ESP's certificate
is the operator's to fix: the request stays Pending with a note, the step run is
reported failed with the problem, and once the configuration is fixed the next
poll sends it. An unknown e-mail key is the marketer's: the request fails naming
the key, before any subscriber is written at the ESP.
"""

from __future__ import annotations

import json

import pytest

from connector.config import load_config
from connector.runtime import AdapterPool
from connector.sandbox.tls import SandboxCA
from connector.state.store import StateStore
from connector.steps.send.step import run_sends

PENDING, SENT, FAILED = 100000000, 100000002, 100000003


def new_request(sb, **extra) -> str:
    org = sb.seeded
    return sb.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "Operator problems", "cesp_status": PENDING,
        "cesp_targets": json.dumps([{"kind": "list", "id": org.lists["vip"]}]),
        "ownerid": org.users["mia"], "ownerid__type": "systemuser", **extra})


def poll(config, rid: str):
    """One poll of the send step, as the service runs it (own adapters, the shared state DB)."""
    store = StateStore.from_config(config, holder="test")
    adapters = AdapterPool(config)
    try:
        store.migrate()
        return run_sends(adapters.step_context(store)), store.get_send_job(rid)
    finally:
        adapters.close_all()
        store.close()


def assert_held(sb, rid: str, outcome, words: str) -> None:
    row = sb.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == PENDING, row["cesp_reason"]
    assert "Held by the connector, not failed" in row["cesp_reason"] and words in row["cesp_reason"]
    assert not outcome.ok and rid in outcome.message and words in outcome.message
    assert outcome.details.get("held") == 1
    assert not sb.esp.store.sends_for(f"cesp-send-{rid}")
    assert not sb.esp.store.subscribers


def assert_sent(sb, rid: str) -> None:
    row = sb.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == SENT, row["cesp_reason"]
    assert len(sb.esp.store.sends_for(f"cesp-send-{rid}")) == 1
    assert row["cesp_handedover"] + row["cesp_skipped"] == row["cesp_resolved"] > 0


@pytest.mark.parametrize("auth, variable, words", [
    ("oauth", "CONNECTOR_ESP_CLIENT_SECRET", "client"),
    ("wsse", "CONNECTOR_ESP_PASSWORD", "password"),
])
def test_a_wrong_esp_secret_holds_the_request_until_it_is_fixed(sandbox, tmp_path, monkeypatch, auth: str,
                                                                variable: str, words: str) -> None:
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none",
                                    esp__auth=auth, esp__username=sandbox.esp.username)
    rid = new_request(sandbox)
    monkeypatch.setenv(variable, "not-the-secret")
    for _ in range(2):  # every poll holds it again, none fails it
        outcome, _job = poll(load_config(ini), rid)
        assert_held(sandbox, rid, outcome, words)

    monkeypatch.delenv(variable)
    outcome, _job = poll(load_config(ini), rid)
    assert outcome.ok, outcome.message
    assert_sent(sandbox, rid)


def test_a_ca_bundle_that_does_not_trust_the_esp_holds_the_request(sandbox, tmp_path) -> None:
    other = SandboxCA(tmp_path / "other-ca")
    wrong = sandbox.write_service_ini(tmp_path / "wrong" / "service.ini", logging__console="off",
                                      tracking__mode="none", esp__ca_bundle=other.ca_file,
                                      service__data_dir=tmp_path / "var")
    rid = new_request(sandbox)
    outcome, _job = poll(load_config(wrong), rid)
    assert_held(sandbox, rid, outcome, "ca_bundle")

    right = sandbox.write_service_ini(tmp_path / "right" / "service.ini", logging__console="off",
                                      tracking__mode="none", service__data_dir=tmp_path / "var")
    outcome, _job = poll(load_config(right), rid)
    assert outcome.ok, outcome.message
    assert_sent(sandbox, rid)


def test_an_unknown_email_key_fails_before_any_subscriber_is_written(sandbox, tmp_path) -> None:
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none")
    rid = new_request(sandbox, cesp_emailkey="no-such-email")
    outcome, job = poll(load_config(ini), rid)
    row = sandbox.crm.store.get("cesp_sendrequests", rid)
    assert row["cesp_status"] == FAILED
    assert "'no-such-email'" in row["cesp_reason"] and "email key" in row["cesp_reason"]
    assert not sandbox.esp.store.subscribers  # found before the first upsert
    assert sandbox.esp.store.list_by_key(f"cesp-list-{rid}") is None
    assert outcome.ok and job.status == "failed"  # the marketer's to fix: a failed request, a healthy step


def test_a_refused_login_is_tried_once_per_poll_not_once_per_request(sandbox, tmp_path, monkeypatch) -> None:
    from connector.esp.soap_auth import OAuthAuth

    asked: list[int] = []
    real = OAuthAuth._fetch

    def counted(self):  # the real token request, counted: each refused one may count towards a lock-out
        asked.append(1)
        return real(self)

    monkeypatch.setattr(OAuthAuth, "_fetch", counted)
    ini = sandbox.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none",
                                    sends__workers=1)
    rids = [new_request(sandbox) for _ in range(3)]
    monkeypatch.setenv("CONNECTOR_ESP_CLIENT_SECRET", "not-the-secret")
    outcome, _job = poll(load_config(ini), rids[0])
    assert outcome.details["held"] == 3 and len(asked) == 1
    for rid in rids:
        row = sandbox.crm.store.get("cesp_sendrequests", rid)
        assert row["cesp_status"] == PENDING and "Held by the connector" in row["cesp_reason"]
