"""Salesforce Marketing Cloud (ExactTarget) adapter on the SOAP PartnerAPI.

Requests are built by zeep from the configured WSDL; replies are read with lxml
(``connector.esp.events.flatten``); transport, faults and retries live in
``connector.esp.soap``. Every object this adapter creates carries a customer key
chosen by the caller (derived from the CRM send id), and is looked up by that key
before anything is created, so a retry after a crash finds what an earlier
attempt made. Calls that could start a send are never repeated blindly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

import requests
import structlog
from lxml import etree

from connector.config import Config
from connector.errors import ConfigError, PeerError, PermanentPeerError, TransientPeerError
from connector.esp.base import EspClient
from connector.esp.mc_dataext import DataExtensionOps
from connector.esp.mc_subscribers import SubscriberSyncOps
from connector.esp.events import EVENT_OBJECTS, EVENT_PROPERTIES, events_from_rows, parse_esp_datetime, to_esp_datetime
from connector.esp.partner import PartnerApi, number, q, write_results
from connector.esp.partner import results as result_rows
from connector.esp.soap import SoapCaller
from connector.esp.soap_auth import OAuthAuth, SoapAuth, WsseAuth
from connector.esp.wsdl import load_client, wsdl_address
from connector.models import (
    EspEmail,
    EspSend,
    EventType,
    ImportStatus,
    Subscriber,
    SubscriberStatus,
    TrackingEvent,
    WriteResult,
)

log = structlog.get_logger(__name__)

_EMAIL_PROPERTIES = ("ID", "CustomerKey", "Name", "Subject", "Folder", "Status")
"""What the e-mail picker shows of an Email (retrievable in the WSDL's Email; Folder's answer is the
folder's name in the sandbox, unverified against a live account)."""

FTP_LOCATION_KEY = "ExactTarget Enhanced FTP"
"""Customer key of the Enhanced FTP file location every Marketing Cloud account has."""

ALREADY_ON_LIST = "12014"
STATUS_KEYS_PER_CALL = 500
_UPDATE_ADD = {"SaveOptions": {"SaveOption": [{"PropertyName": "*", "SaveAction": "UpdateAdd"}]}}
"""Save options of subscriber writes: add when new, update when there."""

_IMPORT_STATES = {
    "new": "queued", "queued": "queued", "scheduled": "queued",
    "processing": "processing", "iowork": "processing", "started": "processing", "running": "processing",
    "completed": "completed", "complete": "completed",
    "error": "error", "failed": "error", "canceled": "error", "cancelled": "error",
}

_SEND_COUNTS = {
    "NumberSent": "sent", "NumberDelivered": "delivered", "HardBounces": "hard_bounces",
    "SoftBounces": "soft_bounces", "OtherBounces": "other_bounces", "UniqueOpens": "unique_opens",
    "UniqueClicks": "unique_clicks", "Unsubscribes": "unsubscribes", "Duplicates": "duplicates",
    "InvalidAddresses": "invalid_addresses", "ExistingUndeliverables": "existing_undeliverables",
    "ExistingUnsubscribes": "existing_unsubscribes", "MissingAddresses": "missing_addresses",
    "NumberTargeted": "targeted", "NumberExcluded": "excluded", "NumberErrored": "errored",
}
_SEND_PROPERTIES = ("ID", "Status", "SendDate", "SentDate", "EmailName", *_SEND_COUNTS)


class MarketingCloudEspClient(SubscriberSyncOps, DataExtensionOps, EspClient):
    """``EspClient`` for Marketing Cloud over SOAP (zeep requests, lxml replies)."""

    def __init__(
        self, soap: SoapCaller, session: requests.Session, *, account: str = "default", chunk_size: int = 50
    ) -> None:
        self._soap = soap
        self._api = PartnerApi(soap)
        self._session = session
        self._account = account
        self._chunk_size = chunk_size

    @classmethod
    def from_config(cls, config: Config) -> "MarketingCloudEspClient":
        esp = config.esp
        if not esp.wsdl:
            raise ConfigError("[esp] wsdl is empty: give the tenant's etframework.wsdl URL or a local file",
                              section="esp", key="wsdl")
        verify: str | bool = str(esp.ca_bundle) if esp.ca_bundle else True
        timeout = config.timeouts.esp_seconds
        client = load_client(esp.wsdl, verify=verify, cache_dir=config.service.data_dir / "cache", timeout=timeout)
        session = requests.Session()
        session.verify = verify
        auth = _auth_from_config(config, session)
        endpoint = _endpoint_resolver(esp.endpoint, auth, wsdl_address(client))
        soap = SoapCaller(client, session, auth, endpoint, timeout=timeout, max_retries=esp.max_retries)
        return cls(soap, session, account=esp.name, chunk_size=config.sends.soap_chunk_size)

    def close(self) -> None:
        self._session.close()

    # -- lists and subscribers -----------------------------------------------------------

    def ensure_list(self, customer_key: str, name: str) -> str:
        found = self._api.find_by_key("List", customer_key, ("ID", "CustomerKey", "ListName"))
        if found:
            return found["ID"]
        new = self._api.type("List")(CustomerKey=customer_key, ListName=name[:100], Type="Private",
                                     Description="Recipients of one CRM send, created by the connector")
        try:
            result = self._api.create_one(new, f"List {customer_key!r}")
        except PeerError:
            # a concurrent or earlier attempt may have made it after all
            found = self._api.find_by_key("List", customer_key, ("ID", "CustomerKey", "ListName"))
            if found:
                return found["ID"]
            raise
        list_id = result.get("NewID") or result.get("Object.ID", "")
        if not list_id or list_id == "0":
            found = self._api.find_by_key("List", customer_key, ("ID",))
            list_id = found["ID"] if found else ""
        log.info("esp_list_created", peer="esp", customer_key=customer_key, list_id=list_id)
        return list_id

    def upsert_subscribers(self, subscribers: Sequence[Subscriber], list_id: str) -> list[WriteResult]:
        """One Create per ``[sends] soap_chunk_size`` subscribers (Marketing Cloud's limit is 50)."""
        results: list[WriteResult] = []
        for start in range(0, len(subscribers), self._chunk_size):
            chunk = subscribers[start:start + self._chunk_size]
            objects = [self._subscriber(s, list_id) for s in chunk]
            what = f"{len(objects)} Subscribers for List {list_id}"
            reply = self._soap.call("Create", safe=True, what=what, Options=_UPDATE_ADD, Objects=objects)
            results.extend(self._update_already_listed(chunk, self._write_results(chunk, result_rows(reply), reply),
                                                       list_id))
        return results

    def _update_already_listed(self, chunk: Sequence[Subscriber], results: list[WriteResult],
                               list_id: str) -> list[WriteResult]:
        """12014 "already on the list" rejects the whole object: repeat those as an Update."""
        again = [i for i, r in enumerate(results) if r.code == ALREADY_ON_LIST]
        if not again:
            return results
        subs = [chunk[i] for i in again]
        objects = [self._subscriber(s, list_id, action="update") for s in subs]
        reply = self._soap.call("Update", safe=True, what=f"{len(objects)} Subscribers on List {list_id}",
                                Options=_UPDATE_ADD, Objects=objects)
        fixed = self._write_results(subs, result_rows(reply), reply)
        merged = list(results)
        for index, result in zip(again, fixed):
            merged[index] = result
        return merged

    def _subscriber(self, sub: Subscriber, list_id: str, action: str = "create") -> Any:
        attribute = self._api.type("Attribute")
        membership = self._api.type("SubscriberList")(ID=int(list_id), Status="Active", Action=action)
        return self._api.type("Subscriber")(
            SubscriberKey=sub.subscriber_key,
            EmailAddress=sub.email,
            Attributes=[attribute(Name=k, Value="" if v is None else str(v)) for k, v in sub.attributes.items()],
            Lists=[membership],
        )

    @staticmethod
    def _write_results(
        subs: Sequence[Any], results: list[dict[str, str]], reply: etree._Element
    ) -> list[WriteResult]:
        return write_results([s.subscriber_key for s in subs], results, reply)

    def subscriber_statuses(self, subscriber_keys: Sequence[str]) -> dict[str, SubscriberStatus]:
        statuses: dict[str, SubscriberStatus] = {}
        keys = list(dict.fromkeys(subscriber_keys))
        for start in range(0, len(keys), STATUS_KEYS_PER_CALL):
            chunk = keys[start:start + STATUS_KEYS_PER_CALL]
            operator = "IN" if len(chunk) > 1 else "equals"
            by_key = self._api.simple("SubscriberKey", operator, chunk)
            rows = self._api.rows("Subscriber", ("SubscriberKey", "Status"), by_key, f"{len(chunk)} Subscribers")
            for row in rows:
                try:
                    statuses[row["SubscriberKey"]] = SubscriberStatus(row.get("Status", ""))
                except (KeyError, ValueError):
                    log.warning("esp_subscriber_status_unknown", peer="esp", subscriber_key=row.get("SubscriberKey"),
                                status=row.get("Status"))
        return statuses

    def profile_attributes(self) -> frozenset[str]:
        """Describe Subscriber: its ExtendedProperties are the account's profile attributes."""
        reply = self._soap.call("Describe", safe=True, what="Subscriber (profile attributes)",
                                DescribeRequests={"ObjectDefinitionRequest": [{"ObjectType": "Subscriber"}]})
        path = f"{q('ObjectDefinition')}/{q('ExtendedProperties')}/{q('ExtendedProperty')}"
        names = frozenset(name.strip() for name in (p.findtext(q("Name")) for p in reply.iterfind(path)) if name)
        log.debug("esp_attributes_read", peer="esp", esp_account=self._account, count=len(names))
        return names

    # -- imports -------------------------------------------------------------------------

    def _import_summaries(self, customer_key: str) -> list[dict[str, str]]:
        props = ("ImportDefinitionCustomerKey", "StartDate", "EndDate", "NumberSuccessful", "NumberDuplicated",
                 "NumberErrors", "TotalRows", "ImportStatus", "TaskResultID")
        by_key = self._api.simple("ImportDefinitionCustomerKey", "equals", [customer_key])
        rows = list(self._api.rows("ImportResultsSummary", props, by_key, f"ImportResultsSummary {customer_key!r}"))
        return sorted(rows, key=lambda r: number(r.get("TaskResultID", "")))

    def start_import(self, customer_key: str, file_name: str, list_id: str) -> str:
        started = self._import_summaries(customer_key)
        if started:
            log.info("esp_import_already_started", peer="esp", customer_key=customer_key)
            return started[-1].get("TaskResultID", "")
        if self._api.find_by_key("ImportDefinition", customer_key, ("ObjectID", "CustomerKey")) is None:
            self._create_import_definition(customer_key, file_name, list_id)
        try:
            task_id = self._api.perform_start("ImportDefinition", customer_key)
        except TransientPeerError:
            started = self._import_summaries(customer_key)
            if started:
                return started[-1].get("TaskResultID", "")
            raise
        log.info("esp_import_started", peer="esp", customer_key=customer_key, file=file_name, task_id=task_id)
        return task_id

    def _create_import_definition(self, customer_key: str, file_name: str, list_id: str) -> None:
        definition = self._api.type("ImportDefinition")(
            Name=customer_key,
            CustomerKey=customer_key,
            Description=f"Batch file {file_name}, created by the connector",
            AllowErrors=True,
            DestinationObject=self._api.type("List")(ID=int(list_id)),
            FieldMappingType="InferFromColumnHeadings",
            FileSpec=file_name,
            FileType="CSV",
            RetrieveFileTransferLocation=self._api.type("FileTransferLocation")(CustomerKey=FTP_LOCATION_KEY),
            SubscriberImportType="Email",
            UpdateType="AddAndUpdate",
        )
        try:
            self._api.create_one(definition, f"ImportDefinition {customer_key!r}")
        except PeerError:
            if self._api.find_by_key("ImportDefinition", customer_key, ("ObjectID",)) is None:
                raise

    def import_status(self, customer_key: str) -> ImportStatus:
        summaries = self._import_summaries(customer_key)
        if not summaries:
            return ImportStatus(customer_key=customer_key, state="queued", message="not started yet at the ESP",
                                found=False)
        row = summaries[-1]
        raw = row.get("ImportStatus", "")
        state = _IMPORT_STATES.get(raw.replace(" ", "").lower(), "processing")

        def count(name: str) -> int:
            return number(row.get(name, ""))

        return ImportStatus(
            customer_key=customer_key,
            state=state,
            rows_total=count("TotalRows"),
            rows_ok=count("NumberSuccessful"),
            rows_error=count("NumberErrors"),
            message=f"ImportStatus {raw}" if raw else "",
        )

    # -- sends ---------------------------------------------------------------------------

    def find_email(self, customer_key: str) -> str | None:
        email = self._api.find_by_key("Email", customer_key, ("ID", "CustomerKey", "Name"))
        if email is None or not number(email.get("ID", "")):
            return None
        return str(number(email["ID"]))

    def iter_emails(self) -> Iterator[EspEmail]:
        """Retrieve Email without a filter (the whole catalogue, 2,500 a page, ContinueRequest)."""
        for row in self._api.rows("Email", _EMAIL_PROPERTIES, None, "the e-mail catalogue"):
            key = (row.get("CustomerKey") or "").strip()
            if key:
                yield EspEmail(key, row.get("Name") or key, str(number(row.get("ID", ""))), row.get("Subject", ""),
                               row.get("Folder", ""), row.get("Status", ""))

    def find_send(self, customer_key: str) -> EspSend | None:
        rows = list(self._api.rows("Send", _SEND_PROPERTIES,
                               self._api.simple("EmailSendDefinition.CustomerKey", "equals", [customer_key]),
                               f"Send of EmailSendDefinition {customer_key!r}"))
        if not rows:
            return None
        row = max(rows, key=lambda r: number(r.get("ID", "")))
        return _send_from_row(row, customer_key)

    def start_send(
        self, customer_key: str, list_id: str, email_key: str, send_classification_key: str, name: str
    ) -> EspSend:
        existing = self.find_send(customer_key)
        if existing is not None:
            log.info("esp_send_found", peer="esp", customer_key=customer_key, job_id=existing.job_id)
            return existing
        if self._api.find_by_key("EmailSendDefinition", customer_key, ("ObjectID", "CustomerKey")) is None:
            self._create_send_definition(customer_key, list_id, email_key, send_classification_key, name)
        try:
            job_id = self._api.perform_start("EmailSendDefinition", customer_key)
        except TransientPeerError as exc:
            # the request may have reached the ESP: look, never repeat
            found = self.find_send(customer_key)
            if found is not None:
                log.info("esp_send_found_after_error", peer="esp", customer_key=customer_key, job_id=found.job_id)
                return found
            raise TransientPeerError(
                f"Marketing Cloud start of send {customer_key!r} did not answer ({exc}) and the ESP does not show a "
                "send under that key yet (a started send is retrievable only after a while): the next run looks "
                "again, for up to [esp] visibility_minutes, before starting it", peer="esp", operation="Perform",
            ) from exc
        if not job_id:
            found = self.find_send(customer_key)
            if found is not None:
                return found
            raise PermanentPeerError(f"Marketing Cloud started send {customer_key!r} but returned no job id",
                                     peer="esp", operation="Perform")
        log.info("esp_send_started", peer="esp", customer_key=customer_key, job_id=job_id)
        return EspSend(customer_key=customer_key, job_id=job_id, status="Started")

    def _create_send_definition(
        self, customer_key: str, list_id: str, email_key: str, send_classification_key: str, name: str
    ) -> None:
        email_id = self.find_email(email_key)
        if email_id is None:
            raise PermanentPeerError(
                f"Marketing Cloud has no Email with customer key {email_key!r}: set the send request's email key "
                "or [sends] default_email_key to an existing Email", peer="esp", operation="Retrieve",
            )
        audience = self._api.type("SendDefinitionList")(List=self._api.type("List")(ID=int(list_id)),
                                                 SendDefinitionListType="SourceList")
        definition = self._api.type("EmailSendDefinition")(
            Name=name[:100] or customer_key,
            CustomerKey=customer_key,
            Description="Released from CRM by the connector",
            SendClassification=self._api.type("SendClassification")(CustomerKey=send_classification_key),
            SendDefinitionList=[audience],
            Email=self._api.type("Email")(ID=int(email_id)),
        )
        try:
            self._api.create_one(definition, f"EmailSendDefinition {customer_key!r}")
        except PeerError:
            if self._api.find_by_key("EmailSendDefinition", customer_key, ("ObjectID",)) is None:
                raise

    def send_summary(self, job_id: str) -> EspSend | None:
        """The Send's status and counters in one Retrieve (None: not retrievable, e.g. just started)."""
        by_id = self._api.simple("ID", "equals", [str(job_id)])
        rows = list(self._api.rows("Send", _SEND_PROPERTIES, by_id, f"Send {job_id}"))
        return _send_from_row(rows[0], "") if rows else None

    # -- tracking ------------------------------------------------------------------------

    def iter_event_pages(
        self, event_type: EventType, since: datetime, until: datetime | None = None
    ) -> Iterator[list[TrackingEvent]]:
        object_type = EVENT_OBJECTS[event_type]
        filter_part = self._api.simple("EventDate", "greaterThan", dates=[to_esp_datetime(since)])
        if until is not None:
            upper = self._api.simple("EventDate", "lessThanOrEqual", dates=[to_esp_datetime(until)])
            filter_part = self._api.and_(filter_part, upper)
        pages = self._api.pages(object_type, EVENT_PROPERTIES[event_type], filter_part, object_type)
        for page_no, rows in enumerate(pages, 1):
            skipped: list[Mapping[str, str]] = []
            events = [
                e for e in events_from_rows(event_type, rows, skipped)
                if e.event_time > since and (until is None or e.event_time <= until)
            ]
            if skipped:
                log.warning("esp_events_without_key", peer="esp", event_type=event_type.value, count=len(skipped))
            log.debug("tracking_page_fetched", peer="esp", esp_account=self._account, event_type=event_type.value,
                      page=page_no, count=len(events))
            yield events


def _send_from_row(row: Mapping[str, str], customer_key: str) -> EspSend:
    counts = {name: int(row[prop]) for prop, name in _SEND_COUNTS.items() if row.get(prop, "").lstrip("-").isdigit()}
    created = None
    for prop in ("SentDate", "SendDate"):
        if row.get(prop):
            created = parse_esp_datetime(row[prop])
            break
    return EspSend(customer_key=customer_key, job_id=row.get("ID", ""), status=row.get("Status", ""),
                   created=created, counts=counts)


def _auth_from_config(config: Config, session: requests.Session) -> SoapAuth:
    esp = config.esp
    if esp.auth == "wsse":
        if not esp.username or esp.password is None:
            raise ConfigError("[esp] auth = wsse needs [esp] username and a password (CONNECTOR_ESP_PASSWORD)",
                              section="esp", key="password")
        return WsseAuth(esp.username, esp.password.get_secret_value())
    if not esp.client_id or esp.client_secret is None or not esp.auth_url:
        raise ConfigError("[esp] auth = oauth needs [esp] auth_url, client_id and a client secret "
                          "(CONNECTOR_ESP_CLIENT_SECRET)", section="esp", key="client_secret")
    return OAuthAuth(session, esp.auth_url, esp.client_id, esp.client_secret.get_secret_value(),
                     account_id=esp.account_id, timeout=config.timeouts.esp_seconds)


def _endpoint_resolver(configured: str, auth: SoapAuth, from_wsdl: str):  # noqa: ANN202 - small closure
    if configured:
        return lambda: configured
    if isinstance(auth, OAuthAuth):
        return lambda: (auth.soap_instance_url.rstrip("/") + "/Service.asmx") if auth.soap_instance_url else from_wsdl
    return lambda: from_wsdl
