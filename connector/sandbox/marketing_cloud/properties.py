"""Which properties of each object a Retrieve may ask for and filter on, as the real service decides.

Marketing Cloud answers a Retrieve only for properties its Describe marks
``IsRetrievable`` and filters only on ``IsFilterable`` ones; anything else makes the
whole call fail with an ``OverallStatus`` "Error: ..." text. The published Describe
results (the guide's "Describe a Subscriber" and "Get the Fields Available for
Retrieval" pages) show that the plumbing of ``APIObject`` (``Client``,
``PartnerProperties``, ``ModifiedDate``, ``ObjectID``, ``CustomerKey``, ``Owner`` ...)
is not retrievable on Subscriber and on the tracking events, that ``Attributes`` and
``Lists`` of a Subscriber are not either (attributes come back with every subscriber
row without being asked for), and that events answer ``ListID`` and ``Client.ID``
although the WSDL lacks them. Objects without a published Describe take their WSDL
fields minus that plumbing. The tables drive Retrieve, the filter compiler and Describe.
"""

from __future__ import annotations

from functools import lru_cache

from connector.sandbox.marketing_cloud.wsdl import field_names

EVENT_OBJECTS = ("SentEvent", "OpenEvent", "ClickEvent", "BounceEvent", "UnsubEvent", "NotSentEvent")

PLUMBING = frozenset({"Client", "PartnerProperties", "PartnerKey", "Owner", "CorrelationID", "ObjectState"})
"""APIObject fields no published Describe marks retrievable."""

_SUBSCRIBER = frozenset({"ID", "CreatedDate", "Client.ID", "EmailAddress", "SubscriberKey", "UnsubscribedDate",
                         "Status", "EmailTypePreference"})
"""Documented Describe of Subscriber: its IsRetrievable=True properties ("Describe a Subscriber")."""

_EVENT = frozenset({"SendID", "SubscriberKey", "EventDate", "Client.ID", "EventType", "BatchID",
                    "TriggeredSendDefinitionObjectID", "ListID"})
"""Documented Describe of SentEvent ("Get the Fields Available for Retrieval"), shared by every event."""

_LIST_SUBSCRIBER = frozenset({"ListID", "SubscriberKey", "Status", "CreatedDate", "ModifiedDate"})
"""ListSubscriber as live notes saw it retrieved (ListID, SubscriberKey, Status, CreatedDate), plus the
ModifiedDate tap-exacttarget reads it incrementally by."""

_EVENT_OWN = {
    "ClickEvent": frozenset({"URLID", "URL", "URLIDLong"}),
    "BounceEvent": frozenset({"SMTPCode", "BounceCategory", "SMTPReason", "BounceType"}),
    "UnsubEvent": frozenset({"List", "IsMasterUnsubscribed"}),
}

NESTED = {
    "Send": frozenset({"Email.ID", "EmailSendDefinition.CustomerKey", "List.ID"}),
    "EmailSendDefinition": frozenset({"Email.ID", "SendClassification.CustomerKey"}),
    "DataExtension": frozenset({"SendableDataExtensionField.Name", "SendableSubscriberField.Name"}),
    "DataExtensionField": frozenset({"DataExtension.CustomerKey"}),
}
"""Dotted properties of nested objects that Retrieve answers (documented in the guide's samples)."""

OUTSIDE_WSDL = frozenset({"ListID", "Client.ID"})
"""Event properties the real service answers although the WSDL lacks them (strict zeep clients choke on ListID)."""

RETRIEVABLE_OBJECTS = ("Subscriber", "List", "ListSubscriber", "Email", "SendClassification", "EmailSendDefinition",
                       "Send", "ImportDefinition", "ImportResultsSummary", "DataExtension",
                       "DataExtensionField") + EVENT_OBJECTS
NOT_RETRIEVED = {"DataExtension": frozenset({"Fields"})}
"""Fields of a WSDL type that a Retrieve does not answer: a data extension's fields are retrieved as
``DataExtensionField`` objects (FuelSDK ``ET_DataExtension_Column``, tap-exacttarget)."""


@lru_cache(maxsize=None)
def retrievable(obj_type: str) -> frozenset[str]:
    """The properties a Retrieve of ``obj_type`` may name (empty for an object that is not retrievable)."""
    if obj_type == "Subscriber":
        return _SUBSCRIBER
    if obj_type == "ListSubscriber":
        return _LIST_SUBSCRIBER
    if obj_type in EVENT_OBJECTS:
        return _EVENT | _EVENT_OWN.get(obj_type, frozenset())
    if obj_type not in RETRIEVABLE_OBJECTS:
        return frozenset()
    return ((field_names(obj_type) - PLUMBING - NOT_RETRIEVED.get(obj_type, frozenset()))
            | NESTED.get(obj_type, frozenset()))


@lru_cache(maxsize=None)
def filterable(obj_type: str) -> frozenset[str]:
    """The properties a filter on ``obj_type`` may name: the retrievable scalars.

    Collections (``Attributes``, ``Lists``, ``SendDefinitionList``) and whole nested
    objects cannot be compared; their dotted children can.
    """
    scalars = set(retrievable(obj_type))
    for name in ("Attributes", "Lists", "SendDefinitionList", "Subscribers", "Email", "List", "SendClassification",
                 "EmailSendDefinition", "DestinationObject", "RetrieveFileTransferLocation", "Notification",
                 "SourceObject", "AutomatedEmail", "DataExtension", "SendableDataExtensionField",
                 "SendableSubscriberField"):
        scalars.discard(name)
    return frozenset(scalars)
