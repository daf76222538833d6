"""Unit tests of the Dataverse HTTP layer: retry policy and error translation (no sockets)."""

from __future__ import annotations

import json
import re

import pytest
import requests
import responses

from connector.crm.batch import BatchOp, build_batch, parse_batch
from connector.crm.dataverse import DataverseCrmClient
from connector.crm.odata import Call, ODataHttp
from connector.errors import AuthError, NotFoundError, PermanentPeerError, ThrottledError, TransientPeerError
from connector.models import CrmTable, RecordRef

ORG = "https://org.example.test"
API = ORG + "/api/data/v9.2/"


class FakeTokens:
    def __init__(self) -> None:
        self.issued = 0
        self.invalidated = 0

    def token(self) -> str:
        self.issued += 1
        return f"tok{self.invalidated}"

    def invalidate(self) -> None:
        self.invalidated += 1


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def http(sleeps: list[float]) -> ODataHttp:
    h = ODataHttp(ORG, tokens=FakeTokens(), max_retries=3, sleep=sleeps.append)  # type: ignore[arg-type]
    yield h
    h.close()


@responses.activate
def test_429_waits_retry_after_even_for_post(http: ODataHttp, sleeps: list[float]) -> None:
    responses.add(responses.POST, API + "contacts", status=429, headers={"Retry-After": "7"},
                  json={"error": {"code": "0x80072322", "message": "Number of requests exceeded"}})
    responses.add(responses.POST, API + "contacts", status=204)
    resp = http.request("POST", "contacts", Call("create"), json_body={"a": 1})
    assert resp.status_code == 204
    assert sleeps == [7.0]


@responses.activate
def test_429_storm_gives_throttled_error(http: ODataHttp, sleeps: list[float]) -> None:
    responses.add(responses.GET, API + "contacts", status=429, headers={"Retry-After": "1"},
                  json={"error": {"code": "0x80072322", "message": "slow down"}})
    with pytest.raises(ThrottledError) as info:
        http.request("GET", "contacts", Call("read", idempotent=True))
    assert info.value.retry_after == 1.0
    assert len(sleeps) == 12


@responses.activate
def test_503_retried_only_when_idempotent(http: ODataHttp, sleeps: list[float]) -> None:
    responses.add(responses.GET, API + "contacts", status=503)
    responses.add(responses.GET, API + "contacts", status=200, json={"value": []})
    assert http.get_json("contacts", Call("read", idempotent=True)) == {"value": []}
    assert len(sleeps) == 1
    responses.add(responses.POST, API + "leads", status=503)
    with pytest.raises(TransientPeerError):
        http.request("POST", "leads", Call("create", "lead"))
    assert len(sleeps) == 1


@responses.activate
def test_dropped_connection_not_repeated_for_create(http: ODataHttp) -> None:
    responses.add(responses.POST, API + "leads", body=requests.ConnectionError("reset"))
    with pytest.raises(TransientPeerError, match="connection lost"):
        http.request("POST", "leads", Call("create", "lead"))
    assert len(responses.calls) == 1


@responses.activate
def test_401_renews_token_once(http: ODataHttp) -> None:
    responses.add(responses.GET, API + "contacts", status=401, json={"error": {"code": "", "message": "expired"}})
    responses.add(responses.GET, API + "contacts", status=200, json={"value": [1]})
    assert http.get_json("contacts", Call("read", idempotent=True)) == {"value": [1]}
    assert responses.calls[1].request.headers["Authorization"] == "Bearer tok1"
    responses.add(responses.GET, API + "leads", status=401, json={"error": {"code": "", "message": "no"}})
    with pytest.raises(AuthError):
        http.get_json("leads", Call("read", idempotent=True))


@responses.activate
def test_errors_name_org_table_record(http: ODataHttp) -> None:
    responses.add(responses.GET, API + "contacts(abc)", status=404,
                  json={"error": {"code": "0x80040217", "message": "contact With Id = abc Does Not Exist"}})
    with pytest.raises(NotFoundError) as info:
        http.get_json("contacts(abc)", Call("read recipient", "contact", "abc", idempotent=True))
    text = str(info.value)
    assert "org.example.test" in text and "contact abc" in text and "0x80040217" in text
    responses.add(responses.PATCH, API + "leads(x)", status=400,
                  json={"error": {"code": "0x80044331", "message": "too long"}})
    with pytest.raises(PermanentPeerError) as info2:
        http.request("PATCH", "leads(x)", Call("update", "lead", "x"))
    assert getattr(info2.value, "code") == "0x80044331"


@responses.activate
def test_paging_follows_next_link(http: ODataHttp) -> None:
    responses.add(responses.GET, API + "contacts", json={"value": [1], "@odata.nextLink": API + "contacts?$skiptoken=2"})
    responses.add(responses.GET, API + "contacts", json={"value": [2]})
    pages = list(http.iter_pages("contacts", Call("read", idempotent=True), params={"$select": "x"}, page_size=1))
    assert [p["value"] for p in pages] == [[1], [2]]
    assert responses.calls[1].request.headers["Prefer"] == "odata.maxpagesize=1"
    assert "skiptoken=2" in responses.calls[1].request.url


def test_batch_round_trip() -> None:
    ctype, body = build_batch([BatchOp("PATCH", "contacts(1)", {"a": "é"}, {"If-Match": "*"}),
                               BatchOp("PATCH", "contacts(2)", {"a": 2})], "/api/data/v9.2/")
    text = body.decode()
    assert "PATCH /api/data/v9.2/contacts(1) HTTP/1.1" in text and "If-Match: *" in text and "é" in text
    reply = (
        "--batchresponse_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n\r\n\r\n"
        "--batchresponse_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n"
        '{"error":{"code":"0x80040217","message":"contact With Id = 2 Does Not Exist"}}\r\n'
        "--batchresponse_x--\r\n"
    )
    parts = parse_batch('multipart/mixed; boundary=batchresponse_x', reply.encode())
    assert [p.status for p in parts] == [204, 404]
    assert parts[1].error() == ("0x80040217", "contact With Id = 2 Does Not Exist")
    assert ctype.startswith("multipart/mixed")


@responses.activate
def test_set_opt_outs_partial_failure(http: ODataHttp) -> None:
    reply = (
        "--batchresponse_y\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n"
        "--batchresponse_y\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 404 Not Found\r\n"
        'Content-Type: application/json\r\n\r\n{"error":{"code":"","message":"gone"}}\r\n'
        "--batchresponse_y--\r\n"
    )
    responses.add(responses.POST, API + "$batch", body=reply,
                  content_type="multipart/mixed; boundary=batchresponse_y")
    client = DataverseCrmClient(http)
    results = client.set_opt_outs([RecordRef(CrmTable.CONTACT, "a"), RecordRef(CrmTable.LEAD, "b")])
    assert [(r.key, r.ok) for r in results] == [("a", True), ("b", False)]
    sent = responses.calls[0].request
    assert sent.headers["Prefer"] == "odata.continue-on-error"
    assert b"PATCH /api/data/v9.2/leads(b)" in sent.body
    assert json.loads(sent.body.split(b"\r\n\r\n")[2].split(b"\r\n")[0]) == {"donotbulkemail": True}


@responses.activate
def test_claim_reply_lost_after_server_applied_it(http: ODataHttp) -> None:
    from connector.models import SendRequest, SendStatus

    url = re.compile(re.escape(API) + r"cesp_sendrequests\(r1\).*")
    responses.add(responses.PATCH, url, body=requests.ConnectionError("reset by peer"))
    responses.add(responses.GET, url, json={"cesp_sendrequestid": "r1", "cesp_status": 100000001,
                                            "@odata.etag": 'W/"9"', "cesp_targets": "[]"})
    request = SendRequest(id="r1", name="n", status=SendStatus.PENDING, owner_id="u", targets=(), etag='W/"8"')
    claimed = DataverseCrmClient(http).claim_send_request(request)
    assert claimed is not None and claimed.status is SendStatus.PROCESSING and claimed.etag == 'W/"9"'
    own = [c.request.method for c in responses.calls if "/cesp_sendrequest_" not in c.request.url]  # not targets
    assert own == ["PATCH", "GET"]


@responses.activate
def test_500_is_retried_for_a_safe_call_only(http: ODataHttp, sleeps: list[float]) -> None:
    """Issue 19.4: a read (or any idempotent call) meeting HTTP 500 is repeated; a create is not."""
    responses.add(responses.GET, API + "contacts", status=500, json={"error": {"code": "0x80040216",
                                                                              "message": "An unexpected error"}})
    responses.add(responses.GET, API + "contacts", json={"value": []})
    assert http.get_json("contacts", Call("find records", "contact", idempotent=True)) == {"value": []}
    assert len(sleeps) == 1
    responses.add(responses.POST, API + "$batch", status=500)
    responses.add(responses.POST, API + "$batch", status=200)
    assert http.request("POST", "$batch", Call("run dynamic list query", idempotent=True)).status_code == 200
    responses.add(responses.POST, API + "contacts", status=500)
    with pytest.raises(TransientPeerError, match="HTTP 500"):
        http.request("POST", "contacts", Call("create"), json_body={"a": 1})
    assert len(sleeps) == 2


@responses.activate
def test_a_429_pauses_the_pace_before_its_slot_is_freed(sleeps: list[float]) -> None:
    """Another thread waiting for the slot must see the pause when it gets the slot, not slip past it."""
    from connector.crm.pacing import Pace

    events: list[str] = []

    class Recording(Pace):
        def throttled_by(self, code: str, retry_after: float) -> tuple[float, int]:
            events.append(f"throttled {code} {retry_after}")
            return super().throttled_by(code, retry_after)

        def release(self) -> None:
            events.append("release")
            super().release()

    http = ODataHttp(ORG, tokens=FakeTokens(), max_retries=3, sleep=sleeps.append, pace=Recording())  # type: ignore[arg-type]
    responses.add(responses.GET, API + "contacts", status=429, headers={"Retry-After": "3"},
                  json={"error": {"code": "0x80072321", "message": "Combined execution time"}})
    responses.add(responses.GET, API + "contacts", json={"value": []})
    assert http.get_json("contacts", Call("read", idempotent=True)) == {"value": []}
    assert events == ["throttled 0x80072321 3.0", "release", "release"]
    assert sleeps == [3.0]
    http.close()
