"""Suppression list files and the send's work database."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.suppression import ResolveCheckpoint, SendWorkspace, read_suppression_file


def test_plain_list_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("# people who asked\nA@Example.com\n\n  b@example.org  \n", encoding="utf-8")
    assert list(read_suppression_file(path)) == ["a@example.com", "b@example.org"]


@pytest.mark.parametrize("text", ["Name;E-Mail\nAnna;A@x.io\n", "id,EmailAddress,x\n1,a@x.io,2\n"])
def test_csv_with_an_email_column(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.csv"
    path.write_text(text, encoding="utf-8-sig")
    assert list(read_suppression_file(path)) == ["a@x.io"]


def test_unreadable_or_columnless_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        list(read_suppression_file(tmp_path / "missing.txt"))
    assert info.value.key == "suppression_file"
    path = tmp_path / "s.csv"
    path.write_text("name,phone\nAnna,1\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        list(read_suppression_file(path))


def test_workspace_keeps_only_committed_work(tmp_path: Path) -> None:
    with SendWorkspace(tmp_path / "work.db") as ws:
        ws.record(["a@x.io"])
        ws.commit(ResolveCheckpoint(resolved=1))
        ws.record(["b@x.io"])  # never committed: the process "dies" here
    with SendWorkspace(tmp_path / "work.db") as ws:
        assert ws.checkpoint().resolved == 1
        assert ws.seen_before(["a@x.io", "b@x.io"]) == {"a@x.io"}
        assert ws.load_suppression(["c@x.io", "c@x.io"]) == 1
        assert ws.suppressed(["c@x.io", "d@x.io"]) == {"c@x.io"}
