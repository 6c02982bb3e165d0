"""Selecting PostgresOrchestrator by name, as spawned runner processes do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.orchestrator import PostgresOrchestrator


def test_a_fresh_process_resolves_the_orchestrator_through_the_entry_point(
    database_url: str,
) -> None:
    """A process that builds the app from env vars alone finds the class by name, and runs
    it without importing SQLAlchemy or Alembic."""
    code = textwrap.dedent(
        """
        import sys
        from pynenc import Pynenc
        orchestrator = Pynenc().orchestrator
        print(type(orchestrator).__module__, type(orchestrator).__name__,
              orchestrator.count_invocations(),
              # a runner's hot path needs neither the ORM nor the migrations
              "sqlalchemy" in sys.modules, "alembic" in sys.modules)
        """
    )
    env = {
        **os.environ,
        "PYNENC__ORCHESTRATOR_CLS": "PostgresOrchestrator",
        "PYNENC__POSTGRES_URL": database_url,
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout

    assert out.split() == [
        "pynenc_postgres.orchestrator.postgres_orchestrator",
        "PostgresOrchestrator",
        "0",
        "False",
        "False",
    ]


def test_class_specific_settings_override_the_shared_ones(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PYNENC__CONFIGORCHESTRATORPOSTGRES__*`` applies to the orchestrator alone."""
    monkeypatch.setenv(
        "PYNENC__CONFIGORCHESTRATORPOSTGRES__POSTGRES_APPLICATION_NAME", "orchestrator-only"
    )
    app: Pynenc = (
        PynencBuilder()
        .memory()
        .postgres_state_backend(url=database_url, application_name="shared")
        .custom_config(orchestrator_cls="PostgresOrchestrator")
        .build()
    )
    orchestrator = app.orchestrator
    assert isinstance(orchestrator, PostgresOrchestrator)
    assert orchestrator.settings.application_name == "orchestrator-only"
    assert app.state_backend.settings.application_name == "shared"  # type: ignore[attr-defined]
