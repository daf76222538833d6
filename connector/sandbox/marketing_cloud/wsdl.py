"""The sandbox's own WSDL: the subset of Marketing Cloud's PartnerAPI the connector uses.

The types are declared here in a compact table (name, base type, fields in the
order of the real PartnerAPI schema) and rendered to XSD. Each type lists a
subsequence of the real type's elements — same names, types and order — so a
client built from either WSDL reads the sandbox's answers. The same table drives
the server's rendering order (``fields_of``), so replies always follow the schema.
"""

from __future__ import annotations

from functools import lru_cache
from xml.sax.saxutils import quoteattr

TNS = "http://exacttarget.com/wsdl/partnerAPI"
FAULT_NS = "urn:fault.partner.exacttarget.com"

# A field: (name, type, min, max, nillable). max "n" = unbounded.
# A type "{...}" is an inline wrapper: ("Name", "{Child:tns:Type}", 0, 1) renders
# <Name><Child type="tns:Type" maxOccurs="unbounded"/></Name>.
F = tuple

ENUMS: dict[str, tuple[str, ...]] = {
    "AsyncResponseType": ("None", "email", "FTP", "HTTPPost"),
    "Priority": ("Low", "Medium", "High"),
    "RequestType": ("Synchronous", "Asynchronous"),
    "RespondWhen": ("Never", "OnError", "Always", "OnConversationError", "OnConversationComplete", "OnCallComplete"),
    "SaveAction": ("AddOnly", "Default", "Nothing", "UpdateAdd", "UpdateOnly", "Delete"),
    "SimpleOperators": (
        "equals", "notEquals", "greaterThan", "lessThan", "isNull", "isNotNull", "greaterThanOrEqual",
        "lessThanOrEqual", "between", "IN", "like", "existsInString", "existsInStringAsAWord",
        "notExistsInString", "beginsWith", "endsWith", "contains", "notContains", "isAnniversary",
        "isNotAnniversary", "greaterThanAnniversary", "lessThanAnniversary",
    ),
    "LogicalOperators": ("OR", "AND"),
    "EventType": (
        "Open", "Click", "HardBounce", "SoftBounce", "OtherBounce", "Unsubscribe", "Sent", "NotSent",
        "Survey", "ForwardedEmail", "ForwardedEmailOptIn", "DeliveredEvent",
    ),
    "SubscriberStatus": ("Active", "Bounced", "Held", "Unsubscribed", "Deleted"),
    "EmailType": ("Text", "HTML"),
    "ListTypeEnum": ("Public", "Private", "SalesForce", "GlobalUnsubscribe", "Master"),
    "ListClassificationEnum": ("ExactTargetList", "PublicationList", "SuppressionList"),
    "SendClassificationTypeEnum": ("Operational", "Marketing"),
    "SendPriorityEnum": ("Burst", "Normal", "Low"),
    "SendDefinitionListTypeEnum": ("SourceList", "ExclusionList", "DomainExclusion", "OptOutList"),
    "FileType": ("CSV", "TAB", "Other"),
    "ImportDefinitionSubscriberImportType": ("Email", "SMS"),
    "ImportDefinitionUpdateType": (
        "AddAndUpdate", "AddAndDoNotUpdate", "UpdateButDoNotAdd", "Merge", "Overwrite", "ColumnBased",
    ),
    "ImportDefinitionFieldMappingType": ("InferFromColumnHeadings", "MapByOrdinal", "ManualMap"),
    "PropertyType": ("string", "boolean", "double", "datetime"),
    "DataExtensionFieldType": (
        "Text", "Number", "Date", "Boolean", "EmailAddress", "Phone", "Decimal", "Locale", "Base16Encrypted",
        "Base16EncryptedEmail",
    ),
}

S, I, B, D, L = "xsd:string", "xsd:int", "xsd:boolean", "xsd:dateTime", "xsd:long"
N = "n"

# name -> (base or None, abstract, fields)
TYPES: dict[str, tuple[str | None, bool, tuple]] = {
    "ClientID": (None, False, (
        F(("ClientID", I, 0, 1)), F(("ID", I, 0, 1)), F(("PartnerClientKey", S, 0, 1)), F(("UserID", I, 0, 1)),
        F(("PartnerUserKey", S, 0, 1)), F(("CreatedBy", I, 0, 1)), F(("ModifiedBy", I, 0, 1)),
        F(("EnterpriseID", L, 0, 1)), F(("CustomerKey", S, 0, 1)), F(("CustomerID", S, 0, 1)),
    )),
    "APIProperty": (None, False, (F(("Name", S, 1, 1)), F(("Value", S, 1, 1)))),
    "APIObject": (None, False, (
        ("Client", "tns:ClientID", 0, 1), ("PartnerKey", S, 0, 1, True),
        ("PartnerProperties", "tns:APIProperty", 0, N), ("CreatedDate", D, 0, 1),
        ("ModifiedDate", D, 0, 1, True), ("ID", I, 0, 1), ("ObjectID", S, 0, 1, True),
        ("CustomerKey", S, 0, 1), ("CorrelationID", S, 0, 1), ("ObjectState", S, 0, 1),
    )),
    "AsyncResponse": (None, False, (
        ("ResponseType", "tns:AsyncResponseType", 1, 1), ("ResponseAddress", S, 1, 1),
        ("RespondWhen", "tns:RespondWhen", 0, 1), ("IncludeResults", B, 0, 1), ("IncludeObjects", B, 0, 1),
        ("OnlyIncludeBase", B, 0, 1),
    )),
    "Result": (None, False, (
        ("StatusCode", S, 1, 1), ("StatusMessage", S, 1, 1), ("OrdinalID", I, 0, 1), ("ErrorCode", I, 0, 1),
        ("RequestID", S, 0, 1), ("ConversationID", S, 0, 1), ("OverallStatusCode", S, 0, 1),
        ("RequestType", "tns:RequestType", 0, 1), ("ResultType", S, 0, 1), ("ResultDetailXML", S, 0, 1),
    )),
    "Options": (None, True, (
        ("Client", "tns:ClientID", 0, 1), ("SendResponseTo", "tns:AsyncResponse", 0, N),
        ("SaveOptions", "{SaveOption:tns:SaveOption}", 0, 1), ("Priority", "xsd:byte", 0, 1),
        ("ConversationID", S, 0, 1), ("SequenceCode", I, 0, 1), ("CallsInConversation", I, 0, 1),
        ("ScheduledTime", D, 0, 1), ("RequestType", "tns:RequestType", 0, 1),
        ("QueuePriority", "tns:Priority", 0, 1),
    )),
    "TaskResult": (None, False, (
        ("StatusCode", S, 1, 1), ("StatusMessage", S, 1, 1), ("OrdinalID", I, 0, 1), ("ErrorCode", I, 0, 1),
        ("ID", S, 0, 1), ("TblAsyncID", I, 0, 1), ("InteractionObjectID", S, 0, 1),
    )),
    "SaveOption": (None, False, (("PropertyName", S, 1, 1), ("SaveAction", "tns:SaveAction", 1, 1))),
    "CreateResult": ("Result", False, (
        ("NewID", I, 1, 1), ("NewObjectID", S, 0, 1), ("PartnerKey", S, 0, 1), ("Object", "tns:APIObject", 0, 1),
        ("CreateResults", "tns:CreateResult", 0, N), ("ParentPropertyName", S, 0, 1),
    )),
    "CreateOptions": ("Options", False, ()),
    "UpdateOptions": ("Options", False, (("Action", S, 0, 1),)),
    "UpdateResult": ("Result", False, (
        ("Object", "tns:APIObject", 1, 1), ("UpdateResults", "tns:UpdateResult", 0, N),
        ("ParentPropertyName", S, 0, 1),
    )),
    "DeleteOptions": ("Options", False, ()),
    "DeleteResult": ("Result", False, (("Object", "tns:APIObject", 1, 1),)),
    "RetrieveRequest": (None, False, (
        ("ClientIDs", "tns:ClientID", 0, N), ("ObjectType", S, 1, 1), ("Properties", S, 0, N),
        ("Filter", "tns:FilterPart", 0, 1), ("RespondTo", "tns:AsyncResponse", 0, N),
        ("PartnerProperties", "tns:APIProperty", 0, N), ("ContinueRequest", S, 0, 1),
        ("QueryAllAccounts", B, 0, 1), ("RetrieveAllSinceLastBatch", B, 0, 1), ("RepeatLastResult", B, 0, 1),
        ("Options", "tns:RetrieveOptions", 0, 1),
    )),
    "RetrieveOptions": ("Options", False, (
        ("BatchSize", I, 0, 1), ("IncludeObjects", B, 0, 1), ("OnlyIncludeBase", B, 0, 1),
    )),
    "FilterPart": (None, False, ()),
    "SimpleFilterPart": ("FilterPart", False, (
        ("Property", S, 1, 1), ("SimpleOperator", "tns:SimpleOperators", 1, 1), ("Value", S, 0, N),
        ("DateValue", D, 0, N),
    )),
    "ComplexFilterPart": ("FilterPart", False, (
        ("LeftOperand", "tns:FilterPart", 1, 1), ("LogicalOperator", "tns:LogicalOperators", 1, 1),
        ("RightOperand", "tns:FilterPart", 0, 1), ("AdditionalOperands", "{Operand:tns:FilterPart}", 0, 1),
    )),
    "PerformOptions": ("Options", False, (("Explanation", S, 0, 1),)),
    "PerformResult": ("Result", False, (("Object", "tns:APIObject", 1, 1), ("Task", "tns:TaskResult", 1, 1))),
    "InteractionBaseObject": ("APIObject", False, (
        ("Name", S, 0, 1), ("Description", S, 0, 1), ("Keyword", S, 0, 1),
    )),
    "InteractionDefinition": ("InteractionBaseObject", False, (("InteractionObjectID", S, 0, 1),)),
    "Email": ("APIObject", False, (
        ("Name", S, 0, 1), ("Folder", S, 0, 1), ("CategoryID", I, 0, 1), ("HTMLBody", S, 0, 1),
        ("TextBody", S, 0, 1), ("Subject", S, 0, 1), ("IsActive", B, 0, 1), ("IsHTMLPaste", B, 0, 1),
        ("ClonedFromID", I, 0, 1), ("Status", S, 0, 1), ("EmailType", S, 0, 1), ("CharacterSet", S, 0, 1),
        ("HasDynamicSubjectLine", B, 0, 1), ("ContentCheckStatus", S, 0, 1), ("SyncTextWithHTML", B, 0, 1),
        ("PreHeader", S, 0, 1), ("IsApproved", B, 0, 1),
    )),
    "TrackingEvent": ("APIObject", False, (
        ("SendID", I, 0, 1), ("SubscriberKey", S, 0, 1), ("EventDate", D, 0, 1),
        ("EventType", "tns:EventType", 0, 1), ("TriggeredSendDefinitionObjectID", S, 0, 1),
        ("BatchID", I, 0, 1),
    )),
    "OpenEvent": ("TrackingEvent", False, ()),
    "BounceEvent": ("TrackingEvent", False, (
        ("SMTPCode", S, 0, 1), ("BounceCategory", S, 0, 1), ("SMTPReason", S, 0, 1), ("BounceType", S, 0, 1),
    )),
    "UnsubEvent": ("TrackingEvent", False, (("List", "tns:List", 0, 1), ("IsMasterUnsubscribed", B, 0, 1))),
    "ClickEvent": ("TrackingEvent", False, (("URLID", I, 0, 1), ("URL", S, 0, 1), ("URLIDLong", L, 0, 1))),
    "SentEvent": ("TrackingEvent", False, ()),
    "NotSentEvent": ("TrackingEvent", False, ()),
    "Subscriber": ("APIObject", False, (
        ("EmailAddress", S, 0, 1), ("Attributes", "tns:Attribute", 0, N), ("SubscriberKey", S, 0, 1),
        ("UnsubscribedDate", D, 0, 1), ("Status", "tns:SubscriberStatus", 0, 1), ("PartnerType", S, 0, 1),
        ("EmailTypePreference", "tns:EmailType", 0, 1), ("Lists", "tns:SubscriberList", 0, N),
    )),
    "Attribute": (None, False, (("Name", S, 1, 1), ("Value", S, 1, 1))),
    "ListSubscriber": ("APIObject", False, (
        ("Status", "tns:SubscriberStatus", 0, 1), ("ListID", I, 0, 1), ("SubscriberKey", S, 0, 1),
    )),
    "SubscriberList": ("APIObject", False, (
        ("Status", "tns:SubscriberStatus", 0, 1), ("List", "tns:List", 0, 1), ("Action", S, 0, 1),
        ("Subscriber", "tns:Subscriber", 0, 1),
    )),
    "List": ("APIObject", False, (
        ("ListName", S, 0, 1), ("Category", I, 0, 1), ("Type", "tns:ListTypeEnum", 0, 1),
        ("Description", S, 0, 1), ("Subscribers", "tns:Subscriber", 0, N),
        ("ListClassification", "tns:ListClassificationEnum", 0, 1), ("AutomatedEmail", "tns:Email", 0, 1),
        ("SendClassification", "tns:SendClassification", 0, 1),
    )),
    "Send": ("APIObject", False, (
        ("Email", "tns:Email", 0, 1), ("List", "tns:List", 0, N), ("SendDate", D, 0, 1),
        ("FromAddress", S, 0, 1), ("FromName", S, 0, 1), ("Duplicates", I, 0, 1), ("InvalidAddresses", I, 0, 1),
        ("ExistingUndeliverables", I, 0, 1), ("ExistingUnsubscribes", I, 0, 1), ("HardBounces", I, 0, 1),
        ("SoftBounces", I, 0, 1), ("OtherBounces", I, 0, 1), ("ForwardedEmails", I, 0, 1),
        ("UniqueClicks", I, 0, 1), ("UniqueOpens", I, 0, 1), ("NumberSent", I, 0, 1, True),
        ("NumberDelivered", I, 0, 1, True), ("Unsubscribes", I, 0, 1), ("MissingAddresses", I, 0, 1),
        ("Subject", S, 0, 1), ("PreviewURL", S, 0, 1), ("SentDate", D, 0, 1, True), ("EmailName", S, 0, 1),
        ("Status", S, 0, 1), ("IsMultipart", B, 0, 1), ("SendLimit", I, 0, 1), ("IsAlwaysOn", B, 0, 1),
        ("NumberTargeted", I, 0, 1), ("NumberErrored", I, 0, 1), ("NumberExcluded", I, 0, 1),
        ("Additional", S, 0, 1), ("BccEmail", S, 0, 1), ("EmailSendDefinition", "tns:EmailSendDefinition", 0, 1),
    )),
    "SendClassification": ("APIObject", False, (
        ("SendClassificationType", "tns:SendClassificationTypeEnum", 0, 1), ("Name", S, 0, 1),
        ("Description", S, 0, 1), ("HonorPublicationListOptOutsForTransactionalSends", B, 0, 1),
        ("SendPriority", "tns:SendPriorityEnum", 0, 1), ("ArchiveEmail", B, 0, 1),
    )),
    "SendDefinition": ("InteractionDefinition", False, (
        ("CategoryID", I, 0, 1), ("SendClassification", "tns:SendClassification", 0, 1),
        ("FromName", S, 0, 1), ("FromAddress", S, 0, 1), ("SuppressTracking", B, 0, 1),
        ("IsSendLogging", B, 0, 1),
    )),
    "AudienceItem": ("APIObject", False, (
        ("List", "tns:List", 0, 1), ("SendDefinitionListType", "tns:SendDefinitionListTypeEnum", 0, 1),
        ("CustomObjectID", S, 0, 1),
    )),
    "SendDefinitionList": ("AudienceItem", False, (
        ("IsTestObject", B, 0, 1), ("SalesForceObjectID", S, 0, 1), ("Name", S, 0, 1),
        ("Parameters", "{Parameter:tns:APIProperty}", 0, 1),
    )),
    "EmailSendDefinition": ("SendDefinition", False, (
        ("SendDefinitionList", "tns:SendDefinitionList", 0, N), ("Email", "tns:Email", 0, 1),
        ("BccEmail", S, 0, 1), ("AutoBccEmail", S, 0, 1), ("TestEmailAddr", S, 0, 1),
        ("EmailSubject", S, 0, 1), ("DynamicEmailSubject", S, 0, 1), ("IsMultipart", B, 0, 1),
        ("IsWrapped", B, 0, 1), ("SendLimit", I, 0, 1), ("DeduplicateByEmail", B, 0, 1),
        ("ExclusionFilter", S, 0, 1), ("Additional", S, 0, 1), ("CCEmail", S, 0, 1),
        ("IsSeedListSend", B, 0, 1), ("SeedListOccurance", I, 0, 1), ("PreHeader", S, 0, 1),
        ("ReplyToAddress", S, 0, 1), ("ReplyToDisplayName", S, 0, 1),
    )),
    "FileTransferLocation": ("APIObject", False, ()),
    "ImportDefinition": ("InteractionDefinition", False, (
        ("AllowErrors", B, 0, 1), ("DestinationObject", "tns:APIObject", 0, 1),
        ("FieldMappingType", "tns:ImportDefinitionFieldMappingType", 0, 1),
        ("FileSpec", S, 0, 1), ("FileType", "tns:FileType", 0, 1),
        ("Notification", "tns:AsyncResponse", 0, 1),
        ("RetrieveFileTransferLocation", "tns:FileTransferLocation", 0, 1),
        ("SubscriberImportType", "tns:ImportDefinitionSubscriberImportType", 0, 1),
        ("UpdateType", "tns:ImportDefinitionUpdateType", 0, 1), ("MaxFileAge", I, 0, 1),
        ("MaxFileAgeScheduleOffset", I, 0, 1), ("MaxImportFrequency", I, 0, 1), ("Delimiter", S, 0, 1),
        ("HeaderLines", I, 0, 1), ("ControlColumn", S, 0, 1), ("EndOfLineRepresentation", S, 0, 1),
        ("NullRepresentation", S, 0, 1), ("StandardQuotedStrings", B, 0, 1), ("Filter", S, 0, 1),
        ("DeleteFile", B, 0, 1), ("SourceObject", "tns:APIObject", 0, 1), ("DestinationType", I, 0, 1),
        ("SubscriptionDefinitionId", S, 0, 1), ("EncodingCodePage", I, 0, 1),
    )),
    "ArrayOfObjectDefinitionRequest": (None, False, (
        ("ObjectDefinitionRequest", "tns:ObjectDefinitionRequest", 0, N),
    )),
    "ObjectDefinitionRequest": (None, False, (("Client", "tns:ClientID", 0, 1), ("ObjectType", S, 0, 1))),
    "PropertyDefinition": ("APIObject", False, (
        ("Name", S, 0, 1), ("DataType", S, 0, 1), ("PropertyType", "tns:PropertyType", 0, 1),
        ("IsCreatable", B, 0, 1), ("IsUpdatable", B, 0, 1),
        ("IsRetrievable", B, 0, 1), ("IsQueryable", B, 0, 1), ("IsFilterable", B, 0, 1),
        ("IsPartnerProperty", B, 0, 1), ("IsAccountProperty", B, 0, 1), ("Precision", I, 0, 1),
        ("Scale", I, 0, 1), ("Label", S, 0, 1), ("Description", S, 0, 1), ("DefaultValue", S, 0, 1),
        ("MaxLength", I, 0, 1), ("IsRequired", B, 0, 1), ("IsViewable", B, 0, 1), ("IsEditable", B, 0, 1),
        ("IsNillable", B, 0, 1),
    )),
    "DataExtensionField": ("PropertyDefinition", False, (
        ("Ordinal", I, 0, 1), ("IsPrimaryKey", B, 0, 1), ("FieldType", "tns:DataExtensionFieldType", 0, 1),
        ("DataExtension", "tns:DataExtension", 0, 1),
    )),
    "DataExtension": ("APIObject", False, (
        ("Name", S, 0, 1), ("Description", S, 0, 1), ("IsSendable", B, 0, 1), ("IsTestable", B, 0, 1),
        ("SendableDataExtensionField", "tns:DataExtensionField", 0, 1),
        ("SendableSubscriberField", "tns:Attribute", 0, 1), ("Fields", "{Field:tns:DataExtensionField}", 0, 1),
        ("CategoryID", L, 0, 1), ("Status", S, 0, 1),
    )),
    "ObjectExtension": ("APIObject", False, (
        ("Type", S, 0, 1), ("Properties", "{Property:tns:APIProperty}", 0, 1),
    )),
    "DataExtensionObject": ("ObjectExtension", False, (
        ("Name", S, 0, 1), ("Keys", "{Key:tns:APIProperty}", 0, 1),
    )),
    "ObjectDefinition": (None, False, (
        ("ObjectType", S, 0, 1), ("Name", S, 0, 1), ("IsCreatable", B, 0, 1), ("IsUpdatable", B, 0, 1),
        ("IsRetrievable", B, 0, 1), ("IsQueryable", B, 0, 1), ("IsReference", B, 0, 1),
        ("ReferencedType", S, 0, 1), ("IsPropertyCollection", S, 0, 1), ("IsObjectCollection", B, 0, 1),
        ("Properties", "tns:PropertyDefinition", 0, N),
        ("ExtendedProperties", "{ExtendedProperty:tns:PropertyDefinition}", 0, 1),
    )),
    "ImportResultsSummary": ("APIObject", False, (
        ("ImportDefinitionCustomerKey", S, 0, 1), ("StartDate", S, 0, 1), ("EndDate", S, 0, 1),
        ("DestinationID", S, 0, 1), ("NumberSuccessful", I, 0, 1), ("NumberDuplicated", I, 0, 1),
        ("NumberErrors", I, 0, 1), ("TotalRows", I, 0, 1), ("ImportType", S, 0, 1), ("ImportStatus", S, 0, 1),
        ("TaskResultID", I, 0, 1),
    )),
}

# Top-level elements: name -> fields (an anonymous complexType), or a type reference.
ELEMENTS: dict[str, tuple] = {
    "CreateRequest": (("Options", "tns:CreateOptions", 1, 1), ("Objects", "tns:APIObject", 1, N)),
    "CreateResponse": (("Results", "tns:CreateResult", 1, N), ("RequestID", S, 0, 1), ("OverallStatus", S, 1, 1)),
    "RetrieveRequestMsg": (("RetrieveRequest", "tns:RetrieveRequest", 1, 1),),
    "RetrieveResponseMsg": (("OverallStatus", S, 1, 1), ("RequestID", S, 0, 1), ("Results", "tns:APIObject", 0, N)),
    "UpdateRequest": (("Options", "tns:UpdateOptions", 1, 1), ("Objects", "tns:APIObject", 1, N)),
    "UpdateResponse": (("Results", "tns:UpdateResult", 1, N), ("RequestID", S, 0, 1), ("OverallStatus", S, 1, 1)),
    "DeleteRequest": (("Options", "tns:DeleteOptions", 1, 1), ("Objects", "tns:APIObject", 1, N)),
    "DeleteResponse": (("Results", "tns:DeleteResult", 1, N), ("RequestID", S, 0, 1), ("OverallStatus", S, 1, 1)),
    "PerformRequestMsg": (
        ("Options", "tns:PerformOptions", 0, 1), ("Action", S, 0, 1),
        ("Definitions", "{Definition:tns:APIObject}", 0, 1),
    ),
    "DefinitionRequestMsg": (("DescribeRequests", "tns:ArrayOfObjectDefinitionRequest", 0, 1),),
    "DefinitionResponseMsg": (("ObjectDefinition", "tns:ObjectDefinition", 0, N), ("RequestID", S, 0, 1)),
    "PerformResponseMsg": (
        ("Results", "{Result:tns:PerformResult}", 0, 1), ("OverallStatus", S, 1, 1),
        ("OverallStatusMessage", S, 1, 1), ("RequestID", S, 0, 1),
    ),
}

# operation -> (input message, input element, output message, output element)
OPERATIONS = (
    ("Create", "createRequest", "CreateRequest", "createResponse", "CreateResponse"),
    ("Retrieve", "retrieveRequest", "RetrieveRequestMsg", "retrieveResponse", "RetrieveResponseMsg"),
    ("Update", "updateRequest", "UpdateRequest", "updateResponse", "UpdateResponse"),
    ("Delete", "deleteRequest", "DeleteRequest", "deleteResponse", "DeleteResponse"),
    ("Perform", "performRequest", "PerformRequestMsg", "performResponse", "PerformResponseMsg"),
    ("Describe", "definitionRequest", "DefinitionRequestMsg", "definitionResponse", "DefinitionResponseMsg"),
)
OPERATION_NAMES = frozenset(op[0] for op in OPERATIONS)


@lru_cache(maxsize=None)
def fields_of(type_name: str) -> tuple[tuple, ...]:
    """All fields of a type, inherited ones first, in schema order."""
    base, _abstract, fields = TYPES[type_name]
    inherited = fields_of(base) if base else ()
    return inherited + tuple(fields)


@lru_cache(maxsize=None)
def field_names(type_name: str) -> frozenset[str]:
    return frozenset(f[0] for f in fields_of(type_name))


def _element_xml(field: tuple, indent: str) -> str:
    name, typ, lo, hi = field[:4]
    nillable = ' nillable="true"' if len(field) > 4 and field[4] else ""
    occurs = f'minOccurs="{lo}" maxOccurs="{"unbounded" if hi == N else hi}"'
    if typ.startswith("{"):
        child, ctype = typ[1:-1].split(":", 1)
        return (
            f'{indent}<xsd:element name="{name}" {occurs}><xsd:complexType><xsd:sequence>'
            f'<xsd:element name="{child}" minOccurs="0" maxOccurs="unbounded" type="{ctype}"/>'
            f"</xsd:sequence></xsd:complexType></xsd:element>"
        )
    return f'{indent}<xsd:element name="{name}" {occurs} type="{typ}"{nillable}/>'


def _complex_type_xml(name: str) -> str:
    base, abstract, fields = TYPES[name]
    abstract_attr = ' abstract="true"' if abstract else ""
    body = "\n".join(_element_xml(f, "        ") for f in fields)
    seq = f"<xsd:sequence>\n{body}\n      </xsd:sequence>" if fields else "<xsd:sequence/>"
    if base:
        return (
            f'    <xsd:complexType name="{name}"{abstract_attr}><xsd:complexContent>'
            f'<xsd:extension base="tns:{base}">\n      {seq}\n    </xsd:extension></xsd:complexContent>'
            f"</xsd:complexType>"
        )
    return f'    <xsd:complexType name="{name}"{abstract_attr}>\n      {seq}\n    </xsd:complexType>'


def _enum_xml(name: str, values: tuple[str, ...]) -> str:
    items = "".join(f'<xsd:enumeration value="{v}"/>' for v in values)
    return f'    <xsd:simpleType name="{name}"><xsd:restriction base="xsd:string">{items}</xsd:restriction></xsd:simpleType>'


def _top_element_xml(name: str, fields: tuple) -> str:
    body = "\n".join(_element_xml(f, "        ") for f in fields)
    return (
        f'    <xsd:element name="{name}"><xsd:complexType><xsd:sequence>\n{body}\n'
        f"    </xsd:sequence></xsd:complexType></xsd:element>"
    )


def build_wsdl(address: str) -> str:
    """The WSDL document with ``soap:address`` set to ``address`` (the sandbox's Service.asmx)."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"'
        f' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{TNS}" targetNamespace="{TNS}">',
        "  <types>",
        f'  <xsd:schema targetNamespace="{TNS}" elementFormDefault="qualified" version="1.0">',
    ]
    parts += [_enum_xml(n, v) for n, v in ENUMS.items()]
    parts += [_complex_type_xml(n) for n in TYPES]
    for n, fields in ELEMENTS.items():
        parts.append(_top_element_xml(n, fields))
    for opt in ("CreateOptions", "UpdateOptions", "DeleteOptions"):
        parts.append(f'    <xsd:element name="{opt}" type="tns:{opt}"/>')
    parts.append("  </xsd:schema>")
    parts += [
        f'  <xsd:schema targetNamespace="{FAULT_NS}" xmlns:f="{FAULT_NS}" elementFormDefault="qualified">',
        '    <xsd:complexType name="APIFault"><xsd:sequence>'
        '<xsd:element name="Code" type="xsd:int"/><xsd:element name="Message" type="xsd:string"/>'
        '<xsd:element name="LogID" type="xsd:long" minOccurs="0"/>'
        '<xsd:element name="Params" minOccurs="0"><xsd:complexType><xsd:sequence>'
        '<xsd:element name="Param" type="xsd:string" minOccurs="0" maxOccurs="unbounded"/>'
        "</xsd:sequence></xsd:complexType></xsd:element></xsd:sequence></xsd:complexType>",
        '    <xsd:element name="apifault" type="f:APIFault"/>',
        "  </xsd:schema>",
    ]
    parts.append("  </types>")
    for _op, in_msg, in_el, out_msg, out_el in OPERATIONS:
        parts.append(f'  <message name="{in_msg}"><part element="tns:{in_el}" name="parameters"/></message>')
        parts.append(f'  <message name="{out_msg}"><part element="tns:{out_el}" name="parameters"/></message>')
    parts.append('  <portType name="Soap">')
    for op, in_msg, _ie, out_msg, _oe in OPERATIONS:
        parts.append(f'    <operation name="{op}"><input message="tns:{in_msg}"/><output message="tns:{out_msg}"/></operation>')
    parts.append("  </portType>")
    parts.append('  <binding name="SoapBinding" type="tns:Soap">')
    parts.append('    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>')
    for op, *_ in OPERATIONS:
        parts.append(
            f'    <operation name="{op}"><soap:operation soapAction="{op}"/>'
            '<input><soap:body parts="parameters" use="literal"/></input>'
            '<output><soap:body use="literal"/></output></operation>'
        )
    parts.append("  </binding>")
    parts.append('  <service name="PartnerAPI"><documentation>Connector sandbox of the Partner API</documentation>')
    parts.append(f'    <port binding="tns:SoapBinding" name="Soap"><soap:address location={quoteattr(address)}/></port>')
    parts.append("  </service>")
    parts.append("</definitions>")
    return "\n".join(parts) + "\n"
