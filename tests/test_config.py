"""Every way pynenc users configure a plugin reaches PostgresStateBackend."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.broker.sqlite_broker import SQLiteBroker
from pynenc.orchestrator.mem_orchestrator import MemOrchestrator

from pynenc_postgres.cli import main
from pynenc_postgres.conf import ConfigPostgres
from pynenc_postgres.state_backend import PostgresStateBackend


def test_builder_postgres_composes_with_sqlite_components(
    database_url: str, temp_sqlite_db_path: str
) -> None:
    app = (
        PynencBuilder()
        .sqlite(sqlite_db_path=temp_sqlite_db_path)
        .postgres_state_backend(url=database_url)
        .build()
    )

    assert isinstance(app.state_backend, PostgresStateBackend)
    assert isinstance(app.broker, SQLiteBroker)
    assert app.state_backend.settings.url == database_url


def test_builder_postgres_composes_with_memory_components(database_url: str) -> None:
    app = PynencBuilder().memory().postgres_state_backend(url=database_url, schema="public").build()

    assert isinstance(app.state_backend, PostgresStateBackend)
    assert isinstance(app.orchestrator, MemOrchestrator)


def test_builder_rejects_a_url_that_is_not_postgres() -> None:
    with pytest.raises(Exception, match="postgresql://"):
        PynencBuilder().memory().postgres_state_backend(url="mysql://user@host/db").build()


def test_env_var_configures_the_backend(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__POSTGRES_URL", database_url)
    monkeypatch.setenv("PYNENC__POSTGRES_STATEMENT_TIMEOUT_MS", "1234")
    app = PynencBuilder().memory().postgres_state_backend().build()

    assert app.state_backend.settings.url == database_url
    assert app.state_backend.settings.statement_timeout_ms == 1234
    assert app.state_backend.get_history("nothing") == []


def test_pyproject_tool_pynenc_configures_the_backend(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.pynenc]
            state_backend_cls = "PostgresStateBackend"
            postgres_url = "{database_url}"
            postgres_application_name = "from-pyproject"
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYNENC__POSTGRES_URL", raising=False)
    app = Pynenc()

    assert isinstance(app.state_backend, PostgresStateBackend)
    assert app.state_backend.settings.application_name == "from-pyproject"
    assert app.state_backend.get_history("nothing") == []


def test_a_fresh_process_resolves_the_class_by_name_through_the_entry_point(
    database_url: str,
) -> None:
    """Spawned runners build the app from env vars alone and never import us by hand."""
    code = textwrap.dedent(
        """
        from pynenc import Pynenc
        backend = Pynenc().state_backend
        print(type(backend).__module__, type(backend).__name__, backend.get_history("x"))
        """
    )
    env = {
        **os.environ,
        "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
        "PYNENC__POSTGRES_URL": database_url,
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout

    assert out.split() == [
        "pynenc_postgres.state_backend.postgres_state_backend",
        "PostgresStateBackend",
        "[]",
    ]


def _connection_setting(app: Pynenc, name: str) -> str:
    backend = app.state_backend
    assert isinstance(backend, PostgresStateBackend)

    def op(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
        assert row is not None
        return str(row[0])

    return backend.db.run(op)


def test_pynenc_filepath_configures_the_backend_below_env_vars(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "pynenc.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            app_id: from-filepath
            state_backend_cls: PostgresStateBackend
            postgres_url: "{database_url}"
            postgres_application_name: from-file
            postgres_statement_timeout_ms: 4321
            """
        )
    )
    monkeypatch.delenv("PYNENC__POSTGRES_URL", raising=False)
    monkeypatch.setenv("PYNENC__FILEPATH", str(config))
    app = Pynenc()

    assert isinstance(app.state_backend, PostgresStateBackend)
    assert app.state_backend.settings.url == database_url
    # The connection itself runs with the file's settings.
    assert _connection_setting(app, "application_name") == "from-file"
    assert _connection_setting(app, "statement_timeout") == "4321ms"

    # An environment variable overrides the file.
    monkeypatch.setenv("PYNENC__POSTGRES_APPLICATION_NAME", "from-env")
    assert Pynenc().state_backend.settings.application_name == "from-env"

    # The command line reads the same file when no --url is given.
    assert main(["db", "current"]) == 0
    assert "(up to date;" in capsys.readouterr().out


def test_class_specific_settings_apply_to_the_state_backend_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared_url = "postgresql://nobody@127.0.0.1:1/unused"
    config = tmp_path / "pynenc.yaml"
    config.write_text(
        textwrap.dedent(
            """
            postgres_application_name: shared-name
            statebackendpostgres:
              postgres_application_name: backend-name
            """
        )
    )
    monkeypatch.setenv("PYNENC__FILEPATH", str(config))
    monkeypatch.setenv("PYNENC__STATE_BACKEND_CLS", "PostgresStateBackend")
    monkeypatch.setenv("PYNENC__POSTGRES_URL", shared_url)
    monkeypatch.setenv("PYNENC__CONFIGSTATEBACKENDPOSTGRES__POSTGRES_URL", database_url)
    app = Pynenc()

    assert isinstance(app.state_backend, PostgresStateBackend)
    assert app.state_backend.settings.url == database_url
    assert _connection_setting(app, "application_name") == "backend-name"
    # What every other reader of the shared settings (the CLI, other components) sees.
    shared = ConfigPostgres()
    assert (shared.postgres_url, shared.postgres_application_name) == (shared_url, "shared-name")
