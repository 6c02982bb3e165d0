"""Fixtures for pynenc's cross-process suites (combinations and orchestrator).

Runner children built from environment variables alone (spawned workers, the
``Pynenc()`` of ``pynenc_tests.integration.combinations.tasks``, the subprocess of the
real-signal test) must find the same components as the parent, so every fixture here
exports its configuration as ``PYNENC__*`` variables rather than passing builder values.
Environment variables also outrank builder values, which is what plugs our state
backend into the suites' module-level apps that are built with ``.sqlite(...)``.

Only pynenc's SQLite broker, orchestrator, trigger and client data store are combined
with :class:`~pynenc_postgres.state_backend.PostgresStateBackend`: pynenc's memory
components live inside one process, so they cannot serve runners whose workers are
other processes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from pynenc import Pynenc
from pynenc.serializer.base_serializer import BaseSerializer
from pynenc.util.subclasses import get_all_subclasses
from pynenc_tests.integration.combinations.conftest import *
from pynenc_tests.integration.orchestrator.conftest import *
from pynenc_tests.util import get_module_name
from pynenc_tests.util.subclasses import get_runner_subclasses

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureRequest
    from _pytest.monkeypatch import MonkeyPatch

    from tests.conftest import PostgresServer

STATE_BACKEND_CLS = "PostgresStateBackend"
SQLITE_COMPONENTS = {
    "PYNENC__BROKER_CLS": "SQLiteBroker",
    "PYNENC__ORCHESTRATOR_CLS": "SQLiteOrchestrator",
    "PYNENC__TRIGGER_CLS": "SQLiteTrigger",
    "PYNENC__CLIENT_DATA_STORE_CLS": "SQLiteClientDataStore",
}


@dataclass(frozen=True)
class RunnerCombination:
    """One runner with one serializer, cycled the way pynenc pairs them."""

    runner: type
    serializer: type

    @property
    def combination_id(self) -> str:
        runner = self.runner.__name__.replace("Runner", "")
        serializer = self.serializer.__name__.replace("Serializer", "")
        return f"Postgres {runner} {serializer}"


def runner_combinations() -> list[RunnerCombination]:
    """Every runner pynenc's suites parametrize, each paired with a serializer."""
    runners = sorted(get_runner_subclasses(), key=lambda cls: cls.__name__)
    serializers = sorted(get_all_subclasses(BaseSerializer), key=lambda cls: cls.__name__)
    return [
        RunnerCombination(runner, serializers[i % len(serializers)])
        for i, runner in enumerate(runners)
    ]


# Databases of pynenc test modules that define a module-level app, created once.
_module_app_databases: dict[str, str] = {}


@pytest.fixture(autouse=True)
def postgres_state_backend_env(
    request: FixtureRequest,
    monkeypatch: MonkeyPatch,
    database_url: str,
    postgres_server: PostgresServer,
) -> str:
    """Select our state backend, on this test's database, for every app the test builds.

    A module-level app (``test_status_transitions``, ``test_config_propagation_...``)
    keeps the configuration it first read for the whole session, and pynenc's
    combination suite runs ``test_status_transitions`` from two modules. Such a module
    gets one database for the session, as pynenc gives it one SQLite file.
    """
    module_name = request.function.__module__
    url = database_url
    if isinstance(getattr(sys.modules[module_name], "app", None), Pynenc):
        if module_name not in _module_app_databases:
            name = postgres_server.create_database(template=postgres_server.template)
            _module_app_databases[module_name] = postgres_server.url_for(name)
        url = _module_app_databases[module_name]
    monkeypatch.setenv("PYNENC__STATE_BACKEND_CLS", STATE_BACKEND_CLS)
    monkeypatch.setenv("PYNENC__POSTGRES_URL", url)
    return url


@pytest.fixture(params=runner_combinations(), ids=lambda comp: comp.combination_id)
def app_combination_instance(
    request: FixtureRequest,
    monkeypatch: MonkeyPatch,
    temp_sqlite_db_path: str,
    postgres_state_backend_env: str,
) -> Pynenc:
    """pynenc's combination app: SQLite components, our state backend, every runner."""
    combination: RunnerCombination = request.param
    test_module, test_name = get_module_name(request)
    monkeypatch.setenv("PYNENC__APP_ID", f"{test_module}.{test_name}")
    for name, value in SQLITE_COMPONENTS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYNENC__SQLITE_DB_PATH", temp_sqlite_db_path)
    monkeypatch.setenv("PYNENC__SERIALIZER_CLS", combination.serializer.__name__)
    monkeypatch.setenv("PYNENC__RUNNER_CLS", combination.runner.__name__)
    monkeypatch.setenv("PYNENC__LOGGING_LEVEL", "info")
    monkeypatch.setenv("PYNENC__PRINT_ARGUMENTS", "False")
    # pynenc's default 0.1 s polling would make the suite several times slower.
    monkeypatch.setenv("PYNENC__RUNNER_LOOP_SLEEP_TIME_SEC", "0.01")
    monkeypatch.setenv("PYNENC__INVOCATION_WAIT_RESULTS_SLEEP_TIME_SEC", "0.01")
    app = Pynenc()
    assert type(app.state_backend).__name__ == STATE_BACKEND_CLS
    return app
