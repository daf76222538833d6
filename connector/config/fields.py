"""What the models say about each option: secrets, lists, paths, allowed ranges, section names."""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from connector import secrets as _secrets
from connector.config.models import Config, Section, section_names
from connector.models import CrmTable


def section_models() -> dict[str, type[Section]]:
    """``{"service": ServiceSettings, ...}`` for every plain section."""
    return {name: Config.model_fields[name].annotation for name in section_names()}  # type: ignore[misc]


def secret_keys() -> set[tuple[str, str]]:
    """(section, key) of every option that may come from the environment or the secrets file."""
    keys = set(_secrets.URL_SECRET_KEYS)
    for name, model in section_models().items():
        for key, info in model.model_fields.items():
            if is_secret(info):
                keys.add((name, key))
    return keys


def is_secret(info: FieldInfo) -> bool:
    return SecretStr in (info.annotation, *typing.get_args(info.annotation))


def is_optional(info: FieldInfo) -> bool:
    return type(None) in typing.get_args(info.annotation)


def is_tuple(info: FieldInfo) -> bool:
    return typing.get_origin(info.annotation) is tuple


def is_path(info: FieldInfo) -> bool:
    return Path in (info.annotation, *typing.get_args(info.annotation))


MAPPING_TABLES = tuple(t.value for t in CrmTable)


def known_section(name: str) -> bool:
    return name in plain_sections() or name.startswith(("mapping.", "transform.", "sync."))


@functools.cache
def plain_sections() -> frozenset[str]:
    return frozenset(section_names())


def coerce(info: FieldInfo, value: str) -> object:
    """Raw ini text -> what pydantic validates: comma lists for tuples, blank optional = None."""
    if is_tuple(info):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not value and is_optional(info):
        return None
    if typing.get_origin(info.annotation) is Literal:  # level = info -> INFO
        matches = [c for c in typing.get_args(info.annotation) if str(c).casefold() == value.casefold()]
        return matches[0] if len(matches) == 1 else value
    return value


def number_range(info: FieldInfo) -> str:
    """The allowed range of a numeric option as written in the docs, e.g. ``1 to 64``; "" if none."""
    low = high = None
    low_open = False
    for item in info.metadata:
        if getattr(item, "ge", None) is not None:
            low = item.ge
        elif getattr(item, "gt", None) is not None:
            low, low_open = item.gt, True
        if getattr(item, "le", None) is not None:
            high = item.le
    if low is None or high is None:
        return ""
    return f"more than {_number(low)}, up to {_number(high)}" if low_open else f"{_number(low)} to {_number(high)}"


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
