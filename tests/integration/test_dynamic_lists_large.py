"""Large dynamic marketing lists against the Dataverse sandbox's FetchXML rules: a query ordered
on a link-entity attribute gets no paging cookie, paging by page numbers stops at 50,000 rows,
and a query with big criteria is longer than a GET URL may be (32,768 characters).

120,000 members, generated straight into the sandbox store (about a second); each read goes
over HTTPS in pages of 5,000.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import pytest

from connector.models import SendTarget, TargetKind

MEMBERS = 120_000
NAMES = 1_500
"""Distinct last names the list's criteria enumerate (one big ``in`` condition)."""


def _big_query() -> str:
    values = "".join(f"<value>Member-{i:05d}</value>" for i in range(NAMES))
    return ("<fetch version='1.0' output-format='xml-platform' mapping='logical' distinct='true'>"
            "<entity name='contact'><attribute name='fullname'/><order attribute='lastname'/>"
            f"<filter type='and'><condition attribute='lastname' operator='in'>{values}</condition>"
            "<condition attribute='statecode' operator='eq' value='0'/></filter>"
            "<link-entity name='account' from='accountid' to='parentcustomerid' link-type='outer'>"
            "<order attribute='name'/></link-entity>"
            "</entity></fetch>")


def _seed_members(store, n: int) -> set[str]:
    entity = store.schema.entity("contact")
    ids = [str(uuid.UUID(int=(i + 1) * 7_919)) for i in range(n)]
    store.bulk_insert(entity, ["contactid", "lastname", "emailaddress1", "statecode", "donotbulkemail",
                               "donotemail"],
                      ((cid, f"Member-{i % NAMES:05d}", f"m{i}@example.test", 0, 0, 0) for i, cid in enumerate(ids)))
    # some that the criteria leave out
    store.bulk_insert(entity, ["contactid", "lastname", "statecode"],
                      ((str(uuid.uuid4()), "Outsider", 0) for _ in range(50)))
    return set(ids)


@pytest.fixture
def big_list(crm_org, crm_seed):
    members = _seed_members(crm_org.store, MEMBERS)
    list_id = crm_seed.dynamic_list("contact", _big_query())
    return list_id, members


@pytest.mark.slow
@pytest.mark.parametrize("cookies", [True, False], ids=["paging-cookies", "no-cookie-from-the-service"])
def test_dynamic_list_of_120000_with_big_criteria_is_read_whole(crm_org, crm_client, big_list, cookies) -> None:
    list_id, members = big_list
    crm_org.records.fetch_cookies = cookies
    crm_client.reader.page_size = 5000  # the fixture's client pages by 3
    before = crm_org.app.requests
    assert len(urlencode({"fetchXml": _big_query()})) > 32_768  # longer than a GET URL may be
    seen: set[str] = set()
    count = 0
    for recipient in crm_client.iter_recipients(SendTarget(TargetKind.LIST, list_id), {}):
        seen.add(recipient.ref.id)
        count += 1
    assert count == MEMBERS and seen == members
    assert crm_org.app.requests - before <= MEMBERS // 5000 + 3  # 24 pages of 5,000 (+ the list itself)


def test_a_query_longer_than_a_batch_url_fails_naming_the_list(crm_client, crm_seed) -> None:
    from connector.errors import PermanentPeerError

    values = "".join(f"<value>Someone-{i:05d}</value>" for i in range(5_000))
    query = (f"<fetch><entity name='contact'><attribute name='fullname'/><filter><condition attribute='lastname'"
             f" operator='in'>{values}</condition></filter></entity></fetch>")
    list_id = crm_seed.dynamic_list("contact", query)
    with pytest.raises(PermanentPeerError) as err:
        list(crm_client.iter_recipients(SendTarget(TargetKind.LIST, list_id), {}))
    assert list_id in str(err.value) and "65,536" in str(err.value) and "Simplify the list's criteria" in str(err.value)
