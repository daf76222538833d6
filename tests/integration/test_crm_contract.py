"""Contract suite of the ``CrmClient`` interface.

Tests taking ``peer`` run twice: ``sandbox`` is the real DataverseCrmClient against the Dataverse
sandbox over HTTPS with verification; ``double`` is ``tests.doubles.crm.FakeCrm``, the unit
tests' stand-in (the sandbox's data store in process, no Web API). Both are seeded by the same
``CrmSeeder`` and checked through the interface (and the stored rows), so the double is held to
what the real adapter does and refuses. The other tests are the adapter's own (paging, URL
caps, FetchXML paging cookies, 429 storms, dropped connections, tokens, TLS, crm-setup) and
run against the sandbox only.
"""

from __future__ import annotations

import re

from datetime import datetime, timezone

import pytest

from connector.crm.dataverse import DataverseCrmClient
from connector.crm.setup import CrmSetup, customizations
from connector.errors import AuthError, DeltaTokenExpired, NotFoundError, PermanentPeerError, TransientPeerError
from connector.models import (
    BounceType,
    BounceUpdate,
    CampaignResponse,
    CrmTable,
    RecordRef,
    SendRequest,
    SendRequestUpdate,
    SendStatus,
    SendTarget,
    TargetKind,
)
from tests.fixtures.crm import CrmSeeder, crm_config

ATTRS = {CrmTable.CONTACT: ["firstname", "lastname"], CrmTable.LEAD: ["companyname"],
         CrmTable.ACCOUNT: ["name"]}


def _recipients(client, kind, target_id, attrs=ATTRS):
    return list(client.iter_recipients(SendTarget(kind, target_id), attrs))


class CrmPeer:
    def __init__(self, client, seed: CrmSeeder, expire_delta_links) -> None:  # noqa: ANN001 - a CrmClient
        self.client = client
        self.seed = seed
        self.expire_delta_links = expire_delta_links  # every change-tracking link given so far expires


@pytest.fixture(params=["sandbox", "double"])
def peer(request):  # noqa: ANN201
    if request.param == "double":
        from tests.doubles.crm import FakeCrm

        fake = FakeCrm(page_size=3)  # as crm_config's page size: several pages from a few records
        yield CrmPeer(fake, CrmSeeder(fake.store), fake.expire_delta_links)
        return
    org = request.getfixturevalue("crm_org")
    yield CrmPeer(request.getfixturevalue("crm_client"), request.getfixturevalue("crm_seed"), org.expire_delta_tokens)


# -- crm-setup -----------------------------------------------------------------------


def test_crm_setup_created_everything_then_nothing(crm_org, crm_client) -> None:
    spec = customizations()
    created = (len(spec.tables) + len(spec.columns) + len(spec.keys) + len(spec.relationships) + len(spec.forms)
               + len(spec.views))
    assert len(crm_org.setup_report.created) == created
    again = CrmSetup(crm_client.http).run()
    assert again.created == []
    options = len([c for c in spec.columns if c.kind == "Picklist"][0].options)  # present, each named
    assert len(again.present) == created + len(crm_org.setup_report.changed) + options
    assert crm_org.setup_report.changed == [f"change tracking {t}" for t in spec.tracked]
    assert again.keys == {"campaignresponse.cesp_trackingkey_key": "Active",
                          "cesp_email.cesp_email_customerkey_key": "Active"}


# -- send requests -------------------------------------------------------------------


def test_send_request_claim_update_and_lost_claim(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    list_id = crm_seed.static_list("contact", [crm_seed.contact(emailaddress1="a@example.com")])
    first = crm_seed.send_request([{"kind": "list", "id": list_id}], cesp_name="First")
    pending = crm_client.pending_send_requests(limit=10)
    assert [r.id for r in pending] == [first]
    request = pending[0]
    assert request.status is SendStatus.PENDING and request.etag
    assert request.targets == (SendTarget(TargetKind.LIST, list_id),)
    claimed = crm_client.claim_send_request(request)
    assert claimed is not None and claimed.status is SendStatus.PROCESSING
    assert crm_client.claim_send_request(request) is None  # stale etag: someone else has it
    assert crm_client.pending_send_requests() == []
    crm_client.update_send_request(first, SendRequestUpdate(
        status=SendStatus.SENT, esp_job_id="4711", resolved=3, handed_over=2, skipped=1,
        skipped_by_reason={"no_email": 1}, released_on=datetime(2026, 11, 1, tzinfo=timezone.utc),
        counts={"sent": 2, "opens": 1, "hard_bounces": 1}))
    stored = crm_client.get_send_request(first)
    assert stored.status is SendStatus.SENT and stored.esp_job_id == "4711"
    row = crm_seed.store.get("cesp_sendrequests", first)
    assert row["cesp_handedover"] == 2 and row["cesp_opencount"] == 1 and row["cesp_hardbouncecount"] == 1
    assert crm_client.get_send_request("00000000-0000-0000-0000-000000000001") is None


# -- recipients ----------------------------------------------------------------------


def test_static_list_pages_over_several_pages(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    ids = [crm_seed.contact(emailaddress1=f"p{i}@example.com", firstname=f"P{i}") for i in range(11)]
    list_id = crm_seed.static_list("contact", ids)
    got = _recipients(crm_client, TargetKind.LIST, list_id)
    assert sorted(r.ref.id for r in got) == sorted(ids)  # page size 3: four pages
    assert all(r.ref.table is CrmTable.CONTACT and r.attributes["firstname"].startswith("P") for r in got)


def test_lead_and_account_lists_and_single_records(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    leads = [crm_seed.lead(emailaddress1=f"l{i}@example.com", companyname="Firma") for i in range(4)]
    accounts = [crm_seed.account(emailaddress1=f"a{i}@example.com") for i in range(2)]
    assert {r.ref.id for r in _recipients(crm_client, TargetKind.LIST, crm_seed.static_list("lead", leads))} == set(leads)
    got = _recipients(crm_client, TargetKind.LIST, crm_seed.static_list("account", accounts))
    assert {r.ref.table for r in got} == {CrmTable.ACCOUNT}
    single = _recipients(crm_client, TargetKind.LEAD, leads[0])
    assert single[0].attributes["companyname"] == "Firma" and single[0].email == "l0@example.com"
    with pytest.raises(NotFoundError, match="contact"):
        _recipients(crm_client, TargetKind.CONTACT, "00000000-0000-0000-0000-000000000002")


def test_single_record_targets_are_read_in_sets_in_target_order(peer, monkeypatch) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    import connector.crm.recipients as recipients

    monkeypatch.setattr(recipients, "RECORD_SET_MAX", 4)  # several sets per table from few records
    contacts = [crm_seed.contact(emailaddress1=f"c{i}@example.com", firstname=f"C{i}") for i in range(9)]
    leads = [crm_seed.lead(emailaddress1=f"l{i}@example.com", companyname="Firma") for i in range(2)]
    targets = [SendTarget(TargetKind.CONTACT, c) for c in contacts[:5]] + [SendTarget(TargetKind.LEAD, leads[0])]
    targets += [SendTarget(TargetKind.CONTACT, c.upper()) for c in contacts[5:]] + [
        SendTarget(TargetKind.LEAD, leads[1]), SendTarget(TargetKind.CONTACT, contacts[0])]
    got = list(crm_client.iter_record_targets(targets, ATTRS))
    assert [r.ref.id for r in got] == [t.id.lower() for t in targets]  # a repeated target comes twice
    assert got[1].attributes["firstname"] == "C1" and got[5].attributes["companyname"] == "Firma"
    assert got[0].source == targets[0]
    gone = [SendTarget(TargetKind.CONTACT, f"00000000-0000-0000-0000-0000000000{i:02d}") for i in range(12)]
    assert crm_client.missing_records(targets + gone[:2] + [SendTarget(TargetKind.LEAD, contacts[1])]) == [
        *gone[:2], SendTarget(TargetKind.LEAD, contacts[1])]  # a contact's id is no lead
    with pytest.raises(NotFoundError, match=r"12 record\(s\) that do not exist.*and 2 more"):
        list(crm_client.iter_record_targets(targets + gone, ATTRS))


def test_a_set_is_cut_to_stay_within_the_url_cap(crm_client, crm_seed, monkeypatch) -> None:
    from urllib.parse import urlencode

    import connector.crm.recipients as recipients
    from connector.crm.odata import ODataHttp

    monkeypatch.setattr(recipients, "MAX_URL_CHARS", 3_500)  # room for about 20 GUIDs (less the margin)
    lengths: list[int] = []
    real = ODataHttp.request

    def counted(self, method, path, call, *, params=None, **kw):
        lengths.append(len(self.url(path)) + 1 + len(urlencode(params or {})))
        return real(self, method, path, call, params=params, **kw)

    monkeypatch.setattr(ODataHttp, "request", counted)
    contacts = [crm_seed.contact(emailaddress1=f"u{i}@example.com") for i in range(60)]
    got = list(crm_client.iter_record_targets([SendTarget(TargetKind.CONTACT, c) for c in contacts], ATTRS))
    assert [r.ref.id for r in got] == contacts
    assert len(lengths) < len(contacts) and max(lengths) <= 3_500 - recipients.URL_MARGIN


def test_label_attributes_come_as_formatted_values_only_when_asked(peer) -> None:
    """A ``label`` mapping line's annotation (issue 20.5): the option's label and the lookup's record name."""
    from connector.mapping import FORMATTED

    account = peer.seed.account(name="Acme Corporation")
    contact = peer.seed.contact(emailaddress1="f@example.com", gendercode=2, parentcustomerid=("account", account))
    dynamic = peer.seed.dynamic_list("contact", "<fetch><entity name='contact'><attribute name='fullname'/><filter>"
                                     "<condition attribute='emailaddress1' operator='eq' value='f@example.com'/>"
                                     "</filter></entity></fetch>")
    attrs = {CrmTable.CONTACT: ["gendercode", f"gendercode@{FORMATTED}", "_parentcustomerid_value",
                                f"_parentcustomerid_value@{FORMATTED}"]}
    for kind, target in ((TargetKind.CONTACT, contact), (TargetKind.LIST, peer.seed.static_list("contact", [contact])),
                         (TargetKind.LIST, dynamic)):
        (recipient,) = _recipients(peer.client, kind, target, attrs)
        assert recipient.attributes == {"gendercode": 2, f"gendercode@{FORMATTED}": "Female",
                                        "_parentcustomerid_value": account,
                                        f"_parentcustomerid_value@{FORMATTED}": "Acme Corporation"}, kind
        (plain,) = _recipients(peer.client, kind, target, {CrmTable.CONTACT: ["gendercode"]})
        assert plain.attributes == {"gendercode": 2}


def test_dynamic_list_runs_fetchxml_with_paging_cookies(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    oslo = [crm_seed.contact(emailaddress1=f"o{i}@example.com", address1_city="Oslo") for i in range(7)]
    for i in range(3):
        crm_seed.contact(emailaddress1=f"b{i}@example.com", address1_city="Bergen")
    query = ("<fetch version='1.0' output-format='xml-platform' mapping='logical' distinct='false'>"
             "<entity name='contact'><attribute name='fullname'/>"
             "<filter type='and'><condition attribute='address1_city' operator='eq' value='Oslo'/></filter>"
             "</entity></fetch>")
    list_id = crm_seed.dynamic_list("contact", query)
    got = _recipients(crm_client, TargetKind.LIST, list_id)
    assert sorted(r.ref.id for r in got) == sorted(oslo)
    assert all(r.email and r.email.startswith("o") for r in got)
    wrong = crm_seed.dynamic_list("contact", query.replace("'contact'", "'lead'"))
    with pytest.raises(PermanentPeerError, match="lead"):  # a query over another table than the list's
        _recipients(crm_client, TargetKind.LIST, wrong)


def test_campaign_resolves_its_lists(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    c1 = [crm_seed.contact(emailaddress1=f"c{i}@example.com") for i in range(2)]
    l1 = [crm_seed.lead(emailaddress1="lead@example.com")]
    campaign = crm_seed.campaign([crm_seed.static_list("contact", c1), crm_seed.static_list("lead", l1)])
    got = _recipients(crm_client, TargetKind.CAMPAIGN, campaign)
    assert {(r.ref.table, r.ref.id) for r in got} == {(CrmTable.CONTACT, i) for i in c1} | {(CrmTable.LEAD, l1[0])}


def test_bad_data_comes_through_unfiltered(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    long_name = "Ø" * 50
    ids = [
        crm_seed.contact(emailaddress1=None, firstname="NoMail"),
        crm_seed.contact(emailaddress1="not-an-address", firstname="Bad"),
        crm_seed.contact(emailaddress1="x" * 90 + "@ex.com", firstname=long_name),
        crm_seed.contact(emailaddress1="zoë@exämple.com", firstname="Zoë", lastname="Çelik-Ñúñez 山田"),
        crm_seed.contact(emailaddress1="dnb@example.com", donotbulkemail=True, donotemail=True),
    ]
    got = {r.ref.id: r for r in _recipients(crm_client, TargetKind.LIST, crm_seed.static_list("contact", ids))}
    assert got[ids[0]].email is None
    assert got[ids[1]].email == "not-an-address"
    assert got[ids[2]].attributes["firstname"] == long_name
    assert got[ids[3]].attributes["lastname"] == "Çelik-Ñúñez 山田"
    assert got[ids[4]].do_not_bulk_email and got[ids[4]].do_not_email


# -- lookups and writes ---------------------------------------------------------------


def test_find_records_across_tables(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    contact, lead, account = crm_seed.contact(), crm_seed.lead(lastname="L"), crm_seed.account()
    missing = "00000000-0000-0000-0000-0000000000ff"
    found = crm_client.find_records([contact, lead.upper(), account, missing, "someone@example.com"])
    assert found[contact] == RecordRef(CrmTable.CONTACT, contact)
    assert found[lead.upper()].table is CrmTable.LEAD
    assert found[account].table is CrmTable.ACCOUNT
    assert missing not in found and "someone@example.com" not in found


def test_campaign_responses_idempotent_with_partial_failure(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    campaign = crm_seed.campaign([])
    people = [crm_seed.contact(emailaddress1=f"r{i}@example.com") for i in range(5)]
    when = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)

    def response(i: int, campaign_id: str = campaign, closed: bool = False) -> CampaignResponse:
        return CampaignResponse(tracking_key=f"77.open.{people[i]}", campaign_id=campaign_id,
                                customer=RecordRef(CrmTable.CONTACT, people[i]), subject="Opened: Nov",
                                received_on=when, email=f"r{i}@example.com", closed=closed)

    bad = response(2, campaign_id="00000000-0000-0000-0000-0000000000aa")
    results = crm_client.create_campaign_responses([response(0), response(1, closed=True), bad, response(3),
                                                    response(4)])
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert results[2].key == bad.tracking_key and results[2].message
    again = crm_client.create_campaign_responses([response(0), response(1), response(2)])
    assert all(r.ok for r in again)
    keys = [row.get("cesp_trackingkey") for row in crm_seed.store.rows("campaignresponses")]
    assert sorted(keys) == sorted(response(i).tracking_key for i in range(5))
    # a key Dataverse cannot address a record by is refused before any request, with a reason
    unsafe = CampaignResponse(**{**response(0).__dict__, "tracking_key": f"77:{people[0]}:open"})
    mixed = crm_client.create_campaign_responses([unsafe, response(4)])
    assert [r.ok for r in mixed] == [False, True] and mixed[0].code == "unaddressable_key"
    assert crm_seed.store.count("campaignresponses") == 5


def test_bounces_and_opt_outs(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    contact, lead, account = crm_seed.contact(), crm_seed.lead(lastname="L"), crm_seed.account()
    gone = "00000000-0000-0000-0000-0000000000bb"
    when = datetime(2026, 11, 3, 8, 30, tzinfo=timezone.utc)
    results = crm_client.set_bounces([
        BounceUpdate(RecordRef(CrmTable.CONTACT, contact), when, BounceType.HARD, "4711"),
        BounceUpdate(RecordRef(CrmTable.LEAD, lead), when, BounceType.SOFT, "4711"),
        BounceUpdate(RecordRef(CrmTable.ACCOUNT, account), when, BounceType.SOFT, "4711"),
        BounceUpdate(RecordRef(CrmTable.CONTACT, gone), when, BounceType.SOFT, "4711"),
    ])
    assert [r.ok for r in results] == [True, True, False, False]
    assert results[2].code == "unsupported_table" and results[3].code == "not_found"
    row = crm_seed.store.get("contacts", contact)
    assert row["cesp_lastbounceon"] == "2026-11-03T08:30:00Z"
    assert row["cesp_lastbouncetype"] == "hard" and row["cesp_lastbouncejob"] == "4711"
    assert not row.get("donotbulkemail")
    assert crm_seed.store.get("contacts", gone) is None  # If-Match: * never creates
    results = crm_client.set_opt_outs([RecordRef(CrmTable.CONTACT, contact), RecordRef(CrmTable.LEAD, lead)])
    assert all(r.ok for r in results)
    assert crm_seed.store.get("leads", lead)["donotbulkemail"] is True


# -- change tracking -------------------------------------------------------------------


def test_change_tracking_with_deletions(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    ids = [crm_seed.contact(emailaddress1=f"t{i}@example.com") for i in range(5)]
    pages = list(crm_client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], None))
    assert len(pages) >= 2 and pages[-1][2]
    assert sorted(r["contactid"] for rows, _, _ in pages for r in rows) == sorted(ids)
    delta = pages[-1][2]
    crm_seed.store.patch("contacts", ids[0], {"emailaddress1": "changed@example.com"})
    crm_seed.store.remove("contacts", ids[1])
    pages = list(crm_client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], delta))
    changed = [r for rows, _, _ in pages for r in rows]
    deleted = [d for _, dels, _ in pages for d in dels]
    assert [r["emailaddress1"] for r in changed] == ["changed@example.com"]
    assert deleted == [ids[1]]
    assert pages[-1][2] and pages[-1][2] != delta


def test_delta_pages_carry_updates_deactivations_then_deletes_and_the_link_only_at_the_end(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    cols = ["emailaddress1", "statecode", "modifiedon"]
    ids = [crm_seed.contact(emailaddress1=f"d{i}@example.com") for i in range(8)]
    delta = list(crm_client.iter_changes(CrmTable.CONTACT, cols, None))[-1][2]
    for i in range(4):
        crm_seed.store.patch("contacts", ids[i], {"emailaddress1": f"new{i}@example.com"})
    crm_seed.store.patch("contacts", ids[4], {"statecode": 1, "statuscode": 2})  # deactivated
    crm_seed.store.remove("contacts", ids[5])
    crm_seed.store.remove("contacts", ids[6])
    pages = crm_client.iter_changes(CrmTable.CONTACT, cols, delta)
    first = next(pages)
    crm_seed.store.patch("contacts", ids[7], {"emailaddress1": "during@example.com"})  # while paging
    rest = list(pages)
    got = [first, *rest]
    assert len(got) >= 2 and all(link is None for _, _, link in got[:-1]) and got[-1][2]
    changed = {r["contactid"]: r for rows, _, _ in got for r in rows}
    assert sorted(changed) == sorted(ids[:5])
    assert changed[ids[4]]["statecode"] == 1 and changed[ids[0]]["emailaddress1"] == "new0@example.com"
    assert all(r.get("modifiedon") for r in changed.values())
    assert sorted(d for _, dels, _ in got for d in dels) == sorted(ids[5:7])
    # the change made while the delta was paged is not lost: it comes with the next link
    after = list(crm_client.iter_changes(CrmTable.CONTACT, cols, got[-1][2]))
    assert [r["emailaddress1"] for rows, _, _ in after for r in rows] == ["during@example.com"]


def test_an_invalid_delta_token_asks_for_full_resync_too(crm_client, crm_org) -> None:
    link = crm_client.http.api_url + "contacts?$select=emailaddress1&$deltatoken=garbled"
    with pytest.raises(DeltaTokenExpired, match="full resync"):
        list(crm_client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], link))


def test_a_link_the_crm_gave_is_refused_once_garbled_or_expired(peer) -> None:
    client, seed = peer.client, peer.seed
    seed.contact(emailaddress1="g@example.com")
    link = list(client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], None))[-1][2]
    with pytest.raises(DeltaTokenExpired, match="full resync"):
        list(client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], link.replace("$deltatoken=", "$deltatoken=x")))
    peer.expire_delta_links()
    with pytest.raises(DeltaTokenExpired) as info:
        list(client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], link))
    assert info.value.code == "delta_expired" and getattr(info.value, "status") == 400


def test_expired_delta_link_asks_for_full_resync(crm_client, crm_org) -> None:
    link = crm_client.http.api_url + "contacts?$select=emailaddress1&$deltatoken=1!01/01/2001 00:00:00"
    with pytest.raises(DeltaTokenExpired) as info:
        list(crm_client.iter_changes(CrmTable.CONTACT, ["emailaddress1"], link))
    assert isinstance(info.value, PermanentPeerError) and info.value.code == "delta_expired"
    assert getattr(info.value, "status") in (400, 410, 412)


# -- faults ----------------------------------------------------------------------------


def test_429_storm_waits_as_told_and_finishes(crm_client, crm_seed, crm_org, crm_sleeps) -> None:
    ids = [crm_seed.contact(emailaddress1=f"s{i}@example.com") for i in range(7)]
    list_id = crm_seed.static_list("contact", ids)
    crm_org.faults.set("throttle", next_n=6, seconds=2)
    got = _recipients(crm_client, TargetKind.LIST, list_id)
    assert len(got) == 7
    assert crm_sleeps.count(2.0) == 6


def test_dropped_connections_and_503_on_reads_are_retried(crm_client, crm_seed, crm_org) -> None:
    ids = [crm_seed.contact(emailaddress1=f"d{i}@example.com") for i in range(7)]
    list_id = crm_seed.static_list("contact", ids)
    crm_org.faults.set("drop", next_n=2)
    assert len(_recipients(crm_client, TargetKind.LIST, list_id)) == 7
    crm_org.faults.set("http503", next_n=2)
    assert len(_recipients(crm_client, TargetKind.LIST, list_id)) == 7


def test_dropped_connection_on_create_is_not_repeated(crm_client, crm_org) -> None:
    from connector.crm.odata import Call

    before = crm_org.store.count("campaigns")
    crm_org.faults.set("drop", next_n=1)
    with pytest.raises(TransientPeerError, match="connection lost"):
        crm_client.http.request("POST", "campaigns", Call("create", "campaign"), json_body={"name": "once"})
    assert crm_org.store.count("campaigns") - before <= 1


def test_token_expiry_mid_run_is_renewed(crm_client, crm_seed, crm_org) -> None:
    ids = [crm_seed.contact(emailaddress1=f"e{i}@example.com") for i in range(7)]
    list_id = crm_seed.static_list("contact", ids)
    stream = crm_client.iter_recipients(SendTarget(TargetKind.LIST, list_id), ATTRS)
    first = [next(stream) for _ in range(3)]
    crm_org.expire_tokens()  # every token issued so far is now expired at the server
    rest = list(stream)
    assert len(first) + len(rest) == 7


def test_wrong_ca_names_host_and_option(crm_org, tmp_path) -> None:
    from connector.sandbox.tls import SandboxCA

    other = SandboxCA(tmp_path / "other-ca")
    client = DataverseCrmClient.from_config(crm_config(crm_org, other.ca_file))
    try:
        with pytest.raises(AuthError) as info:
            client.pending_send_requests()
    finally:
        client.close()
    text = str(info.value)
    assert "127.0.0.1" in text and "[crm] ca_bundle" in text


def test_wrong_client_secret_is_an_auth_error(crm_org, crm_ca) -> None:
    client = DataverseCrmClient.from_config(crm_config(crm_org, crm_ca.ca_file, client_secret="wrong"))
    try:
        with pytest.raises(AuthError, match="client_id|secret"):
            client.pending_send_requests()
    finally:
        client.close()


# -- roles, bare organization, the crm-setup command ----------------------------------------


def test_user_role_names(peer) -> None:
    crm_client, crm_seed = peer.client, peer.seed
    store = crm_seed.store
    user = store.insert("systemusers", {"firstname": "Mia", "lastname": "Marketer"})
    plain = store.insert("systemusers", {"firstname": "Sam", "lastname": "Sales"})
    for name in ("Marketing Manager", "Salesperson"):
        store.associate("systemuserroles_association", user, store.insert("roles", {"name": name}))
    assert crm_client.user_role_names(user) == {"Marketing Manager", "Salesperson"}
    assert crm_client.user_role_names(plain) == set()


# -- what the CRM refuses ---------------------------------------------------------------------


def test_an_id_that_is_no_guid_is_a_bad_request(peer) -> None:
    client = peer.client
    for call in (lambda: client.get_send_request("R1"), lambda: client.user_role_names("u1"),
                 lambda: client.update_send_request("R1", SendRequestUpdate(status=SendStatus.FAILED)),
                 lambda: client.claim_send_request(SendRequest("R1", "n", SendStatus.PENDING, "u", (), etag="1")),
                 lambda: _recipients(client, TargetKind.LIST, "L1"), lambda: _recipients(client, TargetKind.CONTACT, "c1")):
        with pytest.raises(PermanentPeerError, match="query syntax") as info:
            call()
        assert not isinstance(info.value, NotFoundError)
    assert client.missing_records([SendTarget(TargetKind.CONTACT, "c1")]) == [SendTarget(TargetKind.CONTACT, "c1")]
    assert client.find_records(["c1"]) == {}
    when = datetime(2026, 11, 3, tzinfo=timezone.utc)
    bounce = client.set_bounces([BounceUpdate(RecordRef(CrmTable.CONTACT, "c1"), when, BounceType.HARD, "1")])
    assert [(r.ok, r.code) for r in bounce] == [(False, "400")]
    assert [(r.ok, r.code) for r in client.set_opt_outs([RecordRef(CrmTable.LEAD, "l1")])] == [(False, "400")]


def test_what_is_not_there_is_not_found(peer) -> None:
    client, seed = peer.client, peer.seed
    gone = "00000000-0000-0000-0000-0000000000cc"
    assert client.get_send_request(gone) is None
    assert client.claim_send_request(SendRequest(gone, "n", SendStatus.PENDING, "u", (), etag='W/"1"')) is None
    with pytest.raises(NotFoundError):
        client.update_send_request(gone, SendRequestUpdate(status=SendStatus.FAILED, reason="x"))
    client.update_send_request(gone, SendRequestUpdate())  # nothing to write: nothing is asked
    with pytest.raises(NotFoundError):
        client.user_role_names(gone)
    for kind, what in ((TargetKind.LIST, "marketing list"), (TargetKind.CAMPAIGN, "campaign")):
        with pytest.raises(NotFoundError, match=f"{what} {gone} named in the send request does not exist"):
            _recipients(client, kind, gone)
    person, campaign = seed.contact(), seed.campaign([])
    when = datetime(2026, 11, 2, tzinfo=timezone.utc)

    def response(key: str, campaign_id: str, customer: RecordRef) -> CampaignResponse:
        return CampaignResponse(tracking_key=key, campaign_id=campaign_id, customer=customer, subject="s",
                                received_on=when)

    results = client.create_campaign_responses([
        response("77.open.a", gone, RecordRef(CrmTable.CONTACT, person)),
        response("77.open.b", campaign, RecordRef(CrmTable.CONTACT, gone)),
        response("77.open.c", campaign, RecordRef(CrmTable.ACCOUNT, seed.account())),  # an account may respond
    ])
    assert [(r.ok, r.code) for r in results] == [(False, "not_found"), (False, "not_found"), (True, "")]
    opt = client.set_opt_outs([RecordRef(CrmTable.CONTACT, gone), RecordRef(CrmTable.ACCOUNT, seed.account())])
    assert [(r.ok, r.code) for r in opt] == [(False, "not_found"), (True, "")]


def test_a_column_the_table_does_not_have_fails_the_read(peer) -> None:
    client, seed = peer.client, peer.seed
    person = seed.contact(emailaddress1="col@example.com")
    assert {"firstname", "emailaddress1", "cesp_lastbounceon"} <= client.column_names(CrmTable.CONTACT)
    assert "nosuchcol" not in client.column_names(CrmTable.CONTACT)
    odd = {CrmTable.CONTACT: ["nosuchcol"]}
    with pytest.raises(PermanentPeerError, match="nosuchcol"):
        _recipients(client, TargetKind.CONTACT, person, odd)
    with pytest.raises(PermanentPeerError, match="nosuchcol"):
        _recipients(client, TargetKind.LIST, seed.static_list("contact", [person]), odd)


def test_a_claim_moves_the_etag_and_an_update_too(peer) -> None:
    client, seed = peer.client, peer.seed
    request_id = seed.send_request([{"kind": "contact", "id": seed.contact()}])
    pending = client.get_send_request(request_id)
    claimed = client.claim_send_request(pending)
    assert claimed is not None and claimed.etag != pending.etag
    client.update_send_request(request_id, SendRequestUpdate(status=SendStatus.PENDING))  # an admin's retry
    again = client.get_send_request(request_id)
    assert again.status is SendStatus.PENDING and again.etag != claimed.etag
    assert client.claim_send_request(claimed) is None  # the etag of before the update
    assert client.claim_send_request(again).status is SendStatus.PROCESSING


def test_importing_is_written_under_the_etag_and_never_over_a_cancel(peer) -> None:
    client, seed = peer.client, peer.seed
    request_id = seed.send_request([{"kind": "contact", "id": seed.contact()}])
    claimed = client.claim_send_request(client.get_send_request(request_id))
    client.update_send_request(request_id, SendRequestUpdate(resolved=1))  # moves the etag
    assert client.set_status_if_match(claimed, SendStatus.IMPORTING) is False  # 412: the etag of before
    assert client.get_send_request(request_id).status is SendStatus.PROCESSING
    assert client.mark_importing(claimed) is True  # read back: still Processing, written with the new etag
    now = client.get_send_request(request_id)
    assert now.status is SendStatus.IMPORTING and client.mark_importing(now) is True  # again: harmless
    other = seed.send_request([{"kind": "contact", "id": seed.contact()}])
    taken = client.claim_send_request(client.get_send_request(other))
    client.update_send_request(other, SendRequestUpdate(status=SendStatus.CANCELLED))  # a CRM user cancels
    assert client.mark_importing(taken) is False
    assert client.get_send_request(other).status is SendStatus.CANCELLED


def test_inactive_and_opted_out_records_come_through_flagged(peer) -> None:
    client, seed = peer.client, peer.seed
    ids = [seed.contact(emailaddress1="on@example.com"), seed.contact(emailaddress1="off@example.com", statecode=1),
           seed.contact(emailaddress1="no@example.com", donotbulkemail=True)]
    got = {r.ref.id: r for r in _recipients(client, TargetKind.LIST, seed.static_list("contact", ids))}
    assert [(got[i].active, got[i].do_not_bulk_email) for i in ids] == [(True, False), (False, False), (True, True)]
    assert client.tracking_key_status() == ("Active", "campaignresponse.cesp_trackingkey_key")


def test_targets_that_cannot_be_read_are_named_on_the_request(peer) -> None:
    client, seed = peer.client, peer.seed
    person = seed.contact()
    request_id = seed.send_request([{"kind": "list", "id": "L1"}, {"kind": "nonsense", "id": person},
                                    {"kind": "contact", "id": person.upper()}])
    request = client.get_send_request(request_id)
    assert request.targets == (SendTarget(TargetKind.CONTACT, person),)
    assert len(request.invalid_targets) == 2 and "not a GUID" in request.invalid_targets[0]
    assert "unknown kind" in request.invalid_targets[1]


def test_bare_org_error_points_at_crm_setup(tmp_path, crm_ca) -> None:
    from connector.sandbox.dataverse import start_crm_sandbox

    with start_crm_sandbox(tmp_path / "bare", crm_ca, customizations=False) as bare:
        client = DataverseCrmClient.from_config(crm_config(bare, crm_ca.ca_file))
        try:
            with pytest.raises(PermanentPeerError, match="crm-setup"):
                client.pending_send_requests()
        finally:
            client.close()


def test_crm_setup_command_dry_run_then_apply(tmp_path, crm_ca, monkeypatch, capsys) -> None:
    from connector.cli import main
    from connector.sandbox.dataverse import start_crm_sandbox

    from connector.sandbox.dataverse import KeyActivation

    with start_crm_sandbox(tmp_path / "org", crm_ca, customizations=False,
                           key_activation=KeyActivation(pending_seconds=1, build_seconds=2)) as org:
        ini = tmp_path / "service.ini"
        ini.write_text(
            f"[logging]\nfolder = {tmp_path / 'log'}\nconsole = off\n\n"
            f"[crm]\nurl = {org.url}\nauthority = {org.authority}\nclient_id = {org.client_id}\n"
            f"ca_bundle = {crm_ca.ca_file}\n", encoding="utf-8")
        monkeypatch.setenv("CONNECTOR_CRM_CLIENT_SECRET", org.client_secret)
        assert main(["crm-setup", "-c", str(ini), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "missing  table cesp_sendrequest" in out and "would create" in out
        assert f"as user {org.app_user_id}" in out
        assert main(["crm-setup", "-c", str(ini)]) == 0
        out = capsys.readouterr().out
        assert "created  key campaignresponse.cesp_trackingkey_key" in out
        assert "changed  change tracking contact" in out
        # the key's index is built in the background: crm-setup waits for it, showing progress
        assert "key      campaignresponse.cesp_trackingkey_key: Pending" in out
        assert re.search(r"key      campaignresponse.cesp_trackingkey_key: Active \(after \d+ s\)", out)
        assert main(["crm-setup", "-c", str(ini)]) == 0
        out = capsys.readouterr().out
        assert "created 0" in out and org.client_secret not in out


def test_claim_whose_reply_was_lost_is_read_back(crm_client, crm_seed, crm_org) -> None:
    request_id = crm_seed.send_request([{"kind": "contact", "id": crm_seed.contact()}])
    request = crm_client.get_send_request(request_id)
    crm_client.pending_send_requests()  # token in hand: the drop hits the claim itself
    crm_org.faults.set("drop", next_n=1)
    claimed = crm_client.claim_send_request(request)
    assert claimed is not None and claimed.status is SendStatus.PROCESSING
    assert crm_client.claim_send_request(request) is None


def test_msal_handshake_against_the_sandbox_authority(crm_org, crm_ca) -> None:
    from connector.crm.auth import MsalTokenProvider

    tokens = MsalTokenProvider(authority=crm_org.authority, client_id=crm_org.client_id,
                               client_secret=crm_org.client_secret, org_url=crm_org.url,
                               ca_bundle=crm_ca.ca_file)
    try:
        first = tokens.token()
        assert first and tokens.token() == first  # served from msal's cache
        tokens.invalidate()
        assert tokens.token()
    finally:
        tokens.close()
