"""The startup check: missing, behind and ahead each raise their own error on first connect.

"Behind" and "ahead" need a revision newer than the shipped head; the ``newer_scripts``
fixture (see conftest) provides one in a temporary copy of the scripts, never in the
package.
"""

from __future__ import annotations

import shlex
import traceback

import pytest
from pynenc import PynencBuilder
from pynenc.app_info import AppInfo

from pynenc_postgres import cli
from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.errors import (
    SchemaAheadError,
    SchemaBehindError,
    SchemaError,
    SchemaMissingError,
)
from pynenc_postgres.db.settings import DatabaseSettings, redact_url
from tests.migrations.conftest import NewerScripts, PasswordDatabase


def first_call(url: str, schema_name: str = "public", *, auto_migrate: bool = False) -> AppInfo:
    """A new app's first use of the backend: this is where the startup check runs."""
    app = (
        PynencBuilder()
        .app_id("startup-check")
        .memory()
        .postgres_state_backend(url=url, schema=schema_name, auto_migrate=auto_migrate)
        .build()
    )
    info: AppInfo = app.state_backend.get_app_info()
    return info


def schema_options(schema_name: str) -> list[str]:
    return [] if schema_name == "public" else ["--schema", schema_name]


def command(action: str, db: PasswordDatabase, schema_name: str = "public") -> str:
    """The command line that the message must name, URL redacted."""
    return shlex.join(
        [
            "pynenc-postgres",
            "db",
            *action.split(),
            "--url",
            redact_url(db.url),
            *schema_options(schema_name),
        ]
    )


def assert_no_password(error: SchemaError, password: str) -> None:
    rendered = "".join(traceback.format_exception(error)) + repr(error)
    assert password not in rendered


def run_cli(
    capsys: pytest.CaptureFixture[str], db: PasswordDatabase, *args: str
) -> tuple[int, str]:
    code = cli.main([*args, "--url", db.url])
    out, err = capsys.readouterr()
    assert db.password not in out + err
    return code, out + err


@pytest.mark.parametrize("schema_name", ["public", "pynenc"])
def test_missing_schema(
    password_database: PasswordDatabase, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SchemaMissingError) as raised:
        first_call(password_database.url, schema_name)
    message = str(raised.value)
    assert f"do not exist in schema {schema_name!r}" in message
    assert command("upgrade", password_database, schema_name) in message
    assert "pynenc-postgres db sql head" in message
    assert "postgres_auto_migrate" in message
    assert_no_password(raised.value, password_database.password)

    code, output = run_cli(capsys, password_database, "db", "check", *schema_options(schema_name))
    assert code == 1
    assert command("upgrade", password_database, schema_name) in output

    # The command it names is the fix.
    code, _ = run_cli(capsys, password_database, "db", "upgrade", *schema_options(schema_name))
    assert code == 0
    assert first_call(password_database.url, schema_name).app_id == "startup-check"


def test_behind_head(
    password_database: PasswordDatabase,
    newer_scripts: NewerScripts,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(capsys, password_database, "db", "upgrade")[0] == 0
    monkeypatch.setattr(schema, "migrations_path", lambda: newer_scripts.path)
    dispose_all()

    with pytest.raises(SchemaBehindError) as raised:
        first_call(password_database.url)
    message = str(raised.value)
    assert f"at revision {newer_scripts.old_head}" in message
    assert f"needs revision {newer_scripts.new_head}" in message
    assert command("upgrade", password_database) in message
    assert f"pynenc-postgres db sql {newer_scripts.old_head}:head" in message
    assert_no_password(raised.value, password_database.password)

    code, output = run_cli(capsys, password_database, "db", "check")
    assert code == 1
    assert "behind" in output

    assert run_cli(capsys, password_database, "db", "upgrade")[0] == 0
    settings = DatabaseSettings(url=password_database.url)
    assert schema.current(settings) == newer_scripts.new_head
    assert first_call(password_database.url).app_id == "startup-check"
    assert run_cli(capsys, password_database, "db", "check")[0] == 0


def test_ahead_of_this_package(
    password_database: PasswordDatabase,
    newer_scripts: NewerScripts,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = DatabaseSettings(url=password_database.url)
    with monkeypatch.context() as newer_package:
        newer_package.setattr(schema, "migrations_path", lambda: newer_scripts.path)
        assert run_cli(capsys, password_database, "db", "upgrade")[0] == 0
    assert schema.current(settings) == newer_scripts.new_head
    dispose_all()

    # Auto-migrate does not touch a database it does not understand either.
    for auto_migrate in (False, True):
        with pytest.raises(SchemaAheadError) as raised:
            first_call(password_database.url, auto_migrate=auto_migrate)
        message = str(raised.value)
        assert f"at revision {newer_scripts.new_head}" in message
        assert "does not know" in message
        assert "pip install --upgrade pynenc-postgres" in message
        assert command(f"downgrade {newer_scripts.old_head}", password_database) in message
        assert_no_password(raised.value, password_database.password)
    assert schema.current(settings) == newer_scripts.new_head

    code, output = run_cli(capsys, password_database, "db", "check")
    assert code == 1
    assert "ahead" in output

    # The fix it names: the newer version downgrades to this version's head.
    with monkeypatch.context() as newer_package:
        newer_package.setattr(schema, "migrations_path", lambda: newer_scripts.path)
        assert run_cli(capsys, password_database, "db", "downgrade", newer_scripts.old_head)[0] == 0
    dispose_all()
    assert first_call(password_database.url).app_id == "startup-check"


def test_auto_migrate_upgrades_a_database_that_is_behind(
    password_database: PasswordDatabase,
    newer_scripts: NewerScripts,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(capsys, password_database, "db", "upgrade")[0] == 0
    monkeypatch.setattr(schema, "migrations_path", lambda: newer_scripts.path)
    dispose_all()
    assert first_call(password_database.url, auto_migrate=True).app_id == "startup-check"
    settings = DatabaseSettings(url=password_database.url)
    assert schema.current(settings) == newer_scripts.new_head
