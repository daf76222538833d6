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
from typing import Iterator, Mapping, Sequence

from connector.models import (
    EspEmail,
    DataExtensionInfo,
    EspSend,
    EspSubscriberState,
    EventType,
    ImportStatus,
    Subscriber,
    SubscriberStatus,
    SubscriberUpdate,
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
        delay before it shows one, ``connector.steps.send.start_guard``). Returns the import's task id.
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

    def iter_emails(self) -> Iterator[EspEmail]:
        """Every e-mail of the account's catalogue (name, key, subject, folder, status), page by page;
        the e-mail picker in CRM is kept in step with it. An ESP without a catalogue raises
        NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} has no e-mail catalogue")

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

    # -- subscriber sync (optional: an ESP without it raises NotImplementedError) ---------------

    def iter_subscribers_modified_since(
        self, since: datetime, attributes: Sequence[str], until: datetime | None = None
    ) -> Iterator[list[EspSubscriberState]]:
        """Subscribers whose ESP modified date is after ``since`` (and at or before ``until``),
        one list per ESP page, with their e-mail, status, the named profile ``attributes``
        (absent ones as "") and the modified date.

        Datetimes in and out are timezone-aware UTC. A subscriber changed again while the pages
        are read may come twice or in a later run: the caller keeps a watermark with overlap.
        Raises PermanentPeerError for an attribute the account lacks (named in the message).
        """
        raise NotImplementedError(f"{type(self).__name__} does not offer subscriber sync")

    def update_subscribers(self, updates: Sequence[SubscriberUpdate]) -> list[WriteResult]:
        """Write attributes / e-mail / status to subscribers that exist; one result per update, in order.

        Never creates a subscriber and never touches list membership. A subscriber the ESP refuses
        (unknown key, malformed e-mail, a value its attribute type refuses ...) comes back as
        ok=False with the ESP's message and code; the others are written. Safe to repeat.
        """
        raise NotImplementedError(f"{type(self).__name__} does not offer subscriber sync")

    def find_lists(self, list_keys: Sequence[str]) -> dict[str, str]:
        """The lists of the account with these customer keys: customer key -> list name (a key the
        account lacks is absent). Read-only; ``connector check-config --online`` checks
        ``[sync] synced_lists`` with it."""
        raise NotImplementedError(f"{type(self).__name__} does not offer subscriber sync")

    def remove_from_lists(self, subscriber_keys: Sequence[str], list_keys: Sequence[str]) -> list[WriteResult]:
        """Take each subscriber off the lists named by customer key; one result per key, in order.

        The subscriber stays in the account (status and attributes untouched) and on other lists.
        A subscriber not on them, or unknown, is ok with nothing written: safe to repeat. Raises
        PeerSetupError for a list key the account lacks (named) or for All Subscribers.
        """
        raise NotImplementedError(f"{type(self).__name__} does not offer subscriber sync")

    def data_extension(self, customer_key: str) -> DataExtensionInfo | None:
        """The data extension with this customer key (fields, primary key, sendable relationship),
        or None when the account has none."""
        raise NotImplementedError(f"{type(self).__name__} does not offer data extensions")

    def iter_data_extension_rows(
        self, customer_key: str, fields: Sequence[str], *, modified_field: str | None = None,
        since: datetime | None = None, until: datetime | None = None,
    ) -> Iterator[list[dict[str, str]]]:
        """Rows of a data extension, one list per ESP page (2,500 at most), with the named ``fields``.

        With ``modified_field`` (a Date field of the data extension) and ``since``: only rows whose
        field is after ``since`` (and at or before ``until``). Values are text; Date fields come as
        ISO 8601 UTC (``2026-01-31T12:00:00Z``), blank as "". Raises PermanentPeerError when the
        data extension or a field does not exist.
        """
        raise NotImplementedError(f"{type(self).__name__} does not offer data extensions")

    def upsert_data_extension_rows(
        self, customer_key: str, rows: Sequence[Mapping[str, str]]
    ) -> list[WriteResult]:
        """Insert-or-update rows by the data extension's primary key; one result per row, in order,
        keyed by ``DataExtensionInfo.row_key``. A row the ESP refuses (missing primary key, a value
        too long or of the wrong type, an unknown field) is ok=False with the ESP's message; the
        others are written. Safe to repeat."""
        raise NotImplementedError(f"{type(self).__name__} does not offer data extensions")

    def delete_data_extension_rows(
        self, customer_key: str, keys: Sequence[Mapping[str, str]]
    ) -> list[WriteResult]:
        """Delete rows by their primary-key values; one result per key, in order. A row that is
        already gone is ok (a repeat after a lost reply must not fail)."""
        raise NotImplementedError(f"{type(self).__name__} does not offer data extensions")

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release sessions."""
