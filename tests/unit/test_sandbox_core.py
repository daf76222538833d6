"""The sandbox core: CA, fault knobs and the loopback HTTPS server."""

from __future__ import annotations

import json
import ssl

import pytest
import requests

from connector.sandbox.faults import FaultKnobs
from connector.sandbox.httpserver import SandboxHttpServer
from connector.sandbox.tls import SandboxCA, write_private


def echo_app(environ, start_response):
    body = environ["wsgi.input"].read()
    payload = json.dumps({
        "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"], "body": body.decode(),
        "auth": environ.get("HTTP_AUTHORIZATION"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload]


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return SandboxCA(tmp_path_factory.mktemp("ca"))


def test_ca_is_persisted_and_reused(tmp_path):
    first = SandboxCA(tmp_path)
    pem = first.ca_file.read_bytes()
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0
    assert (tmp_path / "server-key.pem").stat().st_mode & 0o077 == 0
    second = SandboxCA(tmp_path)
    assert second.ca_file.read_bytes() == pem
    assert isinstance(second.server_context(), ssl.SSLContext)


def test_https_with_verification(ca):
    with SandboxHttpServer(echo_app, ca=ca) as server, requests.Session() as s:
        assert server.url.startswith("https://127.0.0.1:")
        for i in range(3):  # keep-alive: several requests on one connection
            r = s.post(f"{server.url}/api/data/v9.2/contacts(1)?$top=1", data=f"x{i}",
                       headers={"Authorization": "Bearer t"}, verify=str(ca.ca_file))
            assert r.status_code == 200
            assert r.json() == {"method": "POST", "path": "/api/data/v9.2/contacts(1)",
                                "query": "$top=1", "body": f"x{i}", "auth": "Bearer t"}
        r = s.get(f"https://localhost:{server.port}/", verify=str(ca.ca_file))
        assert r.status_code == 200


def test_write_private_tightens_an_existing_file(tmp_path):
    path = tmp_path / "secrets.ini"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600


def test_unknown_ca_is_rejected(ca, tmp_path):
    other = SandboxCA(tmp_path / "other")
    with SandboxHttpServer(echo_app, ca=ca) as server:
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(server.url, verify=str(other.ca_file), timeout=10)


def test_plain_http(ca):
    with SandboxHttpServer(echo_app, ca=None, tls=False) as server:
        assert server.url.startswith("http://")
        assert requests.get(server.url + "/x", timeout=10).json()["path"] == "/x"


def test_generic_faults(ca):
    faults = FaultKnobs()
    with SandboxHttpServer(echo_app, ca=ca, faults=faults) as server, requests.Session() as s:
        verify = str(ca.ca_file)
        faults.set("http503", next_n=1)
        assert s.get(server.url, verify=verify).status_code == 503
        assert s.get(server.url, verify=verify).status_code == 200
        faults.set("http500", next_n=1)
        faults.set("http502", next_n=1)
        assert s.get(server.url, verify=verify).status_code == 500
        bad_gateway = s.get(server.url, verify=verify)
        assert (bad_gateway.status_code, bad_gateway.reason) == (502, "Bad Gateway")
        assert bad_gateway.text == "502 Bad Gateway (sandbox fault)\n"
        faults.set("drop", next_n=1)
        with pytest.raises(requests.exceptions.ConnectionError):
            s.post(server.url, data="lost", verify=verify)
        assert s.get(server.url, verify=verify).status_code == 200
        faults.set("http504", next_n=1)
        assert s.get(server.url, verify=verify).status_code == 504
        faults.set("slow", next_n=1, seconds=0.01)
        assert s.get(server.url, verify=verify).status_code == 200
        assert faults.taken("slow") == 1


def test_fault_knobs_semantics():
    knobs = FaultKnobs(seed=3)
    assert not knobs.take("drop")
    knobs.set("drop", next_n=2)
    assert [knobs.take("drop") for _ in range(3)] == [True, True, False]
    knobs.set("throttle", seconds=5)
    assert knobs.take("throttle") and knobs.take("throttle")
    assert knobs.seconds("throttle") == 5
    knobs.set("http500", rate=1.0)
    assert knobs.take("http500")
    knobs.set("http500", rate=0.5)
    hits = sum(knobs.take("http500") for _ in range(200))
    assert 40 < hits < 160
    knobs.clear("http500")
    assert not knobs.take("http500")
    knobs.clear()
    assert knobs.active() == {}
    with pytest.raises(ValueError):
        knobs.set("drop", rate=2)


def test_drop_after_applies_the_request_but_loses_the_answer(ca):
    seen = []

    def recording_app(environ, start_response):
        seen.append(environ["wsgi.input"].read())
        start_response("204 No Content", [])
        return [b""]

    faults = FaultKnobs()
    with SandboxHttpServer(recording_app, ca=ca, faults=faults) as server, requests.Session() as s:
        faults.set("drop_after", next_n=1)
        with pytest.raises(requests.exceptions.ConnectionError):
            s.post(server.url + "/x", data="applied", verify=str(ca.ca_file))
        assert seen == [b"applied"]
        assert s.post(server.url + "/x", data="again", verify=str(ca.ca_file)).status_code == 204
        faults.set("drop", next_n=1)  # unlike drop_after, the app never sees the request
        with pytest.raises(requests.exceptions.ConnectionError):
            s.post(server.url + "/x", data="lost", verify=str(ca.ca_file))
        assert seen == [b"applied", b"again"]
