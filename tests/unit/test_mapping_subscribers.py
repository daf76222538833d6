"""Mapping CRM recipients to ESP subscribers: transforms, lookups, defaults, skip reasons."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connector.config import Config, FieldMapping, SendsSettings
from connector.errors import ConfigError
from connector.mapping import Mapper, columns_to_read, esp_attribute_names, is_valid_email
from connector.models import CrmTable, Recipient, RecordRef, Skip, SkipReason, Subscriber


def make_config(**sends) -> Config:
    return Config(
        sends=SendsSettings(**sends),
        mappings={
            "contact": (
                FieldMapping(esp_attribute="First Name", crm_column="firstname", transforms=("strip", "title")),
                FieldMapping(esp_attribute="Country", crm_column="address1_country", lookup="country", default="AT"),
                FieldMapping(esp_attribute="Since", crm_column="createdon"),
            ),
            "lead": (FieldMapping(esp_attribute="First Name", crm_column="firstname"),),
        },
        transforms={"country": {"Austria": "Österreich", "Germany": "Deutschland"}},
    )


def contact(email: str | None = "Anna@Example.com", **kw) -> Recipient:
    attrs = kw.pop("attributes", {"firstname": "  anna ", "address1_country": "austria"})
    return Recipient(ref=RecordRef(CrmTable.CONTACT, "c-1"), email=email, attributes=attrs, **kw)


def test_maps_attributes_with_transforms_and_lookup() -> None:
    sub = Mapper(make_config()).map(contact())
    assert isinstance(sub, Subscriber)
    assert sub.subscriber_key == "c-1"
    assert sub.email == "Anna@Example.com"
    assert sub.attributes == {"First Name": "Anna", "Country": "Österreich", "Since": ""}


def test_default_fills_blank_and_values_become_text() -> None:
    when = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
    sub = Mapper(make_config()).map(contact(attributes={"firstname": None, "createdon": when}))
    assert isinstance(sub, Subscriber)
    assert sub.attributes["Country"] == "AT"
    assert sub.attributes["Since"] == when.isoformat()


def test_subscriber_key_can_be_the_email() -> None:
    sub = Mapper(make_config(subscriber_key="email")).map(contact())
    assert isinstance(sub, Subscriber) and sub.subscriber_key == "anna@example.com"


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"email": None}, SkipReason.NO_EMAIL),
        ({"email": "  "}, SkipReason.NO_EMAIL),
        ({"email": "not an email"}, SkipReason.MALFORMED_EMAIL),
        ({"email": "a@b"}, SkipReason.MALFORMED_EMAIL),
        ({"do_not_email": True}, SkipReason.DO_NOT_EMAIL),
        ({"do_not_bulk_email": True}, SkipReason.DO_NOT_BULK_EMAIL),
        ({"active": False}, SkipReason.INACTIVE),
    ],
)
def test_skips_carry_a_reason_and_the_record(kwargs, reason) -> None:
    skip = Mapper(make_config()).map(contact(**kwargs))
    assert isinstance(skip, Skip)
    assert skip.reason is reason
    assert skip.ref == RecordRef(CrmTable.CONTACT, "c-1")
    assert skip.detail


@pytest.mark.parametrize(
    "address, ok",
    [("a.b+c@example.co.uk", True), ("x@y.io", True), ("a..b@example.com", False),
     ("a@-example.com", False), ("a b@example.com", False), ("a@example.com\n", False),
     ("x" * 250 + "@example.com", False)],
)
def test_email_shapes(address: str, ok: bool) -> None:
    assert is_valid_email(address) is ok


def test_columns_and_attribute_names() -> None:
    config = make_config()
    assert columns_to_read(config)[CrmTable.CONTACT] == ["firstname", "address1_country", "createdon"]
    assert columns_to_read(config)[CrmTable.ACCOUNT] == []
    assert esp_attribute_names(config) == ["First Name", "Country", "Since"]


def test_unknown_transform_is_a_config_error() -> None:
    config = Config(mappings={"contact": (FieldMapping(esp_attribute="X", crm_column="x", lookup="nope"),)})
    with pytest.raises(ConfigError) as info:
        Mapper(config)
    assert "nope" in str(info.value)


def test_label_takes_the_formatted_value_and_dates_their_format_and_zone() -> None:
    from connector.mapping import FORMATTED

    config = Config(mappings={"contact": (
        FieldMapping(esp_attribute="Gender", crm_column="gendercode", label=True),
        FieldMapping(esp_attribute="Gender code", crm_column="gendercode"),
        FieldMapping(esp_attribute="Company", crm_column="_parentcustomerid_value", label=True, lookup="short"),
        FieldMapping(esp_attribute="Since", crm_column="createdon", date_format="%d.%m.%Y %H:%M",
                     time_zone="Europe/Vienna"),
        FieldMapping(esp_attribute="Born", crm_column="birthdate", date_format="%d.%m.%Y", time_zone="Pacific/Apia"),
        FieldMapping(esp_attribute="Odd", crm_column="address1_city", date_format="%Y"),
    )}, transforms={"short": {"Acme Corporation": "Acme"}})
    assert columns_to_read(config)[CrmTable.CONTACT] == [
        "gendercode", f"gendercode@{FORMATTED}", "_parentcustomerid_value", f"_parentcustomerid_value@{FORMATTED}",
        "createdon", "birthdate", "address1_city"]
    sub = Mapper(config).map(contact(attributes={
        "gendercode": 2, f"gendercode@{FORMATTED}": "Female",
        "_parentcustomerid_value": "9c1d0f3e-0000-0000-0000-000000000001",
        f"_parentcustomerid_value@{FORMATTED}": "Acme Corporation",
        "createdon": "2026-07-01T22:30:00Z", "birthdate": "1990-12-31", "address1_city": "Graz"}))
    assert isinstance(sub, Subscriber)
    assert sub.attributes == {"Gender": "Female", "Gender code": "2", "Company": "Acme",
                              "Since": "02.07.2026 00:30",  # summer time in Vienna: UTC+2, the next day
                              "Born": "31.12.1990",  # a date alone stays that date in every zone
                              "Odd": "Graz"}  # not a date: as CRM gave it
    empty = Mapper(config).map(contact(attributes={"gendercode": None}))
    assert isinstance(empty, Subscriber) and empty.attributes["Gender"] == ""
