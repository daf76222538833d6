"""The CRM interface: the handful of operations the steps need, in the project's own types.

The one implementation for now is ``connector.crm.dataverse.DataverseCrmClient``
(Dynamics 365 / Dataverse Web API). Every method raises only errors from
``connector.errors``; reads are generators so memory stays flat.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Iterable, Iterator, Mapping, Sequence

from connector.crm.emails import EmailRefresh
from connector.errors import NotFoundError
from connector.models import (
    EspEmail,
    SendStatus,
    BounceUpdate,
    CampaignResponse,
    ColumnInfo,
    CrmTable,
    KpiValue,
    Recipient,
    RecordRef,
    SendRequest,
    SendRequestUpdate,
    SendTarget,
    Subscriber,
    WriteResult,
)


class CrmClient(abc.ABC):
    """Role interface for the CRM (system of record)."""

    @abc.abstractmethod
    def pending_send_requests(self, limit: int = 50) -> list[SendRequest]:
        """Send requests in status Pending, oldest first, at most ``limit``."""

    @abc.abstractmethod
    def claim_send_request(self, request: SendRequest) -> SendRequest | None:
        """Move a Pending request to Processing, guarded by its etag (If-Match).

        Returns the claimed request, or None when another worker or instance took it first.
        """

    def mark_importing(self, request: SendRequest) -> bool:
        """Processing -> Importing (the ESP imports the batch files), etag-guarded as the claim is.

        A refused write (412: the request changed since it was read, e.g. the connector wrote
        counts) is read back: still Processing -> written again with the new etag; already
        Importing -> done (a write of before a crash); anything else (cancelled, deleted) -> left
        as it is, False. Cosmetic: the caller logs a failure and goes on.
        """
        for _ in range(3):
            if request.status is SendStatus.IMPORTING:
                return True
            if request.status is not SendStatus.PROCESSING:
                return False
            if self.set_status_if_match(request, SendStatus.IMPORTING):
                return True
            current = self.get_send_request(request.id)
            if current is None:
                return False
            request = current
        return False

    def set_status_if_match(self, request: SendRequest, status: SendStatus) -> bool:
        """Write ``status`` guarded by the request's etag (If-Match); False on 412 / 404."""
        raise NotImplementedError(f"{type(self).__name__} cannot write a status under an etag")

    @abc.abstractmethod
    def get_send_request(self, request_id: str) -> SendRequest | None:
        """The send request by id, or None if it was deleted from CRM."""

    def send_request_exists(self, request_id: str) -> bool:
        """Whether the send request is still in CRM (cheaper than reading it with its targets)."""
        return self.get_send_request(request_id) is not None

    @abc.abstractmethod
    def update_send_request(self, request_id: str, update: SendRequestUpdate) -> None:
        """Write status, counts, job id and reason back to the send request."""

    @abc.abstractmethod
    def column_names(self, table: CrmTable) -> frozenset[str]:
        """Logical names of the columns the table has (``check-config --online`` checks the mapping)."""

    @abc.abstractmethod
    def role_names(self) -> frozenset[str]:
        """Names of the security roles defined in the organization."""

    @abc.abstractmethod
    def user_role_names(self, user_id: str) -> set[str]:
        """Names of the security roles the CRM user holds (directly or through teams)."""

    @abc.abstractmethod
    def iter_recipients(
        self, target: SendTarget, attributes: Mapping[CrmTable, Sequence[str]]
    ) -> Iterator[Recipient]:
        """Stream every recipient of one target, page by page (5,000 a page at most).

        ``attributes`` names the CRM columns to read per table (from the mapping sections).
        Lists (static and dynamic), a campaign's lists, single contacts, leads, accounts.
        """

    def iter_record_targets(
        self, targets: Sequence[SendTarget], attributes: Mapping[CrmTable, Sequence[str]]
    ) -> Iterator[Recipient]:
        """The records of several single-record targets (contact, lead, account), in target order.

        An implementation reads them in sets (Dataverse: ``$filter`` with ``In``); this default
        reads them one by one through ``iter_recipients``.
        """
        for target in targets:
            yield from self.iter_recipients(target, attributes)

    def missing_records(self, targets: Sequence[SendTarget]) -> list[SendTarget]:
        """The single-record targets (contact, lead, account) whose record does not exist.

        Asked before anything of a send is written; an implementation asks in sets (Dataverse:
        ``$filter`` with ``In``, the id column only); this default tries each one.
        """
        missing: list[SendTarget] = []
        for target in targets:
            try:
                next(iter(self.iter_recipients(target, {})), None)
            except NotFoundError:
                missing.append(target)
        return missing

    @abc.abstractmethod
    def find_records(self, ids: Sequence[str]) -> dict[str, RecordRef]:
        """Which table each id belongs to (contact, lead, account); unknown ids are absent.

        Used by tracking to turn a subscriber key (the CRM record id) into a record.
        """

    def refresh_email_catalogue(self, emails: Iterable[EspEmail], account: str, now: datetime) -> EmailRefresh:
        """Upsert the ESP's e-mails into the e-mail picker's table by customer key; rows of e-mails the
        ESP no longer has are marked deleted. A CRM without the table raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} has no e-mail picker table")

    def replace_preview_sample(self, request_id: str, sample: Sequence[Subscriber]) -> list[WriteResult]:
        """Replace the request's preview sample (the recipients shown with their mapped attributes)."""
        raise NotImplementedError(f"{type(self).__name__} cannot store a preview sample")

    def requests_in_status(self, status: SendStatus, limit: int = 50) -> list[SendRequest]:
        """Send requests in ``status`` (e.g. Preview requested), oldest first, with all their targets."""
        raise NotImplementedError(f"{type(self).__name__} cannot list requests by status")

    @abc.abstractmethod
    def create_campaign_responses(self, responses: Sequence[CampaignResponse]) -> list[WriteResult]:
        """Create campaign responses in bulk; idempotent on ``tracking_key`` (alternate key).

        A response whose tracking key already exists counts as ok. One result per input,
        keyed by tracking key.
        """

    @abc.abstractmethod
    def set_bounces(self, updates: Sequence[BounceUpdate]) -> list[WriteResult]:
        """Write last bounce date, type and job on contacts/leads. Never opts them out."""

    @abc.abstractmethod
    def set_opt_outs(self, refs: Sequence[RecordRef]) -> list[WriteResult]:
        """Set do-not-bulk-email on the records."""

    @abc.abstractmethod
    def iter_changes(
        self, table: CrmTable, columns: Sequence[str], delta_link: str | None
    ) -> Iterator[tuple[list[dict], list[str], str | None]]:
        """Change tracking: yields (changed rows, deleted ids, next delta link or None) per page.

        ``delta_link`` None starts tracking: every row of the table comes as changed (a full read,
        page by page), and the last page carries the first delta link. With a delta link: the rows
        created or updated since (a deactivation is an update: ``statecode`` changes), then the ids
        deleted since; the link keeps the columns it was made with (``columns`` is not read again:
        after a mapping change start over with None). Changed rows are the CRM's wire values
        (``<pk>`` always, ``@odata.etag``, the ``columns`` asked for, ``modifiedon`` if asked).
        Only the last page carries the new delta link; store it once that page is processed.
        A link the CRM no longer accepts (expired, or invalid) raises ``DeltaTokenExpired``
        (a PermanentPeerError with code ``delta_expired``): forget it and resync in full.
        """

    def update_records(self, table: CrmTable, updates: Sequence[tuple[str, Mapping[str, object]]]) -> list[WriteResult]:
        """Write columns of existing records (never creates one): the sync step's CRM-bound half.

        ``updates`` are (record id, {column: typed value}); one result per update, in order;
        a record that no longer exists comes back ok=False with code ``not_found``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot update records")

    def column_definitions(self, table: CrmTable) -> dict[str, ColumnInfo]:
        """What the table's columns are: type, maximum length, writable, option labels.

        The sync step checks values against it before it writes; a CRM that cannot say
        returns {} (values are then written as text and the CRM's refusal is the check).
        """
        return {}

    def tracking_key_status(self) -> tuple[str, str]:
        """(status, name) of the key ``create_campaign_responses`` writes by.

        A CRM that builds such keys in the background (Dataverse: EntityKeyIndexStatus)
        reports Pending, InProgress, Active, Failed or Missing; the tracking step starts only
        on Active. A CRM whose writes need no such key has nothing to wait for: Active.
        """
        return "Active", ""

    # -- KPI rows (the kpi step; docs/kpi.md) ---------------------------------------------
    def match_customers(self, table: CrmTable, column: str, values: Sequence[str]) -> dict[str, list[str]]:
        """``value (lower case) -> record ids`` of the active ``table`` records whose ``column`` holds it."""
        raise NotImplementedError(f"{type(self).__name__} does not match KPI customers")

    def upsert_kpis(self, customer_table: CrmTable, values: Sequence[KpiValue]) -> list[WriteResult]:
        """Create or update one KPI row per value, by its alternate key (customer, KPI name); active."""
        raise NotImplementedError(f"{type(self).__name__} does not write KPI rows")

    def remove_kpis(self, customer_table: CrmTable, refs: Sequence[tuple[str, str]],
                    *, delete: bool = False) -> list[WriteResult]:
        """Deactivate (or delete) the KPI rows of ``(customer id, kpi)``; a row already gone is ok."""
        raise NotImplementedError(f"{type(self).__name__} does not write KPI rows")

    def kpi_key_status(self, customer_table: CrmTable) -> tuple[str, str]:
        """(status, name) of the alternate key the KPI rows are written by (like ``tracking_key_status``)."""
        return "Active", ""

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release sessions and pools."""


def records_by_ref(refs: Iterable[RecordRef]) -> dict[CrmTable, list[str]]:
    """Group record ids by table, preserving order."""
    grouped: dict[CrmTable, list[str]] = {}
    for ref in refs:
        grouped.setdefault(ref.table, []).append(ref.id)
    return grouped


__all__ = ["CrmClient", "records_by_ref", "datetime"]
