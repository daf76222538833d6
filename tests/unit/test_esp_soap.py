"""The SOAP call layer: HTTP 500 throttling, faults, token expiry, retries only when safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import responses

from connector.errors import AuthError, PermanentPeerError, ThrottledError, TransientPeerError
from connector.esp.soap import SoapCaller
from connector.esp.wsdl import load_client
from connector.esp.soap_auth import OAuthAuth, WsseAuth

ENDPOINT = "https://esp.test/Service.asmx"
AUTH = "https://auth.esp.test"
NS = "http://exacttarget.com/wsdl/partnerAPI"


def _envelope(body: str) -> str:
    return ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
            f"{body}</soap:Body></soap:Envelope>")


OK_RETRIEVE = _envelope(f'<RetrieveResponseMsg xmlns="{NS}"><OverallStatus>OK</OverallStatus>'
                        "<RequestID>r1</RequestID></RetrieveResponseMsg>")
TOKEN_EXPIRED = _envelope("<soap:Fault><faultcode>soap:Client</faultcode><faultstring>Token Expired</faultstring>"
                          "<detail/></soap:Fault>")


@pytest.fixture(scope="module")
def wsdl_client(tmp_path_factory: pytest.TempPathFactory):
    from connector.sandbox.marketing_cloud.wsdl import build_wsdl

    path = tmp_path_factory.mktemp("wsdl") / "partner.wsdl"
    path.write_text(build_wsdl(ENDPOINT))
    return load_client(str(path), verify=True, cache_dir=None, timeout=5)


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def _caller(client, session, auth=None, max_retries=3, sleeps=None) -> SoapCaller:  # noqa: ANN001
    record = sleeps if sleeps is not None else []
    return SoapCaller(client, session, auth or WsseAuth("api-user", "pa55-w0rd"), lambda: ENDPOINT,
                      timeout=5, max_retries=max_retries, sleep=record.append)


def _retrieve(caller: SoapCaller, safe: bool = True):
    return caller.call("Retrieve", safe=safe, what="List 'k'", RetrieveRequest={"ObjectType": "List", "Properties": ["ID"]})


@responses.activate
def test_http_500_is_throttling_and_a_safe_call_is_retried(wsdl_client, session) -> None:
    responses.post(ENDPOINT, body="<html>busy</html>", status=500)
    responses.post(ENDPOINT, body="", status=503)
    responses.post(ENDPOINT, body=OK_RETRIEVE, status=200)
    sleeps: list[float] = []
    reply = _retrieve(_caller(wsdl_client, session, sleeps=sleeps))
    assert reply.tag == f"{{{NS}}}RetrieveResponseMsg"
    assert len(sleeps) == 2
    sent = responses.calls[0].request
    assert sent.headers["SOAPAction"] == '"Retrieve"'
    assert b"PasswordText" in sent.body


@responses.activate
def test_unsafe_call_is_never_repeated(wsdl_client, session) -> None:
    responses.post(ENDPOINT, body="busy", status=500)
    with pytest.raises(ThrottledError):
        _retrieve(_caller(wsdl_client, session), safe=False)
    assert len(responses.calls) == 1


@responses.activate
def test_retries_stop_after_max_retries(wsdl_client, session) -> None:
    responses.post(ENDPOINT, body=requests.exceptions.ConnectionError("reset"))
    with pytest.raises(TransientPeerError, match="connection dropped"):
        _retrieve(_caller(wsdl_client, session, max_retries=2))
    assert len(responses.calls) == 3


@responses.activate
def test_server_fault_names_the_object_and_the_apifault(wsdl_client, session) -> None:
    fault = _envelope(
        "<soap:Fault><faultcode>soap:Server</faultcode><faultstring>Unplanned Outage</faultstring><detail>"
        '<apifault xmlns="urn:fault.partner.exacttarget.com"><Code>2</Code><Message>System down</Message></apifault>'
        "</detail></soap:Fault>")
    responses.post(ENDPOINT, body=fault, status=500)
    with pytest.raises(TransientPeerError) as caught:
        _retrieve(_caller(wsdl_client, session, max_retries=0))
    assert "List 'k'" in str(caught.value) and "apifault 2: System down" in str(caught.value)
    assert not isinstance(caught.value, ThrottledError)


@responses.activate
def test_security_fault_is_an_auth_error_without_the_password(wsdl_client, session) -> None:
    fault = _envelope('<soap:Fault><faultcode xmlns:q0="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-'
                      'wssecurity-secext-1.0.xsd">q0:Security</faultcode><faultstring>Login failed</faultstring>'
                      "</soap:Fault>")
    responses.post(ENDPOINT, body=fault, status=500)
    with pytest.raises(AuthError) as caught:
        _retrieve(_caller(wsdl_client, session))
    assert "pa55-w0rd" not in str(caught.value)
    assert len(responses.calls) == 1


@responses.activate
def test_client_fault_is_permanent(wsdl_client, session) -> None:
    fault = _envelope("<soap:Fault><faultcode>soap:Client</faultcode><faultstring>Server did not recognize the value"
                      " of HTTP Header SOAPAction</faultstring><detail/></soap:Fault>")
    responses.post(ENDPOINT, body=fault, status=500)
    with pytest.raises(PermanentPeerError):
        _retrieve(_caller(wsdl_client, session))
    assert len(responses.calls) == 1  # permanent: not repeated


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _token_reply(token: str, expires: int = 1079) -> dict:
    return {"access_token": token, "token_type": "Bearer", "expires_in": expires, "scope": "x",
            "soap_instance_url": "https://tenant.soap.esp.test/", "rest_instance_url": "https://tenant.rest.esp.test/"}


@responses.activate
def test_oauth_token_is_cached_renewed_before_expiry_and_sent_as_fueloauth(wsdl_client, session) -> None:
    responses.post(AUTH + "/v2/token", json=_token_reply("tok-1"))
    responses.post(AUTH + "/v2/token", json=_token_reply("tok-2"))
    responses.post(ENDPOINT, body=OK_RETRIEVE)
    clock = _Clock()
    auth = OAuthAuth(session, AUTH, "cid", "csecret", account_id="123", clock=clock)
    caller = _caller(wsdl_client, session, auth=auth)
    _retrieve(caller)
    _retrieve(caller)
    clock.now += 1079 - 60  # inside the renewal margin
    _retrieve(caller)
    token_calls = [c for c in responses.calls if c.request.url.endswith("/v2/token")]
    assert len(token_calls) == 2
    assert json.loads(token_calls[0].request.body) == {
        "grant_type": "client_credentials", "client_id": "cid", "client_secret": "csecret", "account_id": "123"}
    soap_bodies = [c.request.body for c in responses.calls if c.request.url == ENDPOINT]
    assert b"tok-1" in soap_bodies[0] and b"tok-2" in soap_bodies[2]
    assert b'fueloauth xmlns="http://exacttarget.com"' in soap_bodies[0]
    assert auth.soap_instance_url == "https://tenant.soap.esp.test/"


@responses.activate
def test_token_expired_fault_refetches_once_and_repeats_a_safe_call(wsdl_client, session) -> None:
    responses.post(AUTH + "/v2/token", json=_token_reply("tok-1"))
    responses.post(AUTH + "/v2/token", json=_token_reply("tok-2"))
    responses.post(ENDPOINT, body=TOKEN_EXPIRED, status=500)
    responses.post(ENDPOINT, body=OK_RETRIEVE)
    _retrieve(_caller(wsdl_client, session, auth=OAuthAuth(session, AUTH, "cid", "csecret")))
    assert [c.request.url.endswith("/v2/token") for c in responses.calls] == [True, False, True, False]


@responses.activate
def test_token_expired_twice_is_not_a_loop(wsdl_client, session) -> None:
    responses.post(AUTH + "/v2/token", json=_token_reply("tok"))
    responses.post(ENDPOINT, body=TOKEN_EXPIRED, status=500)
    with pytest.raises(TransientPeerError, match="refused too"):
        _retrieve(_caller(wsdl_client, session, auth=OAuthAuth(session, AUTH, "cid", "csecret")))
    assert len([c for c in responses.calls if c.request.url == ENDPOINT]) == 2


@responses.activate
def test_token_expired_on_an_unsafe_call_is_not_repeated(wsdl_client, session) -> None:
    responses.post(AUTH + "/v2/token", json=_token_reply("tok"))
    responses.post(ENDPOINT, body=TOKEN_EXPIRED, status=500)
    with pytest.raises(TransientPeerError, match="not safe to repeat"):
        _retrieve(_caller(wsdl_client, session, auth=OAuthAuth(session, AUTH, "cid", "csecret")), safe=False)
    assert len([c for c in responses.calls if c.request.url == ENDPOINT]) == 1


@responses.activate
def test_refused_client_credentials_name_the_config_keys(session) -> None:
    responses.post(AUTH + "/v2/token", json={"error": "invalid_client"}, status=401)
    with pytest.raises(AuthError) as caught:
        OAuthAuth(session, AUTH, "cid", "s3cr3t-value").token()
    assert "[esp] client_id" in str(caught.value) and "s3cr3t-value" not in str(caught.value)


def test_real_fault_schema_import_is_answered_locally(tmp_path: Path) -> None:
    wsdl = Path("/work/shared/reference/ExactTargetWSDL.xml")
    if not wsdl.exists():
        pytest.skip("reference WSDL not present")
    client = load_client(str(wsdl), verify=True, cache_dir=tmp_path, timeout=5)
    assert client.get_type(f"{{{NS}}}Subscriber") is not None


def test_lxml_reading_agrees_with_zeep_objects(wsdl_client) -> None:
    """The fast reply path (lxml) reads exactly what zeep's object builder reads."""
    from lxml import etree

    from connector.esp.events import events_from_rows, flatten, parse_esp_datetime
    from connector.models import EventType

    rows = "".join(
        f'<Results xsi:type="BounceEvent"><PartnerKey xsi:nil="true"/><ObjectID xsi:nil="true"/>'
        f"<SendID>{40 + i}</SendID><SubscriberKey>key-{i}</SubscriberKey><EventDate>2026-02-2{i}T23:30:0{i}.5</EventDate>"
        f"<EventType>HardBounce</EventType><BatchID>{i}</BatchID><SMTPCode>550</SMTPCode>"
        f"<BounceCategory>Hard bounce</BounceCategory><SMTPReason>5.1.1 unknown &lt;user&gt;</SMTPReason>"
        f"<BounceType>immediate</BounceType></Results>"
        for i in range(3)
    )
    xml = _envelope(f'<RetrieveResponseMsg xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
                    f"<OverallStatus>OK</OverallStatus><RequestID>r</RequestID>{rows}</RetrieveResponseMsg>").encode()
    by_zeep = wsdl_client.service._binding.get("Retrieve").process_reply(etree.fromstring(xml))["Results"]
    reply = etree.fromstring(xml)[0][0]
    by_lxml = list(events_from_rows(EventType.BOUNCE, (flatten(r) for r in reply.iterfind(f"{{{NS}}}Results"))))
    assert len(by_zeep) == len(by_lxml) == 3
    for z, e in zip(by_zeep, by_lxml):
        assert (str(z.SendID), z.SubscriberKey, str(z.BatchID)) == (e.job_id, e.subscriber_key, e.batch_id)
        assert (z.SMTPCode, z.BounceCategory, z.SMTPReason, z.BounceType) == (
            e.smtp_code, e.bounce_category, e.smtp_reason, e.bounce_type)
        # zeep gives a naive datetime (CST by Marketing Cloud's rule); the adapter an aware UTC one
        assert z.EventDate.tzinfo is None
        assert parse_esp_datetime(z.EventDate.isoformat()) == e.event_time


def test_one_parsed_wsdl_builds_requests_from_many_threads(wsdl_client) -> None:
    """Per-thread adapters share one parsed WSDL; building requests concurrently is safe."""
    from concurrent.futures import ThreadPoolExecutor

    from lxml import etree

    subscriber = wsdl_client.get_type(f"{{{NS}}}Subscriber")

    def build(i: int) -> bytes:
        objects = [subscriber(SubscriberKey=f"k{i}-{j}", EmailAddress=f"a{j}@x.test") for j in range(20)]
        envelope = wsdl_client.create_message(wsdl_client.service, "Create", Options={}, Objects=objects)
        return etree.tostring(envelope)

    with ThreadPoolExecutor(8) as pool:
        built = list(pool.map(build, range(200)))
    assert all(b"k%d-19" % i in body and body.count(b"<ns0:Objects") == 20 for i, body in enumerate(built))


@responses.activate
def test_retry_after_is_honoured(wsdl_client, session) -> None:
    responses.post(ENDPOINT, body="slow down", status=429, headers={"Retry-After": "7"})
    responses.post(ENDPOINT, body=OK_RETRIEVE)
    sleeps: list[float] = []
    _retrieve(_caller(wsdl_client, session, sleeps=sleeps))
    assert sleeps == [7.0]


@responses.activate
def test_already_on_the_list_is_repeated_as_an_update(wsdl_client, session) -> None:
    from connector.esp.marketing_cloud import MarketingCloudEspClient
    from connector.models import Subscriber

    def result(i: int, ok: bool, code: str = "") -> str:
        status = "<StatusCode>OK</StatusCode><StatusMessage>Created Subscriber.</StatusMessage>" if ok else (
            "<StatusCode>Error</StatusCode><StatusMessage>The subscriber is already on the list</StatusMessage>")
        return (f"<Results>{status}<OrdinalID>{i}</OrdinalID>" + (f"<ErrorCode>{code}</ErrorCode>" if code else "")
                + "<NewID>0</NewID></Results>")

    responses.post(ENDPOINT, body=_envelope(f'<CreateResponse xmlns="{NS}">{result(0, True)}{result(1, False, "12014")}'
                                            "<RequestID>x</RequestID><OverallStatus>Has Errors</OverallStatus>"
                                            "</CreateResponse>"))
    responses.post(ENDPOINT, body=_envelope(f'<UpdateResponse xmlns="{NS}"><Results><StatusCode>OK</StatusCode>'
                                            "<StatusMessage>Updated Subscriber.</StatusMessage><OrdinalID>0</OrdinalID>"
                                            "<Object/></Results><RequestID>y</RequestID><OverallStatus>OK</OverallStatus>"
                                            "</UpdateResponse>"))
    esp = MarketingCloudEspClient(_caller(wsdl_client, session), session)
    results = esp.upsert_subscribers([Subscriber("a", "a@x.test"), Subscriber("b", "b@x.test")], "12")
    assert [r.ok for r in results] == [True, True]
    for call in responses.calls:  # both writes add-or-update
        assert b"<ns0:SaveAction>UpdateAdd</ns0:SaveAction>" in call.request.body
    update = responses.calls[1].request
    assert update.headers["SOAPAction"] == '"Update"' and b"<ns0:Action>update</ns0:Action>" in update.body
    assert b"<ns0:SubscriberKey>b</ns0:SubscriberKey>" in update.body and b">a<" not in update.body


def test_a_request_that_does_not_fit_the_wsdl_is_a_clear_error(wsdl_client, session) -> None:
    caller = _caller(wsdl_client, session)
    with pytest.raises(PermanentPeerError, match="does not fit the WSDL"):
        caller.call("Retrieve", safe=True, what="List 'k'", RetrieveRequest={"ObjectType": "List", "NoSuchField": 1})


RATE_LIMITED = _envelope("<soap:Fault><faultcode>soap:Server</faultcode><faultstring>Rate Limited</faultstring><detail>"
                         '<apifault xmlns="urn:fault.partner.exacttarget.com"><Code>17</Code>'
                         "<Message>Rate Limited</Message></apifault></detail></soap:Fault>")


@pytest.mark.parametrize("failure", [
    (500, {}, "<html>busy</html>"),  # how Marketing Cloud throttles
    (500, {}, RATE_LIMITED),
    (503, {"Retry-After": "1"}, ""),
    (500, {}, TOKEN_EXPIRED),  # renew-then-retry would re-send it: not for a start
    requests.exceptions.ConnectionError("reset by peer"),  # the request may have reached the ESP
], ids=["http500", "rate-limited", "503-retry-after", "token-expired", "dropped"])
@responses.activate
def test_a_send_start_is_never_re_sent_blind(wsdl_client, session, failure) -> None:  # noqa: ANN001
    """Whatever the failure of a Perform start, the adapter looks for the send instead of starting it again."""
    from connector.esp.marketing_cloud import MarketingCloudEspClient

    performs: list[bytes] = []
    retrieves: list[str] = []

    def reply(request):  # noqa: ANN001, ANN202
        action = request.headers["SOAPAction"].strip('"')
        body = request.body.decode()
        if action == "Perform":
            performs.append(request.body)
            return failure
        object_type = body.split("ObjectType>", 1)[1].split("<", 1)[0]
        retrieves.append(object_type)
        row = ("<Results><ObjectID>d1</ObjectID><CustomerKey>cesp-send-1</CustomerKey></Results>"
               if object_type == "EmailSendDefinition" else "")
        return 200, {}, _envelope(f'<RetrieveResponseMsg xmlns="{NS}"><OverallStatus>OK</OverallStatus>'
                                  f"<RequestID>r</RequestID>{row}</RetrieveResponseMsg>")

    responses.add_callback(responses.POST, ENDPOINT, callback=reply)
    sleeps: list[float] = []
    esp = MarketingCloudEspClient(_caller(wsdl_client, session, max_retries=5, sleeps=sleeps), session)
    with pytest.raises(TransientPeerError, match="does not show a send under that key"):
        esp.start_send("cesp-send-1", "12", "cesp-email", "Default Commercial", "Send 1")
    assert len(performs) == 1  # sent once, never repeated
    assert b"<ns0:Action>start</ns0:Action>" in performs[0]
    assert retrieves == ["Send", "EmailSendDefinition", "Send"]  # looked up before and after, not re-sent
    assert sleeps == []


@responses.activate
def test_a_token_that_could_not_be_fetched_is_asked_again_even_for_an_unsafe_call(wsdl_client, session) -> None:
    """Nothing was sent to the SOAP endpoint yet: fetching the token again is always safe."""
    responses.post(AUTH + "/v2/token", body="busy", status=503)
    responses.post(AUTH + "/v2/token", json=_token_reply("tok-1"))
    responses.post(ENDPOINT, body=OK_RETRIEVE)
    sleeps: list[float] = []
    auth = OAuthAuth(session, AUTH, "cid", "csecret")
    _retrieve(_caller(wsdl_client, session, auth=auth, sleeps=sleeps), safe=False)
    assert [c.request.url.endswith("/v2/token") for c in responses.calls] == [True, True, False]
    assert len(sleeps) == 1
