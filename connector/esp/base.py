"""The ESP interface, in the project's own types.

The implementation for Salesforce Marketing Cloud is
``connector.esp.marketing_cloud.MarketingCloudEspClient`` (SOAP, zeep).

Rule for every implementation: a call that could start a send (or create an
object that could) is never retried blindly. Look the object up by the customer
key derived from the CRM send id first; create only when it is absent.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Iterator, Sequence

from connector.models import (
    EspSend,
    EventType,
    ImportStatus,
    Subscriber,
    SubscriberStatus,
    TrackingEvent,
    WriteResult,
)


class EspClient(abc.ABC):
    """Role interface for the email service provider."""

    @abc.abstractmethod
    def ensure_list(self, customer_key: str, name: str) -> str:
        """Find the List with this customer key, or create it. Returns the ESP list id."""

    @abc.abstractmethod
    def upsert_subscribers(self, subscribers: Sequence[Subscriber], list_id: str) -> list[WriteResult]:
        """Create-or-update subscribers and put them on the list; one result per subscriber.

        Per-object failures come back as results with ok=False and the ESP's message,
        never as an exception. Safe to repeat.
        """

    @abc.abstractmethod
    def subscriber_statuses(self, subscriber_keys: Sequence[str]) -> dict[str, SubscriberStatus]:
        """Current status of the subscribers that exist at the ESP (absent keys are new)."""

    @abc.abstractmethod
    def start_import(self, customer_key: str, file_name: str, list_id: str) -> str:
        """Find or create the ImportDefinition for an uploaded file, and start it once.

        Idempotent on ``customer_key`` once the ESP shows the import's results: an import that
        already ran is not started again (the step's durable start mark covers the ESP's
        delay before it shows one, ``connector.steps.start_guard``). Returns the import's task id.
        """

    @abc.abstractmethod
    def import_status(self, customer_key: str) -> ImportStatus:
        """State and row counts (and row errors) of the import with this key."""

    @abc.abstractmethod
    def profile_attributes(self) -> frozenset[str]:
        """Names of the subscriber (profile) attributes the ESP account has.

        A subscriber write naming any other attribute fails at the ESP, so the send step
        checks every ``[mapping.*]`` target against these before it writes anyone.
        """

    @abc.abstractmethod
    def find_email(self, customer_key: str) -> str | None:
        """The ESP id of the e-mail (content) with this customer key, None when there is none.

        Asked before a send request is claimed, so that an unknown e-mail key fails the request
        before any subscriber is written, and a credential or TLS problem holds it while Pending.
        """

    @abc.abstractmethod
    def find_send(self, customer_key: str) -> EspSend | None:
        """The send created under this customer key, if any."""

    @abc.abstractmethod
    def start_send(
        self, customer_key: str, list_id: str, email_key: str, send_classification_key: str, name: str
    ) -> EspSend:
        """Start the send under ``customer_key`` once: when a send already exists under the key it is
        returned, not started again (the implementation looks it up first, and looks again instead of
        repeating a start whose answer was lost). Never retried blindly."""

    @abc.abstractmethod
    def send_summary(self, job_id: str) -> EspSend | None:
        """Status and counters of a started send, in one call (Marketing Cloud: NumberSent,
        NumberDelivered, UniqueOpens, UniqueClicks, bounces, Unsubscribes, NumberExcluded ...
        as ``EspSend.counts``); None when the ESP does not show the send (yet)."""

    @abc.abstractmethod
    def iter_event_pages(
        self, event_type: EventType, since: datetime, until: datetime | None = None
    ) -> Iterator[list[TrackingEvent]]:
        """Tracking events with since < EventDate <= until, one list per ESP page (2,500 max).

        Datetimes in and out are timezone-aware UTC; the adapter converts from and to the
        ESP's Central Standard Time.
        """

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release sessions."""
