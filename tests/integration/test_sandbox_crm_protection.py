"""Service protection of the Dataverse sandbox over HTTPS: the three limits with their
codes and messages, execution time charged per operation inside a ``$batch``, a block
that grows while the client keeps pushing, ``x-ms-dop-hint``, replies held for their
execution time. A fast sandbox clock (``time_scale``) lets the 5-minute window pass
within the test; nothing here asserts on timing."""

from __future__ import annotations

import threading
import uuid

import pytest

from connector.sandbox.dataverse import Costs, Limits, start_crm_sandbox
from tests.fixtures.sandbox import crm_session_for


@pytest.fixture
def org(tmp_path, sandbox_ca):
    made = []

    def start(**limits):
        crm = start_crm_sandbox(tmp_path / f"crm{len(made)}", sandbox_ca, customizations=True,
                                limits=Limits(**limits))
        crm.ca_file = sandbox_ca.ca_file
        made.append(crm)
        return crm, crm_session_for(crm)

    yield start
    for crm in made:
        crm.stop()


def _batch(api_path: str, n: int) -> tuple[str, bytes]:
    boundary = f"batch_{uuid.uuid4()}"
    lines = []
    for i in range(n):
        lines += [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", "",
                  f"POST {api_path}contacts HTTP/1.1", "Content-Type: application/json; type=entry", "",
                  f'{{"lastname": "B{i}"}}', ""]
    lines += [f"--{boundary}--", ""]
    return f'multipart/mixed; boundary="{boundary}"', "\r\n".join(lines).encode()


def test_every_operation_in_a_batch_adds_execution_time_until_the_limit(org) -> None:
    costs = Costs(write=1.0, batch=0.5, read=0.0, read_per_row=0.0)
    crm, s = org(execution_seconds=10, time_scale=1000, hold_replies=False, costs=costs)
    ctype, body = _batch("/api/data/v9.2/", 4)
    r = s.post(crm.api_url + "$batch", data=body, headers={"Content-Type": ctype})
    assert r.status_code == 200
    assert crm.protection.usage(crm.entra.app_object_id)["execution_seconds"] == pytest.approx(4.5)
    assert r.headers["x-ms-dop-hint"] == "8"
    assert float(r.headers["x-ms-ratelimit-time-remaining-xrm-requests"]) == pytest.approx(5500.0)
    ctype, body = _batch("/api/data/v9.2/", 6)
    assert s.post(crm.api_url + "$batch", data=body, headers={"Content-Type": ctype}).status_code == 200  # 10.5 s
    refused = s.get(crm.api_url + "contacts")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "0x80072321"
    assert error["message"].startswith("Combined execution time of incoming requests exceeded limit of 10,000"
                                       " milliseconds over time window of 300 seconds.")
    assert float(refused.headers["Retry-After"]) > 0


def test_request_count_block_grows_while_the_client_pushes_and_ends_after_retry_after(org) -> None:
    import time

    crm, s = org(requests=3, time_scale=100, penalty_seconds=50, hold_replies=False)
    assert [s.get(crm.api_url + "contacts").status_code for _ in range(3)] == [200, 200, 200]
    first = s.get(crm.api_url + "contacts")
    assert first.status_code == 429 and first.json()["error"]["code"] == "0x80072322"
    assert first.json()["error"]["message"] == ("Number of requests exceeded the limit of 3 over time window of"
                                                " 300 seconds.")

    def block_end() -> tuple[float, float]:
        """When the block ends on the wall clock, bracketed by the times before and after the call
        (a Retry-After is counted from the moment the server answered, somewhere in between)."""
        before = time.monotonic()
        retry = float(s.get(crm.api_url + "contacts").headers["Retry-After"])
        return before + retry, time.monotonic() + retry

    ends = [block_end() for _ in range(3)]
    # 50 sandbox seconds per refused request = 0.5 s of wall clock each at x100: two more refusals
    # push the end 1.0 s later, however slowly the machine answers
    assert ends[2][0] > ends[0][1] + 0.7
    assert crm.protection.rejected_twice >= 3  # the same GET, refused again and again
    time.sleep(max(0.0, ends[-1][1] - time.monotonic()) + 0.05)  # what a well-behaved client does
    assert s.get(crm.api_url + "contacts").status_code == 200


def test_more_than_the_concurrent_limit_is_refused_at_once(org) -> None:
    crm, s = org(concurrent=2, hold_replies=True, costs=Costs(read=0.4, read_per_row=0.0))
    codes: list[int] = []
    bodies: list[dict] = []

    def call() -> None:
        with crm_session_for(crm) as own:
            r = own.get(crm.api_url + "contacts")
            codes.append(r.status_code)
            if r.status_code == 429:
                bodies.append(r.json())

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 200, 429, 429]
    assert {b["error"]["code"] for b in bodies} == {"0x80072326"}
    assert bodies[0]["error"]["message"] == "Number of concurrent requests exceeded the limit of 2."


def test_window_slides_execution_time_frees_as_old_work_leaves(org) -> None:
    from connector.sandbox.dataverse.protection import ServiceProtection

    lim = Limits(execution_seconds=10, window_seconds=300, time_scale=1.0)
    prot = ServiceProtection(lim)
    clock = [1000.0]
    prot.now = lambda: clock[0]  # type: ignore[method-assign]
    for _ in range(3):
        assert prot.enter("u") is None
        prot.leave("u", 4.0)
        clock[0] += 60
    refused = prot.enter("u")  # 12 s in the window
    assert refused is not None and refused.status == 429
    # the first 4 s leave the window 300 s after they were charged (at 1000): 120 s from now
    assert dict(refused.headers)["Retry-After"] == "120"
    clock[0] = 1000 + 300.5
    assert prot.enter("u") is None


def test_refused_twice_blames_a_client_that_did_not_wait_not_a_new_block_after_retry_after() -> None:
    """Retry-After is "the duration before any new requests from the user can be processed"
    (api-limits.md): a request back before it, or while the block it was told of holds
    (lengthened by the user's pushing), is the client's fault; one that waited and met a new
    block (the window filled again by the user's other requests) is not."""
    from connector.sandbox.dataverse.protection import ServiceProtection

    prot = ServiceProtection(Limits(execution_seconds=10, window_seconds=300, penalty_seconds=2.0))
    clock = [1000.0]
    prot.now = lambda: clock[0]  # type: ignore[method-assign]
    assert prot.enter("u", "fill") is None
    prot.leave("u", 10.0)  # the window holds 10 s: full until 1300
    assert dict(prot.enter("u", "x").headers)["Retry-After"] == "300"  # type: ignore[union-attr]
    assert prot.enter("u", "x") is not None  # back at once: did not wait
    assert (prot.rejected_twice, prot.refused_again) == (1, 0)
    clock[0] = 1100.0
    assert prot.enter("u", "z") is not None  # another request pushes the block to 1304
    clock[0] = 1301.0
    assert prot.enter("u", "x") is not None  # waited its 302 s, but the same block holds (pushed)
    assert (prot.rejected_twice, prot.refused_again) == (2, 0)
    clock[0] = 1310.0  # block over, the 10 s left the window
    assert prot.enter("u", "y") is None
    prot.leave("u", 10.0)  # the user's next request fills it again
    assert prot.enter("u", "x") is not None  # a new block: x waited as told
    assert (prot.rejected_twice, prot.refused_again) == (2, 1)
    assert prot.enter("u", "x") is not None  # and back at once in this one
    assert (prot.rejected_twice, prot.refused_again) == (3, 1)


def test_connector_adapts_to_the_limits_writes_everything_and_never_repeats_a_refusal(tmp_path, sandbox_ca) -> None:
    """The bench (bench/tracking) in small: a window of 30 sandbox s holding 3 s of execution,
    run 30 times faster, so the writes meet the execution-time limit several times."""
    import datetime as dt

    from connector.crm.dataverse import DataverseCrmClient
    from connector.models import CampaignResponse, CrmTable, RecordRef
    from tests.fixtures.crm import crm_config

    limits = Limits(execution_seconds=3.0, window_seconds=30.0, time_scale=30.0, hold_replies=True)
    crm = start_crm_sandbox(tmp_path / "crm", sandbox_ca, customizations=True, limits=limits)
    client = DataverseCrmClient.from_config(crm_config(crm, sandbox_ca.ca_file, batch_size=500, max_retries=5))
    try:
        contact = crm.store.insert("contacts", {"lastname": "X"})
        campaign = crm.store.insert("campaigns", {"name": "C"})
        now = dt.datetime.now(dt.timezone.utc)
        responses = [CampaignResponse(f"job.sent.{i:05d}", campaign, RecordRef(CrmTable.CONTACT, contact), "s", now)
                     for i in range(600)]
        results = []
        for start in range(0, len(responses), 100):
            results += client.create_campaign_responses(responses[start:start + 100])
        assert all(r.ok for r in results) and len(results) == 600
        assert crm.store.count("campaignresponses") == 600
        prot = crm.protection
        assert prot.refused_by_code["0x80072321"] >= 1  # the limit was met ...
        # ... and no refused request was refused again before its Retry-After had passed or in the
        # block it was told of (a later block, when the window fills again, is prot.refused_again)
        assert prot.rejected_twice == 0, f"{prot.rejected_twice} refused too soon, {prot.refused_again} later"
        assert client.http.pace.throttled >= 1 and client.http.pace.state().dop_hint == 8
    finally:
        client.close()
        crm.stop()
