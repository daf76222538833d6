"""``check-config --online`` for the ``[sync.<table>]`` rules: do they fit the CRM and the ESP account?

- each CRM column exists on its table; a rule that writes CRM (``to_crm``, ``both``) does not
  name a read-only column; an ``optionset`` rule names an option-set column whose labels are
  unique (else its way back is ambiguous);
- each ESP attribute is a profile attribute of the account (``Email Address`` is the
  subscriber's own address).

Each problem names the file, the line, the section and the column, and what to do.
"""

from __future__ import annotations

from typing import Any, Iterable

from connector.models import CrmTable
from connector.sync.values import EMAIL_ATTRIBUTES


def _where(config: Any, rule: Any) -> str:
    path = str(config.source_path) if config.source_path else "service.ini"
    return f"{path}:{rule.line} [sync.{rule.table}] {rule.crm_column}"


def crm_rule_problems(config: Any, crm: Any) -> tuple[list[str], int]:
    """(problems, rules checked) of every sync rule against the CRM's column metadata."""
    problems: list[str] = []
    count = 0
    for table, rules in config.sync_rules.items():
        if not rules:
            continue
        columns = crm.column_definitions(CrmTable(table)) or {name: None for name in crm.column_names(CrmTable(table))}
        for rule in rules:
            count += 1
            info = columns.get(rule.crm_column, False)
            if info is False:
                problems.append(f"{_where(config, rule)}: CRM table {table!r} has no column {rule.crm_column!r} "
                                "(hint: use the column's logical name, as Power Apps shows it; custom columns "
                                "carry their publisher prefix)")
                continue
            if info is None:
                continue
            if rule.to_crm and not info.writable:
                problems.append(f"{_where(config, rule)}: direction {rule.direction} writes the read-only CRM column "
                                f"{rule.crm_column!r} (hint: make the rule to_esp)")
            if rule.chain.needs_options:
                if not info.options:
                    problems.append(f"{_where(config, rule)}: optionset on {rule.crm_column!r}, which is a "
                                    f"{info.type} column, not an option set (hint: remove optionset from the line)")
                elif rule.to_crm and rule.chain.with_options(info.options).lossy:
                    problems.append(f"{_where(config, rule)}: {rule.chain.with_options(info.options).lossy}, so an "
                                    "ESP label cannot be turned back into one option (hint: make the rule to_esp, "
                                    "or give the options distinct labels in CRM)")
    return problems, count


def esp_rule_problems(config: Any, attributes: Iterable[str]) -> list[str]:
    have = {name.strip().casefold() for name in attributes} | set(EMAIL_ATTRIBUTES)
    problems = []
    for rules in config.sync_rules.values():
        for rule in rules:
            if rule.esp_attribute.strip().casefold() not in have:
                problems.append(f"{_where(config, rule)}: ESP attribute {rule.esp_attribute!r} does not exist in the "
                                f"ESP account {config.esp.name!r} (hint: add the profile attribute in Marketing Cloud, "
                                "Subscribers > Profile Management, or sync the column with an attribute it has)")
    return problems
