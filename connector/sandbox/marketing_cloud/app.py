"""The WSGI app of the Marketing Cloud sandbox: the SOAP endpoint, its WSDL, the OAuth token endpoint.

Routes (paths are case-insensitive, as on IIS):

- ``GET /Service.asmx?wsdl`` and ``GET /etframework.wsdl``: the sandbox's own WSDL;
- ``POST /Service.asmx``: SOAP 1.1 (``SOAPAction`` header, quoted or not) or SOAP 1.2
  (``action=`` in the content type or ``wsa:Action``): Create, Retrieve, Update,
  Delete, Perform;
- ``POST /v2/token``: OAuth client credentials in Marketing Cloud's JSON shape.

App-level fault kinds (on top of the HTTP server's generic ones): ``has_errors``
(some objects of a Create/Update fail, OverallStatus "Has Errors"), ``token_expired``
(the next calls answer the "Token Expired" fault) and ``throttle`` (HTTP 500, the
way Marketing Cloud pushes back).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

import structlog

from connector.sandbox.faults import FaultKnobs
from connector.sandbox.marketing_cloud import events as ev
from connector.sandbox.marketing_cloud.filters import FilterError, compile_filter, key_hint
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
from connector.sandbox.marketing_cloud.wsdl import OPERATION_NAMES, build_wsdl, field_names

log = structlog.get_logger(__name__)

PAGE_SIZE = 2500
TOKEN_SECONDS = 1200
MAX_CURSORS = 2000
INPUT_ELEMENT = {
    "Create": "CreateRequest", "Retrieve": "RetrieveRequestMsg", "Update": "UpdateRequest",
    "Delete": "DeleteRequest", "Perform": "PerformRequestMsg",
}
KNOWN_ACTIONS = OPERATION_NAMES | {"Query", "Describe", "Execute", "Configure", "Schedule", "VersionInfo", "Extract",
                                   "GetSystemStatus"}
RETRIEVABLE = ("Subscriber", "List", "ListSubscriber", "Email", "SendClassification", "EmailSendDefinition", "Send",
               "ImportDefinition", "ImportResultsSummary") + ev.EVENT_OBJECTS
DOTTED = {
    "Send": {"Email.ID", "EmailSendDefinition.CustomerKey", "List.ID"},
    "EmailSendDefinition": {"Email.ID", "SendClassification.CustomerKey"},
    "UnsubEvent": {"List.ID"},
}
FUEL_NS = "http://exacttarget.com"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_ACTION_RE = re.compile(r'action="?([^";]+)"?')


class Credentials:
    """The account's API credentials and the OAuth tokens issued so far."""

    def __init__(self, client_id: str, client_secret: str, account_id: str, username: str, password: str) -> None:
        self.client_id, self.client_secret, self.account_id = client_id, client_secret, account_id
        self.username, self.password = username, password
        self.token_seconds = TOKEN_SECONDS
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_seconds
            if len(self._tokens) > 10_000:
                self._tokens = dict(list(self._tokens.items())[-5000:])
        return token

    def check(self, token: str) -> str:
        """'ok', 'expired' or 'unknown'."""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return "unknown"
        return "ok" if time.monotonic() < expiry else "expired"

    def expire_all(self) -> None:
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)


class _Cursor:
    """One Retrieve's remaining rows; each RequestID maps to the page that follows it."""

    def __init__(self, obj_type: str, rows: Iterator[str], page_size: int) -> None:
        self.obj_type = obj_type
        self.rows = rows
        self.page_size = page_size
        self.pending: str | None = None
        self.lock = threading.Lock()
        self.answers: OrderedDict[str, bytes] = OrderedDict()


class MarketingCloudApp:
    """WSGI callable; ``store`` holds the account's data, ``credentials`` its secrets."""

    def __init__(self, store: EspStore, credentials: Credentials, faults: FaultKnobs | None = None) -> None:
        self.store = store
        self.credentials = credentials
        self.faults = faults or FaultKnobs()
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._cursor_lock = threading.Lock()
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
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            return self._json(start_response, "400 Bad Request", {
                "error": "invalid_request", "error_description": "The request body is not valid JSON.",
                "error_uri": "https://developer.salesforce.com/docs"})
        if payload.get("grant_type") != "client_credentials":
            return self._json(start_response, "400 Bad Request", {
                "error": "unsupported_grant_type", "error_description": "Use grant_type client_credentials.",
                "error_uri": "https://developer.salesforce.com/docs"})
        creds = self.credentials
        if payload.get("client_id") != creds.client_id or payload.get("client_secret") != creds.client_secret:
            return self._json(start_response, "401 Unauthorized", {
                "error": "invalid_client",
                "error_description": "Invalid client ID. Use the client ID in Marketing Cloud Installed Packages.",
                "error_uri": "https://developer.salesforce.com/docs"})
        account = payload.get("account_id")
        if account not in (None, "", creds.account_id, _int_or_none(creds.account_id)):
            return self._json(start_response, "401 Unauthorized", {
                "error": "unauthorized_client",
                "error_description": "The client is not authorized for this account_id (MID).",
                "error_uri": "https://developer.salesforce.com/docs"})
        return self._json(start_response, "200 OK", {
            "access_token": creds.issue(), "token_type": "Bearer", "expires_in": creds.token_seconds,
            "scope": "email_read email_write email_send list_and_subscribers_read list_and_subscribers_write "
                     "tracking_events_read data_extensions_read",
            "soap_instance_url": base + "/", "rest_instance_url": base + "/",
        })

    def _json(self, start_response: Callable, status: str, data: dict) -> list[bytes]:
        return self._reply(start_response, status, "application/json; charset=utf-8", json.dumps(data).encode())

    # ------------------------------------------------------------ SOAP

    def _soap(self, environ: dict) -> tuple[str, bytes, str]:
        soap_ns = SOAP_ENV
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            header, payload, soap_ns = parse_envelope(environ["wsgi.input"].read(length))
            action = self._action(environ, header)
            self._authenticate(header)
            if self.faults.take("throttle"):
                raise SoapFault("soap:Server", "The server is busy; the request was throttled. Try again later.",
                                api_code=2)
            expected = INPUT_ELEMENT[action]
            if local(payload.tag) != expected:
                raise SoapFault("soap:Client", f"The {action} operation expects a {expected} element in the Body.")
            self.calls[action] = self.calls.get(action, 0) + 1
            request_id = str(uuid.uuid4())
            handler = getattr(self, f"_op_{action.lower()}")
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
        if action not in OPERATION_NAMES:
            raise SoapFault("soap:Client", f"Server did not recognize the value of HTTP Header SOAPAction: {action}.")
        return action

    def _authenticate(self, header: Any) -> None:
        token = username = password = None
        password_type = ""
        for el in header.iter():
            if not isinstance(el.tag, str):
                continue
            name = local(el.tag)
            if name == "fueloauth" or name == "oAuthToken":
                token = "".join(el.itertext()).strip()
            elif name == "Username":
                username = (el.text or "").strip()
            elif name == "Password":
                password, password_type = el.text or "", el.get("Type", "")
        if token:
            state = self.credentials.check(token)
            if state == "expired" or self.faults.take("token_expired"):
                raise SoapFault("soap:Client", "Token Expired")
            if state != "ok":
                raise SoapFault("q0:Security", "Login failed", security=True)
            return
        if username is not None:
            if (username == self.credentials.username and password == self.credentials.password
                    and (not password_type or password_type.endswith("#PasswordText"))):
                return
            raise SoapFault("q0:Security", "Login failed", security=True)
        raise SoapFault("q0:Security", "Security requirements are not satisfied because the security header is "
                        "not present in the incoming message.", security=True)

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
        }
        return self._write("Update", "UpdateResponse", "UpdateResult", request, request_id, handlers)

    def _op_delete(self, request: Obj, request_id: str) -> str:
        handlers: dict[str, Callable[[Obj], Result]] = {
            "Subscriber": self.store.delete_subscriber,
            "List": self.store.delete_list,
            "EmailSendDefinition": self.store.delete_send_definition,
            "ImportDefinition": self.store.delete_import_definition,
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
                       f"<OverallStatusMessage>{_esc(status_message)}</OverallStatusMessage>"
                       f"<RequestID>{request_id}</RequestID>")

    # ------------------------------------------------------------ Retrieve

    def _op_retrieve(self, request: Obj, request_id: str) -> str:
        rr = request.get("RetrieveRequest")
        if not isinstance(rr, Obj):
            raise SoapFault("soap:Client", "RetrieveRequest is required.")
        continue_id = rr.text("ContinueRequest")
        if continue_id:
            return self._continue(continue_id, request_id)
        obj_type = rr.text("ObjectType")
        properties = [p for p in rr.all("Properties") if isinstance(p, str) and p]
        problem = self._check_retrieve(obj_type, properties)
        if problem:
            return _retrieve_msg(problem, request_id, "")
        allowed = field_names(obj_type) | DOTTED.get(obj_type, set())
        try:
            predicate = compile_filter(rr.get("Filter"), allowed)
        except (FilterError, ValueError) as exc:
            text = str(exc)
            return _retrieve_msg(text if text.startswith("Error") else f"Error: {text}", request_id, "")
        options = rr.get("Options")
        batch = _positive_int(options.get("BatchSize") if isinstance(options, Obj) else None) or PAGE_SIZE
        rows = self._rows(obj_type, rr.get("Filter"), predicate, properties)
        cursor = _Cursor(obj_type, rows, min(PAGE_SIZE, batch))
        return self._page(cursor, request_id)

    def _check_retrieve(self, obj_type: str, properties: list[str]) -> str:
        if obj_type not in RETRIEVABLE:
            return f"Error: The Request ObjectType '{obj_type}' is not retrievable."
        if not properties:
            return f"Error: The Request Properties are required for {obj_type}."
        allowed = field_names(obj_type) | DOTTED.get(obj_type, set())
        bad = [p for p in properties if p not in allowed]
        if bad:
            return f"Error: The Request Property(s) {', '.join(bad)} do not match with the fields of {obj_type} retrieve"
        return ""

    def _rows(self, obj_type: str, filter_part: Any, predicate: Callable[[dict], bool],
              properties: list[str]) -> Iterator[str]:
        if obj_type in ev.EVENT_OBJECTS:
            now_ts = self.store.clock.now_ts()
            self.store.apply_due_changes()
            with self.store.lock:
                blocks = list(self.store.blocks)
            return ev.iter_event_rows(blocks, obj_type, filter_part, predicate, properties, now_ts)
        keys = key_hint(filter_part, "SubscriberKey") if obj_type in ("Subscriber", "ListSubscriber") else None
        return self._object_rows(obj_type, predicate, properties, keys)

    def _object_rows(self, obj_type: str, predicate: Callable[[dict], bool], properties: list[str],
                     keys: list[str] | None = None) -> Iterator[str]:
        plain = [p for p in properties if "." not in p]
        nested: dict[str, set[str]] = {}
        for p in properties:
            if "." in p:
                head, _, tail = p.partition(".")
                nested.setdefault(head, set()).add(tail)
        only = set(plain) | set(nested)
        head = f'<Results xsi:type="{obj_type}">'
        for row in self.store.rows(obj_type, keys):
            if not predicate(row):
                continue
            values = row
            if nested:
                values = dict(row)
                for name, subs in nested.items():
                    if name in plain:
                        continue
                    value = row.get(name)
                    if isinstance(value, tuple):
                        values[name] = (value[0], {k: v for k, v in value[1].items() if k in subs})
                    elif isinstance(value, list):
                        values[name] = [(v[0], {k: x for k, x in v[1].items() if k in subs}) for v in value]
            yield f"{head}{render_fields(obj_type, values, only)}</Results>"

    def _page(self, cursor: _Cursor, request_id: str) -> str:
        rows = [cursor.pending] if cursor.pending is not None else []
        cursor.pending = None
        rows.extend(islice(cursor.rows, cursor.page_size - len(rows)))
        more = False
        if len(rows) == cursor.page_size:
            cursor.pending = next(cursor.rows, None)
            more = cursor.pending is not None
        if more:
            with self._cursor_lock:
                self._cursors[request_id] = cursor
                while len(self._cursors) > MAX_CURSORS:
                    self._cursors.popitem(last=False)
        return _retrieve_msg("MoreDataAvailable" if more else "OK", request_id, "".join(rows))

    def _continue(self, continue_id: str, request_id: str) -> str:
        with self._cursor_lock:
            cursor = self._cursors.get(continue_id)
        if cursor is None:
            return _retrieve_msg(f"Error: ContinueRequest '{continue_id}' is not valid or has expired.", request_id, "")
        with cursor.lock:
            cached = cursor.answers.get(continue_id)
            if cached is not None:  # the same page asked again (a retry after a lost reply)
                return cached.decode("utf-8")
            text = self._page(cursor, request_id)
            cursor.answers[continue_id] = text.encode("utf-8")
            while len(cursor.answers) > 2:
                cursor.answers.popitem(last=False)
            return text


def _content_type(soap_ns: str) -> str:
    return "application/soap+xml; charset=utf-8" if soap_ns == SOAP12_ENV else "text/xml; charset=utf-8"


def _retrieve_msg(status: str, request_id: str, rows: str) -> str:
    return message("RetrieveResponseMsg", f"<OverallStatus>{_esc(status)}</OverallStatus>"
                   f"<RequestID>{request_id}</RequestID>{rows}")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def _positive_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return number if number > 0 else 0


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None
