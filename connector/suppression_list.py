"""The statutory suppression list (an "RTR / Robinson list"): addresses and domains never mailed.

``[suppression]`` names its source: a file (``file``: one entry a line, ``#`` comments,
or a CSV whose header names an e-mail column) or a SQL query (``source_url`` +
``query``, the first column of each row). An entry is an address (``anna@example.com``)
or a domain (``@example.com``, ``*@example.com`` or ``example.com``); a domain suppresses
every address at that domain and at its subdomains. A line that is neither is
*malformed*: reported with its line (or row) number and skipped, the rest is read.

Entries are stored in the state database as 16-byte BLAKE2b digests of ``a:<address>`` /
``d:<domain>`` (``connector.state.suppression``), never as text and never all in memory:
a refresh streams the source ``SUPPRESSION_CHUNK`` entries at a time, and a send asks for
the digests of one chunk's addresses and their domains.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterator

from connector.errors import ConfigError
from connector.mapping import is_valid_email, normalize_email
from connector.steps.kpi.source import KpiSource
from connector.suppression import EMAIL_HEADERS, csv_header

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)(?:{_LABEL}\.)+(?:[a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})$")

ADDRESS, DOMAIN = "address", "domain"


@dataclass(frozen=True)
class Entry:
    """One entry of the list: an address or a domain (normalized), or the problem of its line."""

    line: int
    kind: str = ""  # ADDRESS, DOMAIN, or "" for a malformed line
    value: str = ""
    problem: str = ""


def entry_digest(kind: str, value: str) -> bytes:
    """The stored form of an entry: 16 bytes of BLAKE2b over ``a:<address>`` or ``d:<domain>``."""
    return hashlib.blake2b(f"{kind[0]}:{value}".encode("utf-8"), digest_size=16).digest()


def _ascii_domain(text: str) -> str | None:
    try:
        ascii_form = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        return None
    return ascii_form if _DOMAIN.match(ascii_form) else None


def parse_entry(text: str, line: int) -> Entry:
    """An address or a domain from one line's text (already stripped), or a malformed entry."""
    value = normalize_email(text)
    if value.startswith("*@"):
        value = value[1:]
    if value.startswith("@") or "@" not in value:
        domain = _ascii_domain(value.lstrip("@"))
        if domain is None:
            return Entry(line, problem=f"{text[:80]!r} is neither an e-mail address nor a domain")
        return Entry(line, DOMAIN, domain)
    if not is_valid_email(value):
        return Entry(line, problem=f"{text[:80]!r} is not a valid e-mail address")
    local, _, domain = value.rpartition("@")
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None:
        return Entry(line, problem=f"{text[:80]!r}: the domain {domain[:60]!r} is not valid")
    return Entry(line, ADDRESS, f"{local}@{ascii_domain}")


def lookup_digests(address: str) -> list[tuple[bytes, str]]:
    """The digests that suppress a normalized address, each with its reason: the address itself,
    then its domain and each parent domain (``a@mail.example.com``: mail.example.com, example.com)."""
    local, _, domain = address.rpartition("@")
    ascii_domain = _ascii_domain(domain) or domain
    found = [(entry_digest(ADDRESS, f"{local}@{ascii_domain}"), "the address is on the suppression list")]
    labels = ascii_domain.split(".")
    for start in range(len(labels) - 1):
        parent = ".".join(labels[start:])
        found.append((entry_digest(DOMAIN, parent), f"the domain {parent} is on the suppression list"))
    return found


def read_list_file(path: Path) -> Iterator[Entry]:
    """The entries of a list file, streamed, with their line numbers (blank and ``#`` lines skipped)."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read the suppression list {path}: {exc.strerror}; fix [suppression] file",
                          section="suppression", key="file") from exc
    with handle:
        first = handle.readline()
        header = csv_header(first, path, "suppression", "file")
        if header is not None:
            delimiter, names, column = header
            reader = csv.reader(handle, delimiter=delimiter)
            for row in reader:
                line = reader.line_num + 1
                cell = row[column].strip() if len(row) > column else ""
                if cell:
                    yield parse_entry(cell, line)
                elif any(c.strip() for c in row):
                    yield Entry(line, problem=f"no value in column {column + 1} ({names[column]})")
            return
        for number, line_text in enumerate(chain([first], handle), start=1):
            text = line_text.strip()
            if text and not text.startswith("#") and not (number == 1 and text.lower() in EMAIL_HEADERS):
                yield parse_entry(text, number)


def read_list_query(url: str, query: str, *, timeout: float, chunk: int) -> Iterator[Entry]:
    """The entries of ``[suppression] query`` (the first column of each row), numbered by row."""
    source = SuppressionSource(url, query, timeout=timeout)
    try:
        number = 0
        for _columns, part in source.stream(chunk):
            for row in part:
                number += 1
                text = "" if row[0] is None else str(row[0]).strip()
                yield parse_entry(text, number) if text else Entry(number, problem="an empty value")
    finally:
        source.close()


class SuppressionSource(KpiSource):
    """``[suppression] query`` against ``[suppression] source_url``: the same streamed, read-only
    query as the KPI source's (``connector.steps.kpi.source``), its errors naming this section."""

    PEER = "suppression source"
    LABELS = ("suppression source", "suppression", "read the suppression list")
