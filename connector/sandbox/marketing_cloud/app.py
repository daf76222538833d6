"""The WSGI app of the Marketing Cloud sandbox: the SOAP endpoint, its WSDL, the OAuth token endpoint.

Routes (paths are case-insensitive, as on IIS):

- ``GET /Service.asmx?wsdl`` and ``GET /etframework.wsdl``: the sandbox's own WSDL;
- ``POST /Service.asmx``: SOAP 1.1 (``SOAPAction`` header, quoted or not) or SOAP 1.2
  (``action=`` in the content type or ``wsa:Action``): Create, Retrieve, Update,
  Delete, Perform, Describe (the other real actions get a clear Client fault);
- ``POST /v2/token``: OAuth client credentials in Marketing Cloud's JSON shape.

App-level fault kinds (on top of the HTTP server's generic ones): ``has_errors``
(some objects of a Create/Update fail, OverallStatus "Has Errors"), ``token_expired``
(the next calls answer the "Token Expired" fault) and ``throttle`` (HTTP 500 with the
"Rate Limited" fault, apifault Code 17, the payload the guide's "Rate Limiting" page
shows). ``calls_per_minute`` throttles the same way whenever the client makes more
SOAP calls than that in a sliding minute (off by default: the service publishes no
fixed threshold, it throttles an account whose calls slow the system down).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Iterable
from xml.sax.saxutils import escape

import structlog

from connector.sandbox.faults import FaultKnobs
from connector.sandbox.marketing_cloud.auth import Credentials, authenticate, token_reply
from connector.sandbox.marketing_cloud.describe import describe
from connector.sandbox.marketing_cloud.retrieve import Retriever
from connector.sandbox.marketing_cloud.soap import (
    SOAP12_ENV,
    SOAP_ENV,
    Obj,
    SoapFault,
    envelope,
    fault_xml,
    local,
    message,
    parse_envelope,
    parse_value,
    render_fields,
)
from connector.sandbox.marketing_cloud.store import EspStore, Result, error
from connector.sandbox.marketing_cloud.wsdl import OPERATION_NAMES, build_wsdl

__all__ = ["Credentials", "MarketingCloudApp"]

log = structlog.get_logger(__name__)

INPUT_ELEMENT = {
    "Create": "CreateRequest", "Retrieve": "RetrieveRequestMsg", "Update": "UpdateRequest",
    "Delete": "DeleteRequest", "Perform": "PerformRequestMsg", "Describe": "DefinitionRequestMsg",
}
OTHER_ACTIONS = {"Query", "Execute", "Configure", "Schedule", "VersionInfo", "Extract", "GetSystemStatus"}
_ACTION_RE = re.compile(r'action="?([^";]+)"?')
RATE_LIMITED = "Rate Limited"
"""faultstring and apifault Message of a throttled call (apifault Code 17)."""


class CallRate:
    """A sliding one-minute window of SOAP calls; ``over()`` when a call exceeds ``per_minute``."""

    def __init__(self, per_minute: int | None = None) -> None:
        self.per_minute = per_minute
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def over(self) -> bool:
        if not self.per_minute:
            return False
        now = time.monotonic()
        with self._lock:
            while self._calls and self._calls[0] <= now - 60.0:
                self._calls.popleft()
            if len(self._calls) >= self.per_minute:
                return True
            self._calls.append(now)
            return False


class MarketingCloudApp:
    """WSGI callable; ``store`` holds the account's data, ``credentials`` its secrets."""

    def __init__(self, store: EspStore, credentials: Credentials, faults: FaultKnobs | None = None,
                 calls_per_minute: int | None = None) -> None:
        self.store = store
        self.credentials = credentials
        self.faults = faults or FaultKnobs()
        self.rate = CallRate(calls_per_minute)
        self.retriever = Retriever(store)
        self.calls: dict[str, int] = {}

    # ------------------------------------------------------------ WSGI

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/").rstrip("/").lower()
        query = environ.get("QUERY_STRING", "").lower()
        base = self._base_url(environ)
        if method == "GET" and (path == "/etframework.wsdl" or (path == "/service.asmx" and "wsdl" in query)):
            body = build_wsdl(base + "/Service.asmx").encode("utf-8")
            return self._reply(start_response, "200 OK", "text/xml; charset=utf-8", body)
        if method == "POST" and path == "/v2/token":
            return self._token(environ, start_response, base)
        if method == "POST" and path == "/service.asmx":
            status, body, content_type = self._soap(environ)
            return self._reply(start_response, status, content_type, body)
        return self._reply(start_response, "404 Not Found", "text/plain", b"Not found\n")

    @staticmethod
    def _base_url(environ: dict) -> str:
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '127.0.0.1')}:{environ.get('SERVER_PORT', '')}"
        return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"

    @staticmethod
    def _reply(start_response: Callable, status: str, content_type: str, body: bytes) -> list[bytes]:
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    # ------------------------------------------------------------ OAuth

    def _token(self, environ: dict, start_response: Callable, base: str) -> list[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            payload = json.loads(environ["wsgi.input"].read(length) or b"{}")
        except (ValueError, UnicodeDecodeError):
            payload = None
        status, data = token_reply(payload, self.credentials, base)
        return self._reply(start_response, status, "application/json; charset=utf-8", json.dumps(data).encode())

    # ------------------------------------------------------------ SOAP

    def _soap(self, environ: dict) -> tuple[str, bytes, str]:
        soap_ns = SOAP_ENV
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            header, payload, soap_ns = parse_envelope(environ["wsgi.input"].read(length))
            action = self._action(environ, header)
            authenticate(header, self.credentials, self.faults)
            if self.faults.take("throttle") or self.rate.over():
                raise SoapFault("soap:Server", RATE_LIMITED, api_code=17)
            expected = INPUT_ELEMENT[action]
            if local(payload.tag) != expected:
                raise SoapFault("soap:Client", f"The {action} operation expects a {expected} element in the Body.")
            self.calls[action] = self.calls.get(action, 0) + 1
            request_id = str(uuid.uuid4())
            handler = {"Retrieve": self.retriever.retrieve,
                       "Describe": lambda r, rid: describe(self.store, r, rid)}.get(action) \
                or getattr(self, f"_op_{action.lower()}")
            request = parse_value(payload)
            if not isinstance(request, Obj):
                request = Obj(type="")
            body = envelope(handler(request, request_id), action, request_id, soap_ns)
            return "200 OK", body, _content_type(soap_ns)
        except SoapFault as fault:
            log.debug("esp_sandbox_fault", code=fault.code, message=fault.message)
            return "500 Internal Server Error", fault_xml(fault, soap_ns), _content_type(soap_ns)

    @staticmethod
    def _action(environ: dict, header: Any) -> str:
        action = environ.get("HTTP_SOAPACTION", "").strip().strip('"')
        if not action:
            match = _ACTION_RE.search(environ.get("CONTENT_TYPE", ""))
            action = match.group(1) if match else ""
        if not action:
            for child in header:
                if isinstance(child.tag, str) and local(child.tag) == "Action":
                    action = (child.text or "").strip()
        action = action.rsplit("/", 1)[-1]
        if not action:
            raise SoapFault("soap:Client", "Server did not recognize the value of HTTP Header SOAPAction: .", api_code=2)
        if action in OTHER_ACTIONS:
            raise SoapFault("soap:Client", f"The {action} operation is not available in the connector's sandbox.")
        if action not in OPERATION_NAMES:
            raise SoapFault("soap:Client", f"Server did not recognize the value of HTTP Header SOAPAction: {action}.")
        return action

    # ------------------------------------------------------------ Create / Update / Delete

    def _op_create(self, request: Obj, request_id: str) -> str:
        actions = _save_actions(request.get("Options"))
        upsert = "UpdateAdd" in actions.values()
        handlers: dict[str, Callable[[Obj], Result]] = {
            "Subscriber": lambda o: self.store.upsert_subscriber(o, add=True, update=upsert, list_conflict_ok=upsert),
            "List": self.store.create_list,
            "Email": self.store.create_email,
            "EmailSendDefinition": self.store.create_send_definition,
            "ImportDefinition": self.store.create_import_definition,
            "DataExtension": self.store.create_data_extension,
            "DataExtensionObject": lambda o: self.store.write_row(o, add=True, update=upsert),
        }
        return self._write("Create", "CreateResponse", "CreateResult", request, request_id, handlers)

    def _op_update(self, request: Obj, request_id: str) -> str:
        actions = _save_actions(request.get("Options"))
        add = "UpdateAdd" in actions.values()
        handlers: dict[str, Callable[[Obj], Result]] = {
            "Subscriber": lambda o: self.store.upsert_subscriber(o, add=add, update=True, list_conflict_ok=True),
            "List": self.store.update_list,
            "EmailSendDefinition": self.store.update_send_definition,
            "ImportDefinition": self.store.update_import_definition,
            "DataExtensionObject": lambda o: self.store.write_row(o, add=add, update=True),
        }
        return self._write("Update", "UpdateResponse", "UpdateResult", request, request_id, handlers)

    def _op_delete(self, request: Obj, request_id: str) -> str:
        handlers: dict[str, Callable[[Obj], Result]] = {
            "Subscriber": self.store.delete_subscriber,
            "List": self.store.delete_list,
            "EmailSendDefinition": self.store.delete_send_definition,
            "ImportDefinition": self.store.delete_import_definition,
            "DataExtensionObject": self.store.delete_row,
        }
        return self._write("Delete", "DeleteResponse", "DeleteResult", request, request_id, handlers)

    def _write(self, verb: str, element: str, result_type: str, request: Obj, request_id: str,
               handlers: dict[str, Callable[[Obj], Result]]) -> str:
        objects = [o for o in request.all("Objects") if isinstance(o, Obj)]
        if not objects:
            raise SoapFault("soap:Client", "No object specified at 0-based index 0.")
        partial = len(objects) > 1 and self.faults.take("has_errors")
        results: list[Result] = []
        for ordinal, obj in enumerate(objects):
            handler = handlers.get(obj.type)
            if handler is None:
                result = error(f"Cannot perform {verb} on objects of type {obj.type or 'APIObject'}.", 5,
                               (obj.type or "APIObject", {}))
            elif partial and ordinal % 2 == 1:
                result = error("Unable to save the object at this time. Try again later.", 2,
                               (obj.type, {k: obj.get(k) for k in ("SubscriberKey", "CustomerKey") if obj.get(k)}))
            else:
                result = handler(obj)
            result["OrdinalID"] = ordinal
            if result_type != "CreateResult":
                result.pop("NewID", None)
                result.pop("NewObjectID", None)
                result.setdefault("Object", (obj.type or "APIObject", {}))
            results.append(result)
        failed = sum(1 for r in results if r["StatusCode"] != "OK")
        overall = "OK" if not failed else "Error" if failed == len(results) else "Has Errors"
        body = "".join(f"<Results>{render_fields(result_type, r)}</Results>" for r in results)
        return message(element, f"{body}<RequestID>{request_id}</RequestID><OverallStatus>{overall}</OverallStatus>")

    # ------------------------------------------------------------ Perform

    def _op_perform(self, request: Obj, request_id: str) -> str:
        action = request.text("Action")
        wrapper = request.get("Definitions")
        definitions = [d for d in wrapper.all("Definition") if isinstance(d, Obj)] if isinstance(wrapper, Obj) else []
        results: list[Result] = []
        for ordinal, definition in enumerate(definitions):
            if action.lower() != "start":
                result = error(f"Perform action '{action}' is not supported on {definition.type}.", 3,
                               (definition.type, {}))
            elif definition.type == "ImportDefinition":
                result = self.store.start_import(definition)
            elif definition.type == "EmailSendDefinition":
                result = self.store.start_send(definition)
            else:
                result = error(f"Cannot perform Perform on objects of type {definition.type}.", 5,
                               (definition.type or "APIObject", {}))
            result.pop("NewID", None)
            result["OrdinalID"] = ordinal
            result.setdefault("Task", ("TaskResult", {"StatusCode": result["StatusCode"],
                                                      "StatusMessage": result["StatusMessage"]}))
            results.append(result)
        failed = sum(1 for r in results if r["StatusCode"] != "OK")
        overall = "OK" if not failed else "Error" if failed == len(results) else "Has Errors"
        body = "".join(f"<Result>{render_fields('PerformResult', r)}</Result>" for r in results)
        status_message = "" if overall == "OK" else "; ".join(r["StatusMessage"] for r in results if r["StatusCode"] != "OK")
        return message("PerformResponseMsg", f"<Results>{body}</Results><OverallStatus>{overall}</OverallStatus>"
                       f"<OverallStatusMessage>{escape(status_message)}</OverallStatusMessage>"
                       f"<RequestID>{request_id}</RequestID>")

def _content_type(soap_ns: str) -> str:
    return "application/soap+xml; charset=utf-8" if soap_ns == SOAP12_ENV else "text/xml; charset=utf-8"


def _save_actions(options: Any) -> dict[str, str]:
    if not isinstance(options, Obj):
        return {}
    wrapper = options.get("SaveOptions")
    if not isinstance(wrapper, Obj):
        return {}
    out = {}
    for item in wrapper.all("SaveOption"):
        if isinstance(item, Obj):
            out[item.text("PropertyName") or "*"] = item.text("SaveAction")
    return out
