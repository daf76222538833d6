"""Alternate-key values built from outside data, in a form Dataverse can address a record by.

Dataverse cannot address a record (GET, PATCH, DELETE, ``@odata.bind``) by an
alternate-key value holding ``< > * % & : / \\`` (Power Apps docs, "Define alternate keys
to reference records", section "Unicode characters in key value"), nor ``+``
(MicrosoftDocs/dynamics-365-customer-engagement issue 2697); string keys match
case-insensitively (the database collation). Subscriber keys, e-mail addresses and ESP
ids can hold any of these, so a key built from them keeps only ``[a-z0-9._-]`` and
carries a digest of the exact inputs for identity.
"""

from __future__ import annotations

import hashlib
import re

UNADDRESSABLE = frozenset("<>*%&:/\\+?#")
"""Characters a key value must not hold (the documented ones, ``+``, and URL delimiters)."""
DIGEST_CHARS = 40
"""Hex digits of SHA-256 kept in a key (160 bits: collisions are out of reach)."""
_UNSAFE_RUN = re.compile(r"[^a-z0-9._-]+")


def addressable(value: str) -> bool:
    """True when Dataverse can address a record by this alternate-key value."""
    return bool(value) and value.isprintable() and not any(ch in UNADDRESSABLE for ch in value)


def key_part(text: str, limit: int) -> str:
    """A readable, safe fragment of ``text``: lower case, runs of other characters as ``-``."""
    return _UNSAFE_RUN.sub("-", text.lower()).strip("-")[:limit] or "x"


def digest(*parts: str) -> str:
    """Stable digest of the exact, case-sensitive ``parts`` (separated so that none can run into another)."""
    joined = "\x1f".join(parts).encode("utf-8")
    return hashlib.sha256(joined).hexdigest()[:DIGEST_CHARS]
