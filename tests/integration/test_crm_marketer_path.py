"""The send request as a marketer builds it in CRM (issue 20.1-20.3), against the Dataverse sandbox over HTTPS.

crm-setup creates the N:N target relationships, the e-mail table and its lookup and the status
reasons; the client reads related records as targets (with the JSON column, de-duplicated) and
the e-mail key from the lookup.
"""

from __future__ import annotations

import pytest

from connector.crm.odata import Call
from connector.crm.setup import CrmSetup
from connector.errors import PermanentPeerError
from connector.models import SendStatus, SendTarget, TargetKind


def associate(client, request_id: str, nav: str, entity_set: str, record_id: str) -> None:
    """What CRM's "Add existing" does on a subgrid: ``POST <request>/<nav>/$ref``."""
    url = client.http.url(f"{entity_set}({record_id})")
    client.http.request("POST", f"cesp_sendrequests({request_id})/{nav}/$ref", Call("associate", "test"),
                        json_body={"@odata.id": url}).close()


def test_related_records_are_targets_with_the_json_ones_deduplicated(crm_client, crm_seed) -> None:
    a, b = crm_seed.contact(emailaddress1="a@example.com"), crm_seed.contact(emailaddress1="b@example.com")
    lead = crm_seed.lead(emailaddress1="l@example.com")
    account = crm_seed.account(name="Acme", emailaddress1="acme@example.com")
    list_id = crm_seed.static_list("contact", [a])
    request_id = crm_seed.send_request([{"kind": "contact", "id": a}])
    associate(crm_client, request_id, "cesp_sendrequest_list", "lists", list_id)
    for contact in (a, b):  # a is also in the JSON column: once only
        associate(crm_client, request_id, "cesp_sendrequest_contact", "contacts", contact)
    associate(crm_client, request_id, "cesp_sendrequest_lead", "leads", lead)
    associate(crm_client, request_id, "cesp_sendrequest_account", "accounts", account)
    request = crm_client.get_send_request(request_id)
    assert request.targets == (
        SendTarget(TargetKind.CONTACT, a), SendTarget(TargetKind.LIST, list_id), SendTarget(TargetKind.CONTACT, b),
        SendTarget(TargetKind.LEAD, lead), SendTarget(TargetKind.ACCOUNT, account))
    claimed = crm_client.claim_send_request(crm_client.pending_send_requests()[0])
    assert claimed.status is SendStatus.PROCESSING and claimed.targets == request.targets


def test_related_sets_are_read_page_by_page(crm_client, crm_seed) -> None:
    contacts = sorted(crm_seed.contact(emailaddress1=f"p{i}@example.com") for i in range(8))  # page size 3
    request_id = crm_seed.send_request([])
    for contact in contacts:
        associate(crm_client, request_id, "cesp_sendrequest_contact", "contacts", contact)
    request = crm_client.get_send_request(request_id)
    assert [t.id for t in request.targets] == contacts


def test_the_sandbox_refuses_a_record_of_the_wrong_type_for_a_relationship(crm_client, crm_seed) -> None:
    contact = crm_seed.contact(emailaddress1="a@example.com")
    request_id = crm_seed.send_request([])
    with pytest.raises(PermanentPeerError, match="links to 'list', not 'contact'"):
        associate(crm_client, request_id, "cesp_sendrequest_list", "contacts", contact)
    assert crm_client.get_send_request(request_id).targets == ()


def test_the_email_key_comes_from_the_lookup(crm_client, crm_seed, crm_org) -> None:
    email = crm_org.store.insert("cesp_emails", {"cesp_name": "Spring news", "cesp_customerkey": "spring-news"})
    blank = crm_org.store.insert("cesp_emails", {"cesp_name": "Half made"})
    picked = crm_seed.send_request([], cesp_emailkey="typed-key", cesp_emailid=("cesp_email", email))
    typed = crm_seed.send_request([], cesp_emailkey="typed-key")
    keyless = crm_seed.send_request([], cesp_emailid=("cesp_email", blank))
    by_id = {r.id: r for r in crm_client.pending_send_requests()}
    assert (by_id[picked].email_key, by_id[picked].email_name) == ("spring-news", "Spring news")
    assert by_id[typed].email_key == "typed-key" and by_id[typed].email_name == ""
    assert by_id[keyless].email_key == "" and "'Half made'" in by_id[keyless].email_problem
    claimed = crm_client.claim_send_request(by_id[picked])
    assert claimed.email_key == "spring-news"


def test_the_sandbox_refuses_a_status_reason_it_does_not_have(crm_client, crm_seed) -> None:
    request_id = crm_seed.send_request([])
    with pytest.raises(PermanentPeerError, match="outside the valid range"):
        crm_client.http.request("PATCH", f"cesp_sendrequests({request_id})", Call("update", "test"),
                                json_body={"cesp_status": 100000042}).close()


def test_crm_setup_adds_the_missing_status_reasons_to_an_older_org(tmp_path, crm_ca) -> None:
    from connector.crm.dataverse import DataverseCrmClient
    from connector.sandbox.dataverse import KeyActivation, start_crm_sandbox
    from tests.fixtures.crm import crm_config

    sandbox = start_crm_sandbox(tmp_path / "crm", crm_ca, seed=1, contacts=0, customizations=False,
                                key_activation=KeyActivation(pending_seconds=0, build_seconds=0))
    try:
        status = sandbox.store.schema.entities  # an org set up before issue 20: five status values
        client = DataverseCrmClient.from_config(crm_config(sandbox, crm_ca.ca_file))
        try:
            planned = CrmSetup(client.http).run(dry_run=True).planned  # --dry-run: what it would create
            assert [p for p in planned if p.startswith("relationship ")] == [
                f"relationship cesp_sendrequest_{t}" for t in ("list", "contact", "lead", "account")]
            assert "table cesp_email" in planned and "key cesp_email.cesp_email_customerkey_key" in planned
            CrmSetup(client.http).run()
            options = status["cesp_sendrequest"].attributes["cesp_status"].options
            for value in list(options)[5:]:
                del options[value]
            plan = CrmSetup(client.http).run(dry_run=True)
            assert plan.planned == [f"option cesp_sendrequest.cesp_status={v} ({text})" for v, text in
                                    ((100000005, "Draft"), (100000006, "Preview requested"), (100000007, "Previewed"),
                                     (100000008, "Importing"), (100000009, "Scheduled"))]
            done = CrmSetup(client.http).run()
            assert len(done.created) == 5
            assert options[100000006] == "Preview requested"
            assert CrmSetup(client.http).run(dry_run=True).planned == []
        finally:
            client.close()
    finally:
        sandbox.stop()
