"""The tables the Dataverse sandbox knows: standard ones and the connector's customizations.

Each table is an :class:`Entity` with typed :class:`Attribute` s. Lookups are stored
under their logical name and appear on the wire as ``_<name>_value``; they are set
through navigation properties (``<nav>@odata.bind``), one per target table.
Customizations (publisher prefix ``cesp``, docs/contracts.md) are added at run time
through the metadata API, or pre-applied with :func:`connector_customizations`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

STRING_TYPES = {"String", "Memo", "EntityName"}
INT_TYPES = {"Integer", "Picklist", "State", "Status", "BigInt"}
FLOAT_TYPES = {"Money", "Decimal", "Double"}
LOOKUP_TYPES = {"Lookup", "Customer", "Owner"}

ODATA_TYPES = {
    "String": "Edm.String", "Memo": "Edm.String", "EntityName": "Edm.String",
    "Integer": "Edm.Int32", "Picklist": "Edm.Int32", "State": "Edm.Int32", "Status": "Edm.Int32",
    "BigInt": "Edm.Int64", "Money": "Edm.Decimal", "Decimal": "Edm.Decimal", "Double": "Edm.Double",
    "Boolean": "Edm.Boolean", "DateTime": "Edm.DateTimeOffset", "Uniqueidentifier": "Edm.Guid",
    "Lookup": "Edm.Guid", "Customer": "Edm.Guid", "Owner": "Edm.Guid",
}

METADATA_TYPE_NAMES = {
    "String": "StringAttributeMetadata", "Memo": "MemoAttributeMetadata",
    "Integer": "IntegerAttributeMetadata", "BigInt": "BigIntAttributeMetadata",
    "Picklist": "PicklistAttributeMetadata", "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata", "Money": "MoneyAttributeMetadata",
    "Decimal": "DecimalAttributeMetadata", "Double": "DoubleAttributeMetadata",
    "Boolean": "BooleanAttributeMetadata", "DateTime": "DateTimeAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata", "Lookup": "LookupAttributeMetadata",
    "Customer": "LookupAttributeMetadata", "Owner": "LookupAttributeMetadata",
    "EntityName": "EntityNameAttributeMetadata",
}
TYPE_BY_METADATA_NAME = {v: k for k, v in METADATA_TYPE_NAMES.items() if k not in ("Customer", "Owner")}


@dataclass
class Attribute:
    logical_name: str
    type: str
    max_length: int | None = None
    targets: tuple[str, ...] = ()
    schema_name: str = ""
    custom: bool = False
    required: bool = False
    readonly: bool = False
    options: dict[int, str] = field(default_factory=dict)
    # navigation property name -> target table, for lookups
    navs: dict[str, str] = field(default_factory=dict)
    metadata_id: str = ""
    min_value: float | None = None  # MinValue / MaxValue of a number column (refused outside)
    max_value: float | None = None
    relationship: str = ""  # a lookup made by a 1:N relationship: its SchemaName (a subgrid names it)

    def __post_init__(self) -> None:
        self.schema_name = self.schema_name or self.logical_name
        self.metadata_id = self.metadata_id or str(uuid.uuid5(uuid.NAMESPACE_URL, "attr:" + self.logical_name))
        if self.type in LOOKUP_TYPES and not self.navs:
            if len(self.targets) == 1:
                self.navs = {self.logical_name: self.targets[0]}
            else:
                self.navs = {f"{self.logical_name}_{t}": t for t in self.targets}

    @property
    def wire_name(self) -> str:
        return f"_{self.logical_name}_value" if self.type in LOOKUP_TYPES else self.logical_name


@dataclass
class Key:
    logical_name: str
    attributes: tuple[str, ...]
    schema_name: str = ""
    status: str = "Active"  # EntityKeyIndexStatus; only an Active key addresses records
    failure: str = ""  # why the index job failed (the duplicate values), for a Failed key

    def __post_init__(self) -> None:
        self.schema_name = self.schema_name or self.logical_name


@dataclass
class Entity:
    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str
    attributes: dict[str, Attribute] = field(default_factory=dict)
    keys: dict[str, Key] = field(default_factory=dict)
    schema_name: str = ""
    custom: bool = False
    object_type_code: int = 0
    change_tracking: bool = False  # ChangeTrackingEnabled
    metadata_id: str = ""
    display_name: str = ""

    def __post_init__(self) -> None:
        self.schema_name = self.schema_name or self.logical_name
        self.metadata_id = self.metadata_id or str(uuid.uuid5(uuid.NAMESPACE_URL, "entity:" + self.logical_name))
        if self.primary_id not in self.attributes:
            self.attributes = {self.primary_id: Attribute(self.primary_id, "Uniqueidentifier", readonly=True),
                               **self.attributes}

    def add(self, attr: Attribute) -> None:
        self.attributes[attr.logical_name] = attr

    def active_keys(self) -> list[Key]:
        """The alternate keys in effect (index built): only these address records."""
        return [k for k in self.keys.values() if k.status == "Active"]

    def nav(self, name: str) -> tuple[Attribute, str] | None:
        """The lookup attribute and target table for navigation property ``name``."""
        for attr in self.attributes.values():
            if name in attr.navs:
                return attr, attr.navs[name]
        return None

    def by_wire_name(self, name: str) -> Attribute | None:
        attr = self.attributes.get(name)
        if attr is not None and attr.type not in LOOKUP_TYPES:
            return attr
        if name.startswith("_") and name.endswith("_value"):
            attr = self.attributes.get(name[1:-6])
            if attr is not None and attr.type in LOOKUP_TYPES:
                return attr
        return None


def _a(name: str, type_: str, max_length: int | None = None, *targets: str, **kw) -> Attribute:
    if type_ in STRING_TYPES and max_length is None:
        max_length = 100
    return Attribute(name, type_, max_length, tuple(targets), **kw)


def _common(owner: bool = True) -> list[Attribute]:
    attrs = [
        _a("statecode", "State", options={0: "Active", 1: "Inactive"}),
        _a("statuscode", "Status", options={1: "Active", 2: "Inactive"}),
        _a("createdon", "DateTime", readonly=True),
        _a("modifiedon", "DateTime", readonly=True),
        _a("versionnumber", "BigInt", readonly=True),
    ]
    if owner:
        attrs.append(_a("ownerid", "Owner", None, "systemuser"))
    return attrs


UNTRACKED = ("contact", "lead", "account")
"""Standard tables that start with change tracking off [unverified: which tables a new organization
tracks is not documented]; ``connector crm-setup`` turns it on where the connector needs it."""


def _entity(logical, entity_set, pk, name, otc, attrs, **kw) -> Entity:
    kw.setdefault("change_tracking", logical not in UNTRACKED)
    e = Entity(logical, entity_set, pk, name, object_type_code=otc, **kw)
    for attr in attrs:
        e.add(attr)
    return e


def _person() -> list[Attribute]:
    return [
        _a("firstname", "String", 50), _a("lastname", "String", 50), _a("fullname", "String", 160, readonly=True),
        _a("emailaddress1", "String", 100), _a("emailaddress2", "String", 100), _a("telephone1", "String", 50),
        _a("mobilephone", "String", 50), _a("jobtitle", "String", 100),
        _a("address1_line1", "String", 250), _a("address1_city", "String", 80),
        _a("address1_postalcode", "String", 20), _a("address1_country", "String", 80),
        _a("donotbulkemail", "Boolean"), _a("donotemail", "Boolean"),
    ]


def standard_entities() -> dict[str, Entity]:
    """A fresh copy of the standard tables the sandbox serves."""
    ents = [
        _entity("contact", "contacts", "contactid", "fullname", 2, _person() + _common() + [
            _a("parentcustomerid", "Customer", None, "account", "contact"),
            _a("birthdate", "DateTime"), _a("gendercode", "Picklist", options={1: "Male", 2: "Female"}),
        ]),
        _entity("lead", "leads", "leadid", "fullname", 4, _person() + _common() + [
            _a("companyname", "String", 100), _a("subject", "String", 300),
            _a("statecode", "State", options={0: "Open", 1: "Qualified", 2: "Disqualified"}),
        ]),
        _entity("account", "accounts", "accountid", "name", 1, _common() + [
            _a("name", "String", 160), _a("accountnumber", "String", 20), _a("emailaddress1", "String", 100),
            _a("telephone1", "String", 50), _a("address1_city", "String", 80), _a("address1_country", "String", 80),
            _a("donotbulkemail", "Boolean"), _a("donotemail", "Boolean"),
            _a("primarycontactid", "Lookup", None, "contact"), _a("parentaccountid", "Lookup", None, "account"),
        ]),
        _entity("list", "lists", "listid", "listname", 4300, _common() + [
            _a("listname", "String", 128, required=True), _a("type", "Boolean"),
            _a("createdfromcode", "Picklist", options={1: "Account", 2: "Contact", 4: "Lead"}, required=True),
            _a("membertype", "Integer"), _a("query", "Memo", 1073741823), _a("membercount", "Integer"),
            _a("lockstatus", "Boolean"), _a("donotsendonoptout", "Boolean"),
            _a("ignoreinactivelistmembers", "Boolean"), _a("purpose", "String", 512),
            _a("description", "Memo", 2000), _a("source", "String", 128), _a("lastusedon", "DateTime"),
            _a("statuscode", "Status", options={0: "Active", 1: "Inactive"}),
        ]),
        _entity("listmember", "listmembers", "listmemberid", "name", 4301, [
            _a("listid", "Lookup", None, "list"),
            _a("entityid", "Lookup", None, "account", "contact", "lead"),
            _a("entitytype", "EntityName", 100), _a("name", "String", 100),
            _a("createdon", "DateTime", readonly=True), _a("modifiedon", "DateTime", readonly=True),
            _a("versionnumber", "BigInt", readonly=True),
        ]),
        _entity("campaign", "campaigns", "campaignid", "name", 4400, _common() + [
            _a("name", "String", 128, required=True), _a("codename", "String", 32),
            _a("istemplate", "Boolean"), _a("description", "Memo", 2000),
            _a("proposedstart", "DateTime"), _a("proposedend", "DateTime"),
            _a("actualstart", "DateTime"), _a("actualend", "DateTime"),
            _a("statuscode", "Status", options={0: "Proposed", 1: "Ready To Launch", 2: "Launched", 3: "Completed"}),
        ]),
        _entity("campaignresponse", "campaignresponses", "activityid", "subject", 4401, _common() + [
            _a("subject", "String", 200, required=True),
            _a("responsecode", "Picklist", options={1: "Interested", 2: "Not Interested",
                                                     3: "Do Not Send Marketing Materials", 4: "Error"}),
            _a("channeltypecode", "Picklist", options={1: "Email", 2: "Phone", 3: "Fax", 4: "Letter",
                                                        5: "Appointment", 6: "Others"}),
            _a("receivedon", "DateTime"), _a("emailaddress", "String", 100), _a("firstname", "String", 50),
            _a("lastname", "String", 50), _a("companyname", "String", 100), _a("telephone", "String", 50),
            _a("promotioncodename", "String", 128), _a("category", "String", 250),
            _a("description", "Memo", 2000),
            _a("statecode", "State", options={0: "Open", 1: "Closed", 2: "Canceled"}),
            _a("statuscode", "Status", options={1: "Open", 2: "Closed", 3: "Canceled"}),
            Attribute("regardingobjectid", "Lookup", None, ("campaign",),
                      navs={"regardingobjectid_campaign_campaignresponse": "campaign"}),
            Attribute("originatingactivityid", "Lookup", None, ("email",),
                      navs={"originatingactivityid_email": "email"}),
        ]),
        _entity("activityparty", "activityparties", "activitypartyid", "addressused", 135, [
            Attribute("activityid", "Lookup", None, ("campaignresponse",),
                      navs={"activityid_campaignresponse": "campaignresponse"}),
            _a("partyid", "Lookup", None, "account", "contact", "lead", "systemuser"),
            _a("participationtypemask", "Picklist"), _a("addressused", "String", 200),
            _a("versionnumber", "BigInt", readonly=True),
        ]),
        _entity("systemuser", "systemusers", "systemuserid", "fullname", 8, [
            _a("fullname", "String", 200, readonly=True), _a("firstname", "String", 64),
            _a("lastname", "String", 64), _a("domainname", "String", 1024),
            _a("internalemailaddress", "String", 100), _a("isdisabled", "Boolean"),
            _a("applicationid", "Uniqueidentifier"), _a("azureactivedirectoryobjectid", "Uniqueidentifier"),
            _a("businessunitid", "Lookup", None, "businessunit"),
            _a("createdon", "DateTime", readonly=True), _a("modifiedon", "DateTime", readonly=True),
            _a("versionnumber", "BigInt", readonly=True),
        ]),
        _entity("role", "roles", "roleid", "name", 1036, [
            _a("name", "String", 100), _a("businessunitid", "Lookup", None, "businessunit"),
            _a("createdon", "DateTime", readonly=True), _a("modifiedon", "DateTime", readonly=True),
            _a("versionnumber", "BigInt", readonly=True),
        ]),
        _entity("team", "teams", "teamid", "name", 9, [
            _a("name", "String", 160), _a("teamtype", "Picklist", options={0: "Owner", 1: "Access",
                                                                          2: "Security Group", 3: "Office Group"}),
            _a("businessunitid", "Lookup", None, "businessunit"), _a("description", "Memo", 2000),
            _a("createdon", "DateTime", readonly=True), _a("modifiedon", "DateTime", readonly=True),
            _a("versionnumber", "BigInt", readonly=True),
        ]),
        # customizations as rows (organization-owned): checked by .customui, published by PublishXml
        _entity("systemform", "systemforms", "formid", "name", 1030, [
            _a("name", "String", 100, required=True), _a("description", "Memo", 2000),
            _a("objecttypecode", "EntityName", 64),
            _a("type", "Picklist", options={0: "Dashboard", 1: "AppointmentBook", 2: "Main", 5: "Mobile",
                                            6: "Quick View Form", 7: "Quick Create", 11: "Card"}),
            _a("formxml", "Memo", 1073741823), _a("formactivationstate", "Picklist", options={0: "Inactive",
                                                                                           1: "Active"}),
            _a("isdefault", "Boolean"), _a("publishedon", "DateTime", readonly=True),
            _a("createdon", "DateTime", readonly=True), _a("modifiedon", "DateTime", readonly=True),
            _a("versionnumber", "BigInt", readonly=True),
        ]),
        _entity("savedquery", "savedqueries", "savedqueryid", "name", 1039, [
            _a("name", "String", 200, required=True), _a("description", "Memo", 2000),
            _a("returnedtypecode", "EntityName", 64), _a("querytype", "Integer"),
            _a("fetchxml", "Memo", 1073741823), _a("layoutxml", "Memo", 1073741823),
            _a("isdefault", "Boolean"), _a("isquickfindquery", "Boolean"),
            _a("statecode", "State", options={0: "Active", 1: "Inactive"}),
            _a("createdon", "DateTime", readonly=True), _a("modifiedon", "DateTime", readonly=True),
            _a("versionnumber", "BigInt", readonly=True),
        ]),
        _entity("businessunit", "businessunits", "businessunitid", "name", 10, [
            _a("name", "String", 160), _a("versionnumber", "BigInt", readonly=True),
        ]),
        _entity("opportunity", "opportunities", "opportunityid", "name", 3, _common() + [
            _a("name", "String", 300, required=True), _a("estimatedvalue", "Money"),
            _a("customerid", "Customer", None, "account", "contact"),
            _a("parentcontactid", "Lookup", None, "contact"), _a("parentaccountid", "Lookup", None, "account"),
            _a("campaignid", "Lookup", None, "campaign"),
            _a("statecode", "State", options={0: "Open", 1: "Won", 2: "Lost"}),
        ]),
    ]
    return {e.logical_name: e for e in ents}


# N:N relationships: name -> (entity1, entity2, intersect). Navigation property names
# equal the relationship name on both sides.
MANY_TO_MANY = {
    "listcontact_association": ("list", "contact", "listmember"),
    "listlead_association": ("list", "lead", "listmember"),
    "listaccount_association": ("list", "account", "listmember"),
    "campaignlist_association": ("campaign", "list", "campaignitem"),
    "systemuserroles_association": ("systemuser", "role", "systemuserroles"),
    "teammembership_association": ("systemuser", "team", "teammembership"),
    "teamroles_association": ("team", "role", "teamroles"),
}

# 1:N collection navigation properties: (entity, nav) -> (child entity, lookup attribute)
ONE_TO_MANY = {
    ("campaignresponse", "campaignresponse_activity_parties"): ("activityparty", "activityid"),
    ("campaign", "campaign_opportunities"): ("opportunity", "campaignid"),
    ("list", "list_listmembers"): ("listmember", "listid"),
}

SENDREQUEST_STATUS = {100000000: "Pending", 100000001: "Processing", 100000002: "Sent",
                      100000003: "Failed", 100000004: "Cancelled", 100000005: "Draft",
                      100000006: "Preview requested", 100000007: "Previewed", 100000008: "Importing",
                      100000009: "Scheduled"}

SENDREQUEST_TARGETS = {"cesp_sendrequest_list": "list", "cesp_sendrequest_contact": "contact",
                       "cesp_sendrequest_lead": "lead", "cesp_sendrequest_account": "account"}
"""The send request's N:N target relationships (name = navigation property = intersect table)."""


def connector_customizations() -> list[tuple[str, object]]:
    """The connector's customizations as (operation, payload) for :meth:`Schema.apply`.

    Same content as ``connector crm-setup`` creates through the metadata API.
    """
    counts = ["cesp_resolved", "cesp_handedover", "cesp_skipped", "cesp_sentcount", "cesp_deliveredcount",
              "cesp_opencount", "cesp_uniqueopencount", "cesp_clickcount", "cesp_uniqueclickcount",
              "cesp_hardbouncecount", "cesp_softbouncecount", "cesp_blockbouncecount",
              "cesp_technicalbouncecount", "cesp_unknownbouncecount", "cesp_unsubscribecount",
              "cesp_notsentcount"]
    sendrequest = Entity("cesp_sendrequest", "cesp_sendrequests", "cesp_sendrequestid", "cesp_name",
                         schema_name="cesp_SendRequest", custom=True, object_type_code=10100, change_tracking=True)
    for attr in [
        _a("cesp_name", "String", 200, custom=True, required=True),
        _a("cesp_status", "Picklist", custom=True, options=dict(SENDREQUEST_STATUS)),
        _a("cesp_targets", "Memo", 1048576, custom=True),
        Attribute("cesp_campaignid", "Lookup", None, ("campaign",), custom=True,
                  navs={"cesp_campaignid": "campaign"}),
        _a("cesp_emailkey", "String", 100, custom=True),
        Attribute("cesp_emailid", "Lookup", None, ("cesp_email",), custom=True, navs={"cesp_emailid": "cesp_email"}),
        _a("cesp_sendclassificationkey", "String", 100, custom=True),
        _a("cesp_forcebatching", "Boolean", custom=True),
        _a("cesp_espjobid", "String", 100, custom=True),
        _a("cesp_reason", "Memo", 1048576, custom=True),
        _a("cesp_skippedbyreason", "Memo", 1048576, custom=True),
        _a("cesp_releasedon", "DateTime", custom=True),
        _a("cesp_trackingupdatedon", "DateTime", custom=True),
        *[_a(c, "Integer", custom=True) for c in counts],
        *_common(),
    ]:
        sendrequest.add(attr)
    bounce = [_a("cesp_lastbounceon", "DateTime", custom=True), _a("cesp_lastbouncetype", "String", 20, custom=True),
              _a("cesp_lastbouncejob", "String", 100, custom=True)]
    email = Entity("cesp_email", "cesp_emails", "cesp_emailid", "cesp_name", schema_name="cesp_Email", custom=True,
                   object_type_code=10101, change_tracking=True)
    for attr in [
        _a("cesp_name", "String", 200, custom=True, required=True), _a("cesp_customerkey", "String", 100, custom=True),
        _a("cesp_subject", "String", 400, custom=True), _a("cesp_folder", "String", 200, custom=True),
        _a("cesp_espstatus", "String", 50, custom=True), _a("cesp_espaccount", "String", 100, custom=True),
        _a("cesp_espemailid", "String", 20, custom=True), _a("cesp_lastrefreshedon", "DateTime", custom=True),
        *_common(),
    ]:
        email.add(attr)
    for attr in [_a("cesp_previewresolved", "Integer", custom=True), _a("cesp_previewwouldsend", "Integer", custom=True),
                 _a("cesp_previewskippedbyreason", "Memo", 1048576, custom=True),
                 _a("cesp_previewedon", "DateTime", custom=True)]:
        sendrequest.add(attr)
    sample = Entity("cesp_previewrecipient", "cesp_previewrecipients", "cesp_previewrecipientid", "cesp_name",
                    schema_name="cesp_PreviewRecipient", custom=True, object_type_code=10102)
    for attr in [
        _a("cesp_name", "String", 200, custom=True, required=True),
        Attribute("cesp_sendrequestid", "Lookup", None, ("cesp_sendrequest",), custom=True,
                  navs={"cesp_sendrequestid": "cesp_sendrequest"}),
        _a("cesp_recordtable", "String", 20, custom=True), _a("cesp_recordid", "String", 36, custom=True),
        _a("cesp_subscriberkey", "String", 254, custom=True), _a("cesp_attributes", "Memo", 100000, custom=True),
        *_common(),
    ]:
        sample.add(attr)
    ops: list[tuple[str, object]] = [("entity", email), ("entity", sendrequest), ("entity", sample)]
    ops.append(("key", ("cesp_email", Key("cesp_email_customerkey_key", ("cesp_customerkey",)))))
    ops += [("many_to_many", (name, "cesp_sendrequest", other)) for name, other in SENDREQUEST_TARGETS.items()]
    for table in ("contact", "lead"):
        ops += [("attribute", (table, Attribute(**{**a.__dict__}))) for a in bounce]
    ops.append(("attribute", ("campaignresponse", _a("cesp_trackingkey", "String", 100, custom=True))))
    ops.append(("key", ("campaignresponse", Key("cesp_trackingkey_key", ("cesp_trackingkey",)))))
    ops += [("change_tracking", table) for table in UNTRACKED]
    return ops
