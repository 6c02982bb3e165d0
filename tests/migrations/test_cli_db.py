"""``pynenc-postgres db history``, ``db current`` in every state, and the SQL ranges of ``db sql``.

The SQL that ``db sql`` prints for review is run here against a real database: it must
do exactly what ``db upgrade``/``db downgrade`` do.
"""

from __future__ import annotations

import ast

import psycopg
import pytest

from pynenc_postgres.cli import main
from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.errors import SchemaAheadError
from pynenc_postgres.db.settings import DatabaseSettings
from tests.migrations.conftest import VERSIONS, NewerScripts, catalog


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def shipped() -> list[tuple[str, str | None, str]]:
    """(revision, down_revision, docstring summary) of each revision file, oldest first."""
    found = []
    for path in sorted(VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py")):
        module = ast.parse(path.read_text())
        values = {
            node.target.id: ast.literal_eval(node.value)
            for node in module.body
            if isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        }
        doc = (ast.get_docstring(module) or "").split("\n\n")[0]  # its first paragraph
        found.append((values["revision"], values["down_revision"], doc))
    return found


def test_history_lists_every_shipped_revision_newest_first_without_a_database(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYNENC__POSTGRES_URL", raising=False)
    code, out, err = cli(capsys, "db", "history")
    assert (code, err) == (0, "")
    revisions = shipped()
    head = revisions[-1][0]
    assert out == "".join(
        f"{down or 'base'} -> {revision}{' (head)' if revision == head else ''}: {doc}\n"
        for revision, down, doc in reversed(revisions)
    )


def test_current_names_each_state(
    empty_database_url: str,
    newer_scripts: NewerScripts,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = ["--url", empty_database_url]
    head, newer = newer_scripts.old_head, newer_scripts.new_head

    assert cli(capsys, "db", "current", *url) == (
        0,
        f"none (schema not created) (missing; head is {head})\n",
        "",
    )
    assert cli(capsys, "db", "upgrade", *url)[0] == 0
    assert cli(capsys, "db", "current", *url) == (0, f"{head} (up to date; head is {head})\n", "")

    with monkeypatch.context() as newer_package:
        newer_package.setattr(schema, "migrations_path", lambda: newer_scripts.path)
        assert cli(capsys, "db", "current", *url) == (0, f"{head} (behind; head is {newer})\n", "")
        assert cli(capsys, "db", "upgrade", *url)[0] == 0
    dispose_all()
    assert cli(capsys, "db", "current", *url) == (0, f"{newer} (ahead; head is {head})\n", "")


def run_sql(url: str, script: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script)


def never_migrated(url: str) -> None:
    """Drop the version table that a downgrade to base keeps: a script that starts at base
    creates it, as on a database that was never migrated."""
    run_sql(url, "DROP TABLE pynenc_alembic_version")


def test_reviewed_sql_ranges_do_what_the_migrations_do(
    empty_database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYNENC__POSTGRES_URL", raising=False)  # `db sql` needs no database
    url = empty_database_url
    settings = DatabaseSettings(url=url)
    first = shipped()[0][0]
    empty = catalog(url)
    schema.upgrade(settings, first)
    at_first = catalog(url)
    schema.upgrade(settings)
    migrated = catalog(url)
    schema.downgrade(settings, "base")
    never_migrated(url)
    assert catalog(url) == empty

    def sql(revision_range: str) -> str:
        code, out, err = cli(capsys, "db", "sql", revision_range)
        assert (code, err) == (0, ""), err
        return out

    # base to head, printed with the plain revision as the README shows it
    run_sql(url, sql("head"))
    assert catalog(url) == migrated
    assert schema.current(settings) == schema.head_revision()

    # head:base, the downgrade the README documents for review
    run_sql(url, sql("head:base"))
    assert catalog(url, exclude_version_table=True) == empty
    assert schema.current(settings) is None

    # ranges from and to an older revision
    never_migrated(url)
    run_sql(url, sql(first))
    assert catalog(url) == at_first
    run_sql(url, sql(f"{first}:head"))
    assert catalog(url) == migrated
    run_sql(url, sql(f"head:{first}"))
    assert catalog(url) == at_first
    assert schema.current(settings) == first


def test_history_of_a_schema_marks_where_that_database_stands(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db history`` takes ``--url`` and ``--schema`` like every ``db`` command: with them it
    reads that database's revision (and changes nothing), without them it needs none."""
    revisions = shipped()
    first, head = revisions[0][0], revisions[-1][0]
    url = ["--url", empty_database_url]
    settings = DatabaseSettings(url=empty_database_url, schema="pynenc_history")

    code, out, err = cli(capsys, "db", "history", *url, "--schema", "pynenc_history")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].endswith(f": none (missing; head is {head})")
    assert " (current)" not in out
    assert schema.current(settings) is None  # nothing was created

    schema.upgrade(settings, first)
    code, out, err = cli(capsys, "db", "history", *url, "--schema", "pynenc_history")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        f"{settings.server} (schema pynenc_history): {first} (behind; head is {head})"
    )
    assert [line for line in lines if "(current)" in line] == [
        f"base -> {first} (current): {revisions[0][2]}"
    ]
    assert lines[1].startswith(f"{revisions[-2][0]} -> {head} (head): ")
    # The default schema of the same database has no tables.
    code, out, _ = cli(capsys, "db", "history", *url)
    assert out.splitlines()[0].endswith(f": none (missing; head is {head})")


def test_upgrade_and_downgrade_of_a_database_ahead_explain_it(
    empty_database_url: str,
    newer_scripts: NewerScripts,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same SchemaAheadError, with its fix, as ``db current``, ``check`` and ``inspect``
    give; the database keeps its revision."""
    url = ["--url", empty_database_url]
    settings = DatabaseSettings(url=empty_database_url)
    with monkeypatch.context() as newer_package:
        newer_package.setattr(schema, "migrations_path", lambda: newer_scripts.path)
        schema.upgrade(settings)
    dispose_all()
    before = catalog(empty_database_url)

    code, _, check_err = cli(capsys, "db", "check", *url)
    assert code == 1
    explained = check_err.removeprefix("NOT AT HEAD (ahead): ").strip()
    assert explained.startswith("The pynenc-postgres tables in schema 'public'")
    assert f"pynenc-postgres db downgrade {newer_scripts.old_head}" in explained

    for command in (["upgrade"], ["upgrade", "head"], ["downgrade", "base"]):
        assert cli(capsys, "db", *command, *url) == (2, "", f"error: {explained}\n"), command
    with pytest.raises(SchemaAheadError) as info:
        schema.upgrade(settings)
    assert str(info.value) == explained
    assert schema.current(settings) == newer_scripts.new_head
    assert catalog(empty_database_url) == before
