"""Subscriber sync on Marketing Cloud: subscribers changed since a date, and updates to them.

Marketing Cloud does not let a Retrieve of ``Subscriber`` ask for or filter on
``ModifiedDate`` (its Describe marks it not retrievable), so "changed since" is read
the way tap-exacttarget reads it: ``ListSubscriber`` rows of the account's
"All Subscribers" list filtered on their ``ModifiedDate``, then the subscribers
themselves (e-mail, status, profile attributes) by ``SubscriberKey IN`` a page's keys.
Mixed into ``MarketingCloudEspClient``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterator, Sequence

import structlog

from connector.errors import PermanentPeerError, PeerSetupError
from connector.esp.events import parse_esp_datetime, to_esp_datetime
from connector.esp.partner import PartnerApi, q, write_results
from connector.esp.partner import results as result_rows
from connector.esp.soap import SoapCaller
from connector.models import EspSubscriberState, SubscriberStatus, SubscriberUpdate, WriteResult

log = structlog.get_logger(__name__)

ALL_SUBSCRIBERS = "All Subscribers"
"""ListName of the list every subscriber of the account is on."""
KEYS_PER_RETRIEVE = 500
"""SubscriberKeys per ``IN`` filter when the subscribers of a page are read."""


def ceil_second(value: datetime) -> datetime:
    """An upper bound for a filter (whole seconds, CST): rounded *up*, so a ``lessThanOrEqual`` keeps
    everything up to ``value``; the adapter trims the extra fraction of a second itself."""
    whole = to_esp_datetime(value)
    return whole + timedelta(seconds=1) if value.microsecond else whole


class SubscriberSyncOps:
    """``iter_subscribers_modified_since`` and ``update_subscribers`` (see ``EspClient``)."""

    _api: PartnerApi
    _soap: SoapCaller
    _chunk_size: int
    _account: str
    _all_subscribers_id: str | None = None

    def _all_subscribers(self) -> str:
        if self._all_subscribers_id is None:
            rows = list(self._api.rows("List", ("ID", "ListName"), self._api.simple("ListName", "equals",
                                                                                    [ALL_SUBSCRIBERS]),
                                       f"List {ALL_SUBSCRIBERS!r}"))
            if len(rows) != 1 or not rows[0].get("ID"):
                raise PermanentPeerError(f"Marketing Cloud account {self._account!r} shows {len(rows)} lists named "
                                         f"{ALL_SUBSCRIBERS!r} (one expected)", peer="esp", operation="Retrieve")
            self._all_subscribers_id = rows[0]["ID"]
        return self._all_subscribers_id

    def _known_attributes(self, attributes: Sequence[str]) -> dict[str, str]:
        """Wanted name -> the account's spelling (names compare without case, as the service does)."""
        have = {name.casefold(): name for name in self.profile_attributes()}  # type: ignore[attr-defined]
        missing = [a for a in attributes if a.casefold() not in have]
        if missing:
            raise PeerSetupError(f"Marketing Cloud account {self._account!r} has no subscriber attribute(s) "
                                 f"{', '.join(map(repr, missing))}: create them or change the [sync.*] rules",
                                 peer="esp", operation="Describe")
        return {a: have[a.casefold()] for a in attributes}

    def iter_subscribers_modified_since(
        self, since: datetime, attributes: Sequence[str], until: datetime | None = None
    ) -> Iterator[list[EspSubscriberState]]:
        names = self._known_attributes(attributes)
        api = self._api
        window = api.and_(api.simple("ListID", "equals", [self._all_subscribers()]),
                          api.simple("ModifiedDate", "greaterThan", dates=[to_esp_datetime(since)]))
        if until is not None:
            window = api.and_(window, api.simple("ModifiedDate", "lessThanOrEqual", dates=[ceil_second(until)]))
        pages = api.pages("ListSubscriber", ("SubscriberKey", "Status", "ModifiedDate"), window,
                          "ListSubscribers of All Subscribers by ModifiedDate")
        for page_no, rows in enumerate(pages, 1):
            modified: dict[str, datetime] = {}
            for row in rows:
                if row.get("SubscriberKey") and row.get("ModifiedDate"):
                    when = parse_esp_datetime(row["ModifiedDate"])
                    if when > since and (until is None or when <= until):
                        modified[row["SubscriberKey"]] = when
            states = list(self._states(modified, names))
            log.debug("esp_subscribers_page_fetched", peer="esp", esp_account=self._account, page=page_no,
                      count=len(states))
            yield states

    def _states(self, modified: dict[str, datetime], names: dict[str, str]) -> Iterator[EspSubscriberState]:
        keys = list(modified)
        wanted = {spelled.casefold(): asked for asked, spelled in names.items()}
        for start in range(0, len(keys), KEYS_PER_RETRIEVE):
            chunk = keys[start:start + KEYS_PER_RETRIEVE]
            found: dict[str, tuple[str, str, dict[str, str]]] = {}
            for page in self._api.element_pages("Subscriber", ("SubscriberKey", "EmailAddress", "Status"),
                                                self._api.in_("SubscriberKey", chunk), f"{len(chunk)} Subscribers"):
                for element in page:
                    key, email, status, attributes = _subscriber_fields(element, wanted)
                    found[key] = (email, status, attributes)
            for key in chunk:
                if key not in found:  # deleted between the two reads: the next run sees it gone
                    continue
                email, status, attributes = found[key]
                try:
                    known: SubscriberStatus | None = SubscriberStatus(status)
                except ValueError:
                    known = None
                yield EspSubscriberState(subscriber_key=key, email=email, status=known,
                                         attributes={asked: attributes.get(asked, "") for asked in names},
                                         modified=modified[key])

    def update_subscribers(self, updates: Sequence[SubscriberUpdate]) -> list[WriteResult]:
        """Update (never UpdateAdd: an unknown key is an error, 12001) in chunks of ``soap_chunk_size``."""
        out: list[WriteResult] = []
        for start in range(0, len(updates), self._chunk_size):
            chunk = updates[start:start + self._chunk_size]
            objects = [self._update_object(u) for u in chunk]
            reply = self._soap.call("Update", safe=True, what=f"{len(objects)} Subscribers", Options={},
                                    Objects=objects)
            out.extend(write_results([u.subscriber_key for u in chunk], result_rows(reply), reply))
        return out

    def remove_from_lists(self, subscriber_keys: Sequence[str], list_keys: Sequence[str]) -> list[WriteResult]:
        """Take the subscribers off the lists (customer keys): an Update of each Subscriber with a
        ``Lists`` entry ``SubscriberList{ID, Action="delete"}`` per list it is on (Salesforce,
        "Manage Subscribers On Lists"). The memberships are read first (``ListSubscriber``), so a
        subscriber on none of them (or unknown) is ok without a write: safe to repeat."""
        list_ids = self._list_ids(list_keys)
        on: dict[str, list[str]] = {}
        for start in range(0, len(subscriber_keys), KEYS_PER_RETRIEVE):
            chunk = list(subscriber_keys[start:start + KEYS_PER_RETRIEVE])
            where = self._api.and_(self._api.in_("SubscriberKey", chunk), self._api.in_("ListID", list(list_ids)))
            for row in self._api.rows("ListSubscriber", ("SubscriberKey", "ListID"), where,
                                      f"ListSubscribers of {len(chunk)} subscribers"):
                if row.get("SubscriberKey") and row.get("ListID"):
                    on.setdefault(row["SubscriberKey"], []).append(row["ListID"])
        results = {key: WriteResult(key, True) for key in subscriber_keys if key not in on}
        keys = [key for key in subscriber_keys if key in on]
        entry, subscriber = self._api.type("SubscriberList"), self._api.type("Subscriber")
        for start in range(0, len(keys), self._chunk_size):
            chunk = keys[start:start + self._chunk_size]
            objects = [subscriber(SubscriberKey=key, Lists=[entry(ID=int(i), Action="delete") for i in on[key]])
                       for key in chunk]
            reply = self._soap.call("Update", safe=True, what=f"{len(objects)} Subscribers off lists", Options={},
                                    Objects=objects)
            results.update((r.key, r) for r in write_results(chunk, result_rows(reply), reply))
        return [results[key] for key in subscriber_keys]

    def find_lists(self, list_keys: Sequence[str]) -> dict[str, str]:
        """Customer key -> ListName of the account's lists with these keys (see ``EspClient``)."""
        return {key: row.get("ListName", "") for key, row in self._list_rows(list_keys).items()}

    def _list_rows(self, list_keys: Sequence[str]) -> dict[str, dict[str, str]]:
        """Customer key -> the List's ID, CustomerKey and ListName, for the keys the account has."""
        if not list_keys:
            return {}
        rows = self._api.rows("List", ("ID", "CustomerKey", "ListName"), self._api.in_("CustomerKey", list(list_keys)),
                              f"{len(list_keys)} Lists")
        return {row.get("CustomerKey", ""): row for row in rows}

    def _list_ids(self, list_keys: Sequence[str]) -> dict[str, str]:
        """List ID -> customer key; a key the account lacks, or All Subscribers, is a setup error."""
        found = self._list_rows(list_keys)
        rows = list(found.values())
        missing = [k for k in list_keys if k not in found]
        if missing:
            raise PeerSetupError(f"Marketing Cloud account {self._account!r} has no list with the customer key(s) "
                                 f"{', '.join(map(repr, missing))}: fix [sync] synced_lists", peer="esp",
                                 operation="Retrieve")
        if any(row.get("ListName") == ALL_SUBSCRIBERS for row in rows):
            raise PeerSetupError(f"[sync] synced_lists names {ALL_SUBSCRIBERS!r}: a subscriber leaves it only when "
                                 "it is deleted; name the lists it should leave", peer="esp", operation="Retrieve")
        return {row["ID"]: row.get("CustomerKey", "") for row in rows}

    def _update_object(self, update: SubscriberUpdate) -> Any:
        attribute = self._api.type("Attribute")
        fields: dict[str, Any] = {"SubscriberKey": update.subscriber_key}
        if update.email is not None:
            fields["EmailAddress"] = update.email
        if update.attributes:
            fields["Attributes"] = [attribute(Name=k, Value="" if v is None else str(v))
                                    for k, v in update.attributes.items()]
        if update.status is not None:
            fields["Status"] = SubscriberStatus(update.status).value
        return self._api.type("Subscriber")(**fields)


_KEY, _EMAIL, _STATUS, _ATTRIBUTES, _NAME, _VALUE = (q(n) for n in (
    "SubscriberKey", "EmailAddress", "Status", "Attributes", "Name", "Value"))


def _subscriber_fields(element: Any, wanted: dict[str, str]) -> tuple[str, str, str, dict[str, str]]:
    """(key, e-mail, status, {asked attribute: value}) of one Subscriber reply object, in one pass.

    ``wanted``: the account's spelling, folded, -> the name asked for (a million rows in a full
    run: this is the adapter's inner loop)."""
    key = email = status = ""
    attributes: dict[str, str] = {}
    for child in element:
        tag = child.tag
        if tag == _ATTRIBUTES:
            name = value = ""
            for part in child:
                if part.tag == _NAME:
                    name = (part.text or "").strip()
                elif part.tag == _VALUE:
                    value = part.text or ""
            asked = wanted.get(name.casefold())
            if asked is not None:
                attributes[asked] = value
        elif tag == _KEY:
            key = child.text or ""
        elif tag == _EMAIL:
            email = child.text or ""
        elif tag == _STATUS:
            status = child.text or ""
    return key, email, status, attributes
