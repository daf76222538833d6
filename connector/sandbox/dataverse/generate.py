"""Deterministic demo organizations for the Dataverse sandbox.

``seed_organization(store, seed=1, contacts=1000)`` fills an empty store with the
same data for the same seed: contacts (non-ASCII names, some invalid, missing or
duplicate email addresses, do-not-bulk-email flags, inactive records), leads,
accounts, static and dynamic marketing lists, campaigns with their lists, security
roles and users with and without "Marketing Manager" (one only through her team). Rows are
generated lazily
and bulk-inserted as plain tuples, so a million contacts take seconds, not minutes.
"""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from dataclasses import dataclass, field
from typing import Iterator

from connector.sandbox.dataverse.store import DataverseStore

FIRST = ["Anna", "Ben", "Chloé", "Dmitri", "Elif", "François", "Grete", "Håkon", "Ingrid", "José", "Jürgen",
         "Kai", "Łukasz", "Maëlle", "Nils", "Olga", "Per", "Quentin", "Renée", "Søren", "Tomás", "Ulla",
         "Vítězslav", "Wei", "Xiana", "Yusuf", "Zoë", "Åsa", "Émile", "李", "Мария", "Sean"]
LAST = ["Andersen", "Bjørnstad", "Çelik", "Dubois", "Eriksson", "Fernández", "García", "Hansen", "Ivanova",
        "Jensen", "Kowalski", "Lefèvre", "Müller", "Nakamura", "O'Brien", "Pérez", "Quist", "Rossi", "Schröder",
        "Tanaka", "Ünal", "Virtanen", "Wójcik", "Xu", "Yilmaz", "Zieliński", "王", "Смирнов", "Smith"]
CITIES = [("Oslo", "Norway"), ("Bergen", "Norway"), ("Stockholm", "Sweden"), ("Köln", "Germany"),
          ("Paris", "France"), ("Kraków", "Poland"), ("Madrid", "Spain"), ("Chicago", "United States")]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
BAD_EMAILS = ["not-an-email", "a@b", "double@@example.com", "space in@example.com", "trailing.dot@example.com.",
              "@example.com", "ünïcode@exämple.com"]
DEFAULT_CAMPAIGN_NAME = "Email connector (default campaign)"
ROLES = ["System Administrator", "Marketing Manager", "Salesperson", "Marketing Professional"]


@dataclass
class SeededOrg:
    """Ids of what was generated (for tests and the demo)."""

    contacts: int = 0
    leads: int = 0
    accounts: int = 0
    lists: dict[str, str] = field(default_factory=dict)
    campaigns: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    teams: dict[str, str] = field(default_factory=dict)


def _ids(rng: random.Random) -> Iterator[str]:
    """Random version-4 GUIDs from ``rng`` (string formatting only: fast)."""
    bits = rng.getrandbits
    while True:
        h = "%032x" % bits(128)
        yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _email(rng: random.Random, first: str, last: str, n: int, prev: str | None) -> str | None:
    roll = rng.random()
    if roll < 0.02:
        return None
    if roll < 0.04:
        return rng.choice(BAD_EMAILS)
    if roll < 0.05 and prev:
        return prev.upper() if rng.random() < 0.5 else prev  # duplicate (sometimes in other case)
    plain = unicodedata.normalize("NFKD", f"{first}.{last}".lower())
    local = plain.encode("ascii", "ignore").decode().replace("'", "").strip(".") or "person"
    return f"{local}{n}@{DOMAINS[n % len(DOMAINS)]}"


def _stamps(rng: random.Random, base: dt.datetime, n: int = 4096) -> list[str]:
    """A pool of creation times over the last ~400 days (rows pick from it)."""
    return [(base - dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 400))).strftime("%Y-%m-%dT%H:%M:%SZ")
            for _ in range(n)]


def _people(rng: random.Random, n: int, owner: str, accounts: list[str], kind: str) -> Iterator[tuple]:
    ids = _ids(rng)
    stamps = _stamps(rng, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    prev = None
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = _email(rng, first, last, i, prev)
        prev = email if email and "@" in email and rng.random() < 0.5 else prev
        city, country = rng.choice(CITIES)
        inactive = rng.random() < 0.03
        stamp = stamps[rng.getrandbits(12)]
        row = (next(ids), first, last, f"{first} {last}", email, city, country,
               1 if rng.random() < 0.05 else 0, 1 if rng.random() < 0.01 else 0,
               1 if inactive else 0, 2 if inactive else 1, stamp, stamp, owner, "systemuser",
               f"+47 {rng.randrange(10000000, 99999999)}")
        if kind == "contact":
            acct = accounts[i % len(accounts)] if accounts and rng.random() < 0.3 else None
            row += (acct, "account" if acct else None)
        else:
            row += (rng.choice(["Contoso", "Fabrikam", "Northwind", "Ærø Fisk AS"]),)
        yield row


PEOPLE_COLS = ["firstname", "lastname", "fullname", "emailaddress1", "address1_city", "address1_country",
               "donotbulkemail", "donotemail", "statecode", "statuscode", "createdon", "modifiedon", "ownerid",
               "ownerid__type", "telephone1"]


def _fetch(entity: str, pk: str, condition: str) -> str:
    return (f"<fetch version=\"1.0\" output-format=\"xml-platform\" mapping=\"logical\" distinct=\"false\">"
            f"<entity name=\"{entity}\"><attribute name=\"fullname\" /><attribute name=\"emailaddress1\" />"
            f"<attribute name=\"{pk}\" /><order attribute=\"fullname\" descending=\"false\" />"
            f"<filter type=\"and\"><condition attribute=\"statecode\" operator=\"eq\" value=\"0\" />"
            f"{condition}</filter></entity></fetch>")


def _members(store: DataverseStore, list_id: str, entity: str, pk: str, every: int, keep: int) -> int:
    """Put every row whose position mod ``every`` < ``keep`` into the list (streamed)."""
    table = f"e_{entity}"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    member_ids = _ids(random.Random(list_id))

    def rows() -> Iterator[tuple]:
        last = 0
        while True:
            chunk = store.execute(f"SELECT rowid, {pk} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 20000",
                                  (last,))
            if not chunk:
                return
            for rowid, rid in chunk:
                if rowid % every < keep:
                    yield (next(member_ids), list_id, "list", rid, entity, entity, stamp, stamp)
            last = chunk[-1][0]

    lm = store.schema.entity("listmember")
    n = store.bulk_insert(lm, ["listmemberid", "listid", "listid__type", "entityid", "entityid__type",
                               "entitytype", "createdon", "modifiedon"], rows())
    store.update(store.schema.entity("list"), list_id, {"membercount": n})
    return n


def seed_organization(store: DataverseStore, *, seed: int = 1, contacts: int = 1000, leads: int | None = None,
                      accounts: int | None = None) -> SeededOrg:
    """Fill ``store`` with a deterministic organization (see module doc)."""
    rng = random.Random(seed)
    ids = _ids(rng)
    org = SeededOrg()
    ent = store.schema.entity
    leads = contacts // 5 if leads is None else leads
    accounts = max(3, contacts // 20) if accounts is None else accounts
    for name in ROLES:
        org.roles[name] = store.insert_many(ent("role"), [{"roleid": next(ids), "name": name}])[0]
    people = [("mia", "Mia", "Marketing", ["Marketing Manager"]), ("ada", "Ada", "Admin", ["System Administrator"]),
              ("sam", "Sam", "Sales", ["Salesperson"]), ("pia", "Pia", "Professional", ["Marketing Professional",
                                                                                        "Marketing Manager"])]
    for key, first, last, roles in people:
        uid = store.insert_many(ent("systemuser"), [{"systemuserid": next(ids), "firstname": first, "lastname": last,
                                                    "domainname": f"{key}@sandbox.local",
                                                    "internalemailaddress": f"{key}@example.com"}])[0]
        store.update(ent("systemuser"), uid, {"fullname": f"{first} {last}"})
        org.users[key] = uid
        for role in roles:
            store.associate("systemuserroles_association", uid, org.roles[role])
    # a user who is a Marketing Manager only through her team
    team = store.insert_many(ent("team"), [{"teamid": next(ids), "name": "Marketing team", "teamtype": 0}])[0]
    store.associate("teamroles_association", team, org.roles["Marketing Manager"])
    tia = store.insert_many(ent("systemuser"), [{"systemuserid": next(ids), "firstname": "Tia", "lastname": "Team",
                                                "domainname": "tia@sandbox.local"}])[0]
    store.associate("teammembership_association", tia, team)
    org.users["tia"] = tia
    org.teams = {"marketing": team}
    owner = org.users["mia"]
    account_rows = []
    for i in range(accounts):
        city, country = rng.choice(CITIES)
        email = None if i % 7 == 3 else f"info{i}@{rng.choice(DOMAINS)}"
        account_rows.append((next(ids), f"{rng.choice(LAST)} {rng.choice(['AS', 'GmbH', 'Ltd', 'SA', 'AB'])} {i}",
                             email, city, country, 1 if i % 11 == 5 else 0, 0, 1, owner, "systemuser"))
    store.bulk_insert(ent("account"), ["accountid", "name", "emailaddress1", "address1_city", "address1_country",
                                       "donotbulkemail", "statecode", "statuscode", "ownerid", "ownerid__type"],
                      iter(account_rows))
    account_ids = [r[0] for r in account_rows[:1000]]
    org.accounts = accounts
    org.contacts = store.bulk_insert(ent("contact"), ["contactid", *PEOPLE_COLS, "parentcustomerid",
                                                      "parentcustomerid__type"],
                                     _people(random.Random(seed * 7919 + 1), contacts, owner, account_ids, "contact"))
    lead_rows = _people(random.Random(seed * 7919 + 2), leads, owner, [], "lead")
    org.leads = store.bulk_insert(ent("lead"), ["leadid", *PEOPLE_COLS, "companyname"],
                                  (r[:16] + (r[16],) for r in lead_rows))
    lists = [
        ("newsletter", "Newsletter subscribers", False, 2, None),
        ("vip", "VIP contacts", False, 2, None),
        ("leads", "Trade fair leads", False, 4, None),
        ("accounts", "Key accounts", False, 1, None),
        ("oslo", "Contacts in Oslo (dynamic)", True, 2, _fetch("contact", "contactid",
            "<condition attribute=\"address1_city\" operator=\"eq\" value=\"Oslo\" />")),
        ("example_org", "Leads at example.org (dynamic)", True, 4, _fetch("lead", "leadid",
            "<condition attribute=\"emailaddress1\" operator=\"like\" value=\"%@example.org\" />")),
        ("empty", "Empty list", False, 2, None),
    ]
    for key, name, dynamic, code, query in lists:
        org.lists[key] = store.insert_many(ent("list"), [{
            "listid": next(ids), "listname": name, "type": dynamic, "createdfromcode": code,
            "membertype": code, "query": query, "ownerid": owner, "purpose": "Email connector demo"}])[0]
    _members(store, org.lists["newsletter"], "contact", "contactid", 10, 6)
    _members(store, org.lists["vip"], "contact", "contactid", 50, 1)
    _members(store, org.lists["leads"], "lead", "leadid", 2, 1)
    _members(store, org.lists["accounts"], "account", "accountid", 3, 2)
    for key, name in (("spring", "Spring newsletter 2026"), ("default", DEFAULT_CAMPAIGN_NAME)):
        org.campaigns[key] = store.insert_many(ent("campaign"), [{"campaignid": next(ids), "name": name,
                                                                   "ownerid": owner}])[0]
    for key in ("newsletter", "oslo", "vip"):
        store.associate("campaignlist_association", org.campaigns["spring"], org.lists[key])
    store.insert_many(ent("opportunity"), [{"opportunityid": next(ids), "name": "Spring upsell",
                                            "campaignid": org.campaigns["spring"], "estimatedvalue": 12000.0}])
    return org
