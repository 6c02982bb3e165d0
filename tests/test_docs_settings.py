"""The settings that README.md and docs/operations.md document are the settings the code has.

Each settings table is parsed: every documented ``postgres_<name>`` must be a config field
with the documented default, and a keyword ``<name>`` of both builder methods that sets that
field. Every config field must in turn be documented in the README and be a builder keyword,
so a new setting cannot be added to one place and forgotten in another.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from cistell import ConfigField
from pynenc import PynencBuilder

from pynenc_postgres import builder as builder_module
from pynenc_postgres import conf
from pynenc_postgres.builder import PostgresSettings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETTINGS_TABLES = [ROOT / "README.md", ROOT / "docs" / "operations.md"]
URL = "postgresql://pynenc@db-host:5432/app"

_ROW = re.compile(r"^\| `(postgres_\w+)` \| ([^|]*) \| (.*) \|\s*$")
# How the tables write the default of a setting whose default is "" (nothing configured).
_EMPTY_DEFAULTS = {"*(required)*", "*(server's)*", "empty"}


def config_fields() -> dict[str, tuple[type[Any], Any]]:
    """Every ``postgres_*`` config field of the plugin: its config class and default."""
    found: dict[str, tuple[type[Any], Any]] = {}
    for _, cls in inspect.getmembers(conf, inspect.isclass):
        if cls.__module__ != conf.__name__:
            continue
        for name, value in vars(cls).items():
            if name.startswith("postgres_") and isinstance(value, ConfigField):
                found[name] = (cls, getattr(cls, name))
    return found


def documented_rows(path: Path) -> list[tuple[str, str, str]]:
    """(field, default cell, meaning cell) of each row of the settings table in ``path``.

    The settings table is the one whose header ends with ``| Default | Meaning |``.
    """
    rows: list[tuple[str, str, str]] = []
    in_table = False
    for line in path.read_text().splitlines():
        if line.startswith("|") and line.rstrip().endswith("| Default | Meaning |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and (match := _ROW.match(line)):
            field, default, meaning = match.groups()
            rows.append((field, default.strip(), meaning.strip()))
    assert rows, f"no settings table found in {path.name}"
    return rows


def all_documented_rows() -> list[tuple[str, str, str, str]]:
    return [(path.name, *row) for path in SETTINGS_TABLES for row in documented_rows(path)]


def documented_value(cell: str, like: Any) -> Any:
    """The default as the table writes it, read as a value of the real default's type."""
    text = cell.strip().strip("`")
    if cell in _EMPTY_DEFAULTS:
        return ""
    if isinstance(like, bool):
        return {"true": True, "false": False}.get(text, text)
    if isinstance(like, int):
        return int(text.replace(",", ""))
    if isinstance(like, float):
        return float(text.replace(",", ""))
    return text


def other_value(field: str, default: Any) -> Any:
    """A value other than the default, valid for the field."""
    valid = {
        "postgres_url": URL,
        "postgres_schema": "docs_check",
        "postgres_synchronous_commit": "local",
        "postgres_application_name": "docs-check",
        "postgres_apply_settings": "transaction",
        "postgres_broker_wakeup": "poll",
        "postgres_broker_claim_synchronous_commit": "local",
        "postgres_broker_listener_scope": "process",
        "postgres_retention": "14d",
        "postgres_retention_by_status": "failed=30d,success=7d",
        "postgres_retention_interval": "10m",
    }
    if field in valid:
        return valid[field]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 7
    if isinstance(default, float):
        return default * 2 + 0.25
    raise AssertionError(f"give a valid non-default value for {field} in other_value()")


ROWS = all_documented_rows()


@pytest.mark.parametrize("method", ["postgres", "postgres_state_backend"])
@pytest.mark.parametrize(
    ("doc", "field", "default", "meaning"), ROWS, ids=[f"{r[0]}:{r[1]}" for r in ROWS]
)
def test_each_documented_setting_is_a_builder_keyword_that_sets_its_field(
    doc: str, field: str, default: str, meaning: str, method: str
) -> None:
    fields = config_fields()
    assert field in fields, f"{doc} documents {field}, which is no config field"
    cls, real_default = fields[field]
    assert documented_value(default, real_default) == real_default, (
        f"{doc} says {field} defaults to {default}; it defaults to {real_default!r}"
    )
    keyword = field.removeprefix("postgres_")
    value = other_value(field, real_default)
    built = getattr(PynencBuilder(), method)(**{"url": URL, keyword: value})
    # The config class that declares the field reads it from the builder's values.
    assert getattr(cls(config_values=built._config), field) == value


def test_every_config_field_is_in_the_readme_table_and_a_builder_keyword() -> None:
    documented = {field for field, _, _ in documented_rows(ROOT / "README.md")}
    fields = set(config_fields())
    assert fields - documented == set(), "config fields missing from README's settings table"
    keywords = {"url", *PostgresSettings.__annotations__}
    assert {f.removeprefix("postgres_") for f in fields} == keywords


def test_the_readme_lists_exactly_the_builder_keywords() -> None:
    readme = (ROOT / "README.md").read_text()
    pattern = r"take the same settings as\s+keyword arguments[^:]*:(.*?)\.\s"
    sentence = re.search(pattern, readme, re.S)
    assert sentence is not None, "README no longer lists the builder keywords"
    listed = re.findall(r"`(\w+)`", sentence.group(1))
    assert listed == ["url", *PostgresSettings.__annotations__]


_CALL = re.compile(r"\.(postgres|postgres_state_backend)\(([^()]*)\)")


def test_every_builder_call_in_the_docs_uses_real_keywords() -> None:
    keywords = {"url", *PostgresSettings.__annotations__}
    calls = [
        (path.name, method, args)
        for path in DOCS
        for method, args in _CALL.findall(path.read_text())
    ]
    assert len(calls) > 5
    for doc, method, args in calls:
        used = set(re.findall(r"\b(\w+)\s*=", args))
        assert used <= keywords, f"{doc}: .{method}({args}) uses unknown keywords"


def _timeout_texts(field: str) -> dict[str, str]:
    """Every description of a timeout setting that a user reads: tables and docstrings."""
    texts = {f"{doc} table": meaning for doc, name, _, meaning in ROWS if name == field}
    conf_doc = inspect.getdoc(conf.ConfigPostgres) or ""
    match = re.search(rf"{field}:\n(.*?)\n:cvar", conf_doc, re.S)
    assert match is not None, f"conf.py does not describe {field}"
    texts["conf.py"] = match.group(1)
    builder_doc = inspect.getdoc(builder_module.PostgresSettings) or ""
    keyword = field.removeprefix("postgres_")
    match = re.search(rf":param {keyword}:(.*?)\n(:param|\n)", builder_doc, re.S)
    assert match is not None, f"builder.py does not describe {keyword}"
    texts["builder.py"] = match.group(1)
    for path in DOCS:
        for sentence in re.split(r"(?<=\.)\s", path.read_text()):
            if f"`{field}`" in sentence and re.search(r"\b0\b", sentence) and "|" not in sentence:
                texts[f"{path.name}: {sentence[:40]}..."] = sentence
    return texts


@pytest.mark.parametrize(
    ("field", "expected_places"),
    [
        (
            "postgres_statement_timeout_ms",
            {"README.md table", "operations.md table", "conf.py", "builder.py"},
        ),
        ("postgres_migration_lock_timeout_ms", {"README.md table", "conf.py", "builder.py"}),
    ],
)
def test_a_timeout_of_zero_is_described_as_what_the_code_does(
    field: str, expected_places: set[str]
) -> None:
    """0 sends no timeout at all, so the role's or server's own value stays in force
    (``tests/reliability/test_statement_timeout.py`` shows it); it disables nothing."""
    texts = _timeout_texts(field)
    assert expected_places <= set(texts)
    for where, text in texts.items():
        words = " ".join(text.split()).lower()
        for wrong in ("disable", "forever", "without limit"):
            assert wrong not in words, f"{where}: {text!r}"
        assert "role" in words and "server" in words, f"{where}: {text!r}"
