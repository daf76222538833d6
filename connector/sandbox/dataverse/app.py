"""The Dataverse sandbox as a WSGI app: Entra ID authority + Web API ``/api/data/v9.2/``.

Every Web API request is authenticated (bearer token from the sandbox authority),
counted against the service-protection limits (``protection``: requests, execution
time charged per operation, concurrency; 429 + ``Retry-After`` + the real error codes),
then routed: service document, ``$metadata``, ``$batch``, ``WhoAmI``,
metadata (``EntityDefinitions``, ``RelationshipDefinitions``) and entity sets.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import structlog

from connector.sandbox.dataverse.batch import run_batch
from connector.sandbox.dataverse.entra import EntraAuthority
from connector.sandbox.dataverse.http import API_VERSIONS, Request, Response, decode_path, parse_query, parse_segment, split_path, status_line
from connector.sandbox.dataverse.keys import path_refusal, url_refusal
from connector.sandbox.dataverse.metadata import KeyActivation, Metadata
from connector.sandbox.dataverse.protection import (
    Limits, ServiceProtection, expected_cost, fingerprint, operation_cost,
)
from connector.sandbox.dataverse.records import Records
from connector.sandbox.dataverse.store import DataverseStore, StoreError
from connector.sandbox.faults import FaultKnobs

log = structlog.get_logger(__name__)


class DataverseApp:
    def __init__(self, store: DataverseStore, authority: EntraAuthority, faults: FaultKnobs,
                 limits: Limits | None = None) -> None:
        self.store = store
        self.authority = authority
        self.faults = faults
        self.limits = limits or Limits()
        self.protection = ServiceProtection(self.limits)
        self._cost = threading.local()  # execution time of the request this thread is serving
        self.key_activation = KeyActivation()
        self.org_url = ""
        self.records: Records | None = None
        self.metadata: Metadata | None = None
        self.app_user_id = ""
        self.business_unit_id = ""
        self.requests = 0

    def bind(self, org_url: str) -> None:
        self.org_url = org_url
        self.records = Records(self.store, org_url)
        self.records.default_owner = self.app_user_id
        self.metadata = Metadata(self.store, org_url, clock=self.protection.now, activation=self.key_activation)

    # -- WSGI ----------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        if not path.startswith("/api/"):
            resp = Response.error(404, "0x80060888", f"Resource not found: {path}")
        else:
            resp = self.web_api(environ)
        start_response(status_line(resp.status), resp.headers)
        return [resp.body]

    def web_api(self, environ: dict) -> Response:
        raw_uri = environ.get("RAW_URI") or environ["PATH_INFO"]
        raw_path, raw_query = decode_path(raw_uri)
        refused = url_refusal(self.org_url + raw_uri) or path_refusal(raw_path)  # IIS, before Dataverse
        if refused is not None:
            return refused
        parts = raw_path.split("/", 4)  # '', 'api', 'data', 'v9.2', rest
        if len(parts) < 4 or parts[2] != "data" or parts[3] not in API_VERSIONS:
            return Response.error(404, "0x80060888", f"Resource not found for the segment '{raw_path}'.")
        token, why = self.authority.check(environ.get("HTTP_AUTHORIZATION"))
        if token is None:
            # as Dataverse: no body, the reason and the authority in the challenge header
            challenge = (f"Bearer error=invalid_token, error_description={why}, authorization_uri="
                         f"{self.authority.base_url}/{self.authority.tenant_id}/oauth2/authorize,"
                         f" resource_id={self.org_url}/")
            return Response.empty(401, [("WWW-Authenticate", challenge)])
        caller = token.object_id
        if self.faults.take("throttle"):
            return Response.error(429, "0x80072322", "Number of requests exceeded the limit of 6000 over time"
                                  " window of 300 seconds.",
                                  [("Retry-After", str(max(1, math.ceil(self.faults.seconds("throttle", 1)))))])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        expected = expected_cost(self.limits.costs, environ["REQUEST_METHOD"], parts[4] if len(parts) > 4 else "",
                                 body)
        blocked = self.protection.enter(caller, fingerprint(environ["REQUEST_METHOD"], raw_path + "?" + raw_query,
                                                            body), expected)
        if blocked is not None:
            return blocked
        started = time.monotonic()
        self._cost.total = 0.0
        resp: Response | None = None
        try:
            headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
            if environ.get("CONTENT_TYPE"):
                headers["content-type"] = environ["CONTENT_TYPE"]
            req = Request(environ["REQUEST_METHOD"], parts[4] if len(parts) > 4 else "", parse_query(raw_query),
                          raw_query, headers, body, version=parts[3], caller=caller)
            with self.store.lock:
                self.requests += 1
            resp = self.dispatch(req)
            return resp
        finally:
            cost = self._cost.total
            self.protection.hold(started, cost)
            limit_headers = self.protection.leave(caller, cost - expected)
            if resp is not None:
                resp.headers.extend(limit_headers)

    def charge(self, req: Request, resp: Response) -> None:
        """Add one operation's execution time (``Costs``) to the current request's."""
        self._cost.total = getattr(self._cost, "total", 0.0) + operation_cost(self.limits.costs, req, resp)

    # -- routing --------------------------------------------------------------------
    def dispatch(self, req: Request) -> Response:
        try:
            resp = self._route(req)
        except StoreError as exc:
            resp = Response.error(exc.status, exc.code, exc.message)
        self.charge(req, resp)
        return resp

    def _route(self, req: Request) -> Response:
        rec, meta = self.records, self.metadata
        assert rec is not None and meta is not None
        meta.advance_keys()
        segs = split_path(req.path)
        api = f"{self.org_url}/api/data/{req.version}/"
        if not segs:
            return Response.json(200, {"@odata.context": f"{api}$metadata", "value": [
                {"name": e.entity_set, "kind": "EntitySet", "url": e.entity_set}
                for e in self.store.schema.entities.values()]})
        first = segs[0]
        if first == "$metadata":
            return Response(200, [("Content-Type", "application/xml"), ("OData-Version", "4.0")], meta.csdl())
        if first == "$batch":
            if req.in_batch:
                raise StoreError(400, "0x80060888", "Nested $batch requests are not supported.")
            if req.method != "POST":
                raise StoreError(405, "0x80060888", "$batch needs POST.")
            return run_batch(req, self.store, self.dispatch)
        if first.replace("Microsoft.Dynamics.CRM.", "") == "ReactivateEntityKey" and req.method == "POST":
            return meta.reactivate_key(req)
        if first.replace("Microsoft.Dynamics.CRM.", "") == "InsertOptionValue" and req.method == "POST":
            return meta.insert_option_value(req)
        if first.replace("Microsoft.Dynamics.CRM.", "") == "PublishXml" and req.method == "POST":
            return rec.customizations.publish_xml(req)
        if first in ("WhoAmI", "WhoAmI()"):
            return Response.json(200, {"@odata.context": f"{api}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                                       "BusinessUnitId": self.business_unit_id, "UserId": self.app_user_id,
                                       "OrganizationId": self.store.org_id})
        name, key = parse_segment(first)
        if name in ("EntityDefinitions", "RelationshipDefinitions"):
            return meta.handle(req, segs)
        e = self.store.entity_for_set(name)
        if key is None:
            if len(segs) == 1:
                if req.method == "GET":
                    return rec.query(req, e)
                if req.method == "POST":
                    return rec.post(req, e)
                raise StoreError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on a collection.")
            if segs[1] == "$count" and req.method == "GET":
                return rec.count(req, e)
            action = segs[1].replace("Microsoft.Dynamics.CRM.", "")
            if action in ("CreateMultiple", "UpdateMultiple", "UpsertMultiple") and req.method == "POST":
                return rec.bulk(req, e, action)
            raise StoreError(404, "0x80060888", f"Resource not found for the segment '{segs[1]}'.")
        if len(segs) == 1:
            handler = {"GET": rec.get_one, "PATCH": rec.patch, "DELETE": rec.delete}.get(req.method)
            if handler is None:
                raise StoreError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on a record.")
            return handler(req, e, key)
        second = segs[1]
        if second.replace("Microsoft.Dynamics.CRM.", "") == "AddMemberList" and e.logical_name == "list":
            return rec.add_member_list(req, e, key)
        if e.by_wire_name(second) and len(segs) == 2:
            return rec.property(req, e, key, second)
        return rec.navigation(req, e, key, second, segs[2:])
