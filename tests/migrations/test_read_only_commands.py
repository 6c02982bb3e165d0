"""Commands that read or delete rows never change the schema, even with auto-migrate on.

``postgres_auto_migrate`` lets pynenc's runtime create or upgrade the schema on first
connect. Retention (``purge``, dry run or not), inspection and the ``db`` commands other
than ``upgrade``/``downgrade`` must not inherit that: a ``purge --dry-run`` against the
wrong database, or one that a DBA keeps behind on purpose, would otherwise run DDL.
Each of them is run here with auto-migrate on against an empty database and against a
database one revision behind head, and the catalog must be exactly as it was.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from pynenc_postgres import cli
from pynenc_postgres.db import schema
from pynenc_postgres.db.errors import SchemaBehindError, SchemaError, SchemaMissingError
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.inspect import invocation_detail, list_invocations
from pynenc_postgres.retention import purge_invocations
from tests.migrations.conftest import catalog

# Each command with its exit code on a schema that is not at head. The two ``db``
# commands that exist to change the schema, and ``demo``, which runs a sample app on a
# schema it migrates as its first step, are the only ones left out.
COMMANDS: dict[tuple[str, ...], int] = {
    ("db", "current"): 0,
    ("db", "check"): 1,
    ("purge", "--app-id", "some-app", "--dry-run"): 2,
    ("purge", "--app-id", "some-app"): 2,
    ("purge", "--app-id", "some-app", "--status", "running", "--older-than", "1d"): 2,
    ("inspect", "invocations"): 2,
    ("inspect", "invocations", "--app-id", "some-app", "--since", "2h"): 2,
    ("inspect", "invocation", "some-invocation"): 2,
    ("inspect", "retention"): 2,
    # The exporter reports pynenc_postgres_up 0 (and exits 1 with --once), naming the fix.
    ("metrics", "--once"): 1,
}
OFFLINE_COMMANDS = (("db", "history"), ("db", "sql", "head"))
SCHEMA_CHANGING = {("db", "upgrade"), ("db", "downgrade"), ("demo",)}


def previous_revision() -> str:
    """The revision just before head: a database there is one revision behind."""
    down = schema.script_directory().get_revision(schema.head_revision()).down_revision
    assert isinstance(down, str)
    return down


@pytest.fixture(params=["missing", "behind"])
def not_at_head(request: pytest.FixtureRequest, empty_database_url: str) -> str:
    """A database whose schema was never created, or is one revision behind head."""
    if request.param == "behind":
        schema.upgrade(DatabaseSettings(url=empty_database_url), previous_revision())
    return empty_database_url


def command_paths(parser: argparse.ArgumentParser) -> set[tuple[str, ...]]:
    """Every leaf command of the CLI, e.g. ``("db", "check")``."""
    paths: set[tuple[str, ...]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths |= {(name, *rest) for rest in command_paths(sub)} or {(name,)}
    return paths


def test_every_command_is_covered() -> None:
    """A command added later must be listed above (or explained as schema-changing)."""
    paths = command_paths(cli.build_parser())
    covered = {
        next(args[:n] for n in (1, 2) if args[:n] in paths)
        for args in [*COMMANDS, *OFFLINE_COMMANDS]
    }
    assert paths == covered | SCHEMA_CHANGING


@pytest.mark.parametrize("args", list(COMMANDS), ids=" ".join)
def test_command_with_auto_migrate_leaves_the_schema_alone(
    not_at_head: str,
    args: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PYNENC__POSTGRES_AUTO_MIGRATE", "true")
    settings = DatabaseSettings(url=not_at_head)
    revision = schema.current(settings)
    before = catalog(not_at_head)

    code = cli.main([*args, "--url", not_at_head])

    out, err = capsys.readouterr()
    assert code == COMMANDS[args], out + err
    assert schema.current(settings) == revision
    assert catalog(not_at_head) == before
    if code == 1 and args[0] == "metrics":
        # The cause goes to the log (tests/metrics/test_cli_and_mounting.py reads it).
        assert "pynenc_postgres_up 0.0" in out, out
    if code == 2:
        # The error of a schema that is not at head, naming the command that fixes it.
        assert "pynenc-postgres db upgrade --url" in err, err
        assert "never change the schema" in err, err
        assert "Or set postgres_auto_migrate=True" not in err, err


@pytest.mark.parametrize("args", OFFLINE_COMMANDS, ids=" ".join)
def test_offline_commands_touch_no_database(
    not_at_head: str,
    args: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PYNENC__POSTGRES_AUTO_MIGRATE", "true")
    monkeypatch.setenv("PYNENC__POSTGRES_URL", not_at_head)
    before = catalog(not_at_head)
    assert cli.main(list(args)) == 0
    capsys.readouterr()
    assert catalog(not_at_head) == before


API_CALLS: dict[str, Callable[[DatabaseSettings], object]] = {
    "purge_dry_run": lambda s: purge_invocations(s, "some-app", dry_run=True),
    "purge": lambda s: purge_invocations(s, "some-app"),
    "list_invocations": lambda s: list_invocations(s, app_id="some-app"),
    "invocation_detail": lambda s: invocation_detail(s, "some-invocation"),
}


@pytest.mark.parametrize("call", list(API_CALLS))
def test_python_api_with_auto_migrate_raises_the_schema_error(not_at_head: str, call: str) -> None:
    settings = DatabaseSettings(url=not_at_head, auto_migrate=True)
    revision = schema.current(settings)
    before = catalog(not_at_head)

    with pytest.raises(SchemaError) as raised:
        API_CALLS[call](settings)

    expected = SchemaMissingError if revision is None else SchemaBehindError
    assert type(raised.value) is expected
    assert "pynenc-postgres db upgrade --url" in str(raised.value)
    assert schema.current(settings) == revision
    assert catalog(not_at_head) == before


def test_the_runtime_still_migrates_with_auto_migrate(not_at_head: str) -> None:
    """The same settings, used by the runtime's own connection, do migrate: the commands
    above stayed put because they never migrate, not because auto-migrate was off."""
    from pynenc_postgres.db.engine import get_database

    settings = DatabaseSettings(url=not_at_head, auto_migrate=True)
    assert get_database(settings).fetchall("SELECT 1") == [(1,)]
    assert schema.current(settings) == schema.head_revision()
