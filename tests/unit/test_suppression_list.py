"""The statutory suppression list ([suppression]): parsing, refresh into a real state database
(SQLite and, where available, PostgreSQL), a SQL source, and what a send skips."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from connector.config.models import Config, ServiceSettings, StateSettings, SuppressionSettings
from connector.steps import StepContext
from connector.steps.suppression import REFRESHED_KEY, run_suppression_refresh
from connector.suppression_list import DOMAIN, entry_digest, lookup_digests, parse_entry, read_list_file


def _unused() -> None:
    raise AssertionError("the suppression refresh needs no CRM or ESP")


def ctx_for(store, tmp_path: Path, **suppression) -> StepContext:  # noqa: ANN001 - a StateStore
    config = Config(service=ServiceSettings(data_dir=tmp_path), state=StateSettings(lease_seconds=30),
                    suppression=SuppressionSettings(**suppression))
    return StepContext(config=config, state=store, crm=_unused, esp=_unused, file_drop=_unused, staging=_unused,
                       run_id="t", holder="me")


def test_entries_addresses_domains_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "rtr.txt"
    path.write_text("# RTR list\nAnna@Example.com\n@Blocked.example\n*@wild.example\nplain.example\n\n"
                    "not an address\nx@@y\nbücher.example\n", encoding="utf-8")
    entries = list(read_list_file(path))
    good = [(e.line, e.kind, e.value) for e in entries if e.kind]
    assert good == [(2, "address", "anna@example.com"), (3, "domain", "blocked.example"),
                    (4, "domain", "wild.example"), (5, "domain", "plain.example"),
                    (9, "domain", "xn--bcher-kva.example")]
    bad = [(e.line, e.problem) for e in entries if not e.kind]
    assert [line for line, _ in bad] == [7, 8] and "not an address" in bad[0][1]


def test_csv_rows_are_numbered_by_file_line(tmp_path: Path) -> None:
    path = tmp_path / "rtr.csv"
    path.write_text("Name;E-Mail\nAnna;a@x.io\nBen;\nCarl;nope\n", encoding="utf-8")
    entries = list(read_list_file(path))
    assert [(e.line, e.kind or e.problem[:8]) for e in entries] == [(2, "address"), (3, "no value"), (4, "'nope' i")]


def test_a_domain_suppresses_its_subdomains_but_not_a_lookalike() -> None:
    digests = {d for d, _ in lookup_digests("a@mail.blocked.example")}
    assert entry_digest(DOMAIN, "blocked.example") in digests
    assert entry_digest(DOMAIN, "ocked.example") not in digests
    assert parse_entry("a@b", 1).problem  # no top-level domain


def test_refresh_counts_adds_and_removes(state_store, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "rtr.txt"
    path.write_text("a@x.io\nb@x.io\n@blocked.example\nbad line\na@x.io\n", encoding="utf-8")
    ctx = ctx_for(state_store, tmp_path, file=path)
    first = run_suppression_refresh(ctx)
    assert first.ok and first.details["added"] == 3 and first.details["malformed"] == 1
    assert first.details["read"] == 4 and "line 4" in first.message
    assert state_store.suppression_counts() == {"address": 2, "domain": 1}
    unchanged = run_suppression_refresh(ctx)
    assert unchanged.details["unchanged_source"] and "not read again" in unchanged.message
    path.write_text("a@x.io\nc@x.io\n", encoding="utf-8")
    second = run_suppression_refresh(ctx)
    assert (second.details["added"], second.details["removed"]) == (1, 2)
    assert state_store.suppression_counts() == {"address": 2}
    stored = json.loads(state_store.get_meta(REFRESHED_KEY))
    assert stored["added"] == 1 and stored["source"].startswith("file:")
    hits = state_store.suppression_matches([entry_digest("address", "c@x.io"), entry_digest("address", "b@x.io")])
    assert hits == {entry_digest("address", "c@x.io")}


def test_refresh_from_a_sql_table(state_store, tmp_path: Path) -> None:  # noqa: ANN001
    db = tmp_path / "rtr.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table robinson (email text)")
        conn.executemany("insert into robinson values (?)", [("A@x.io",), ("@blocked.example",), ("junk",), (None,)])
    ctx = ctx_for(state_store, tmp_path, source_url=f"sqlite:///{db}", query="select email from robinson")
    outcome = run_suppression_refresh(ctx)
    assert outcome.details["added"] == 2 and outcome.details["malformed"] == 2
    assert "line 3" in outcome.message and "line 4: an empty value" in outcome.message
    bad = ctx_for(state_store, tmp_path, source_url=f"sqlite:///{db}", query="select email from nowhere")
    with pytest.raises(Exception, match=r"suppression source sqlite:.*no such table: nowhere"):
        run_suppression_refresh(bad)


def test_command_and_config_checks(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from connector.cli import main
    from connector.config import load_config
    from connector.errors import ConfigError

    listed = tmp_path / "rtr.txt"
    listed.write_text("a@x.io\n@blocked.example\noops\n", encoding="utf-8")
    ini = tmp_path / "service.ini"
    ini.write_text(f"[service]\ndata_dir = {tmp_path / 'data'}\n[suppression]\nfile = {listed}\n", encoding="utf-8")
    assert main(["suppression", "-c", str(ini)]) == 0
    out = capsys.readouterr().out
    assert "2 entries read (1 addresses, 1 domains), 2 added" in out and "line 3:" in out
    both = tmp_path / "both.ini"
    both.write_text(f"[suppression]\nfile = {listed}\nsource_url = sqlite:///{tmp_path / 'x.db'}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(both, env={})
    assert "[suppression] source_url: give either file or source_url, not both" in str(info.value)
    assert "[suppression] query: needs a query once source_url is set" in str(info.value)
