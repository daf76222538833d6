"""``[sync.TABLE]`` lines (CRM column = ESP attribute | direction | transforms), checked line by line.

The rules themselves are ``connector.sync.rules``; here each line's problem is reported with
its file, line, section and column, and the rules across lines and sections are checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from connector.config.mappings import control_problem, table_sections
from connector.sync.rules import RuleProblem, SyncRule, check_unique, parse_rule

if TYPE_CHECKING:
    from connector.config.loader import Loader


def build_sync_rules(loader: Loader, transforms: Mapping[str, Mapping[str, str]]) -> dict[str, tuple[SyncRule, ...]]:
    """``{"contact": (SyncRule, ...), ...}``; a bad line is reported and left out."""
    found: dict[str, tuple[SyncRule, ...]] = {}
    for name, table, raw in table_sections(loader, "sync", "sync"):
        rules = []
        for item in raw.items.values():
            if control_problem(loader, name, item):
                continue
            try:
                rules.append(parse_rule(table, item.key, item.value, item.line, transforms))
            except RuleProblem as exc:
                loader.problem(name, item.key, item.line, exc.message, exc.hint)
        for rule, message, hint in check_unique(rules):
            loader.problem(name, rule.crm_column, rule.line, message, hint)
            rules.remove(rule)
        found[table] = tuple(rules)
    _check_data_extension(loader)
    _check_synced_lists(loader)
    sends = loader.raw.get("sends")
    by_email = sends is not None and (item := sends.items.get("subscriber_key")) is not None \
        and item.value.strip().lower() == "email"
    if found and by_email:
        loader.problem("sends", "subscriber_key", item.line,
                       "[sync.*] rules need subscribers keyed by the CRM record id",
                       "set subscriber_key = record_id, or remove the [sync.*] sections")
    return found


def _check_data_extension(loader: Loader) -> None:
    """A synced data extension needs its modified-date field, and has no status to unsubscribe."""
    raw = loader.raw.get("sync")
    items = raw.items if raw is not None else {}
    extension = items.get("data_extension")
    if extension is None or not extension.value.strip():
        return
    field = items.get("data_extension_modified_field")
    if field is None or not field.value.strip():
        loader.problem("sync", "data_extension_modified_field", extension.line,
                       "a synced data extension needs the Date field that holds each row's last change",
                       "name it: data_extension_modified_field = ModifiedDate (the field journeys and imports set)")
    deleted = items.get("crm_deleted")
    if deleted is not None and deleted.value.strip().lower() in ("unsubscribe", "remove_from_lists"):
        loader.problem("sync", "crm_deleted", deleted.line, "a data extension row has no status to unsubscribe "
                       "and no list to leave", "use crm_deleted = leave with data_extension")


def _check_synced_lists(loader: Loader) -> None:
    """``crm_deleted = remove_from_lists`` needs the lists to remove from."""
    raw = loader.raw.get("sync")
    items = raw.items if raw is not None else {}
    deleted = items.get("crm_deleted")
    if deleted is None or deleted.value.strip().lower() != "remove_from_lists":
        return
    lists = items.get("synced_lists")
    keys = [k.strip() for k in (lists.value if lists is not None else "").split(",") if k.strip()]
    if not keys:
        loader.problem("sync", "synced_lists", deleted.line, "crm_deleted = remove_from_lists needs the lists a "
                       "subscriber is taken off", "name their customer keys: synced_lists = newsletter, offers")
    elif any(k.casefold().startswith("all subscribers") for k in keys):
        loader.problem("sync", "synced_lists", lists.line if lists is not None else deleted.line,
                       "a subscriber leaves All Subscribers only when it is deleted",
                       "name the lists it should leave, or use crm_deleted = unsubscribe")
