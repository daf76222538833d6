"""service.ini.example and docs/configuration.md document every option, with the real defaults."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from connector.config import VALUE_TRANSFORMS, load_config, secret_keys, section_models

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "service.ini.example"
DOCS = ROOT / "docs" / "configuration.md"


def _example_sections() -> dict[str, str]:
    """Section name -> its text in the example."""
    parts = re.split(r"^\[([^\]]+)\]\s*$", EXAMPLE.read_text(encoding="utf-8"), flags=re.M)
    return {parts[i].lower(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_example_is_a_valid_config(tmp_path: Path) -> None:
    copy = tmp_path / "service.ini"
    shutil.copy(EXAMPLE, copy)
    config = load_config(copy, env={})
    assert config.mappings["contact"][2].lookup == "countries"
    assert config.transforms["countries"]["Austria"] == "Österreich"


def test_example_shows_the_real_defaults(tmp_path: Path) -> None:
    copy = tmp_path / "service.ini"
    shutil.copy(EXAMPLE, copy)
    (tmp_path / "empty.ini").write_text("")
    documented, real = load_config(copy, env={}), load_config(tmp_path / "empty.ini", env={})
    for name in section_models():
        assert getattr(documented, name) == getattr(real, name), f"[{name}] in the example differs from the code"


@pytest.mark.parametrize("section", sorted(section_models()))
def test_every_option_is_in_the_example(section: str) -> None:
    text = _example_sections().get(section)
    assert text is not None, f"[{section}] is missing from service.ini.example"
    for key in section_models()[section].model_fields:
        secret = (section, key) in secret_keys() and key != "url"
        pattern = rf"^# {key} =\s*$" if secret else rf"^{key} =.*$"
        assert re.search(pattern, text, flags=re.M), f"[{section}] {key} is not documented in service.ini.example"
        assert re.search(rf"^#.*\S.*\n(#.*\n)*{pattern}", text, flags=re.M), f"[{section}] {key} has no comment"


def _doc_sections() -> dict[str, str]:
    parts = re.split(r"^### \[([^\]]+)\]\s*$", DOCS.read_text(encoding="utf-8"), flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("section", sorted(section_models()))
def test_every_option_is_in_the_docs(section: str) -> None:
    text = _doc_sections().get(section)
    assert text is not None, f"docs/configuration.md has no ### [{section}] table"
    documented = re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.M)
    assert documented == list(section_models()[section].model_fields), f"[{section}] table in docs differs"


def test_docs_name_every_secret_variable_and_transform() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for section, key in secret_keys():
        assert f"CONNECTOR_{section.upper()}_{key.upper()}" in text
    for name in VALUE_TRANSFORMS:
        assert f"`{name}`" in text


def test_docs_defaults_match_the_example() -> None:
    example = _example_sections()
    for section, text in _doc_sections().items():
        for key, default in re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", text, flags=re.M):
            default = default.strip()
            if default == "(secret)":
                continue
            value = "" if default == "(blank)" else default.strip("`")
            assert re.search(rf"^{key} = ?{re.escape(value)}$", example[section], flags=re.M), (section, key)


def _numeric_options() -> list[tuple[str, str, str]]:
    from connector.config import number_range

    return [(section, key, number_range(info)) for section, model in section_models().items()
            for key, info in model.model_fields.items() if info.annotation in (int, float)]


@pytest.mark.parametrize(("section", "key", "allowed"), _numeric_options())
def test_every_number_has_a_range_documented_in_both_places(section: str, key: str, allowed: str) -> None:
    assert allowed, f"[{section}] {key} has no upper and lower bound in connector/config/models.py"
    comment = re.search(rf"((?:^#.*\n)+)^{key} =", _example_sections()[section], flags=re.M)
    assert comment and f"# Allowed: {allowed}." in comment.group(1), f"service.ini.example [{section}] {key}"
    row = re.search(rf"^\| `{key}` \|.*$", _doc_sections()[section], flags=re.M)
    assert row and f"Allowed: {allowed}." in row.group(0), f"docs/configuration.md [{section}] {key}"
