"""Fixtures for pynenc's cross-process suites (combinations and orchestrator).

Both suites run on the Postgres-only stack: our state backend, broker, orchestrator,
trigger and client data store, with every runner pynenc has.

Runner children built from environment variables alone (spawned workers, the
``Pynenc()`` of ``pynenc_tests.integration.combinations.tasks``, the subprocess of the
real-signal test) must find the same components as the parent, so every fixture here
exports its configuration as ``PYNENC__*`` variables rather than passing builder values.
Environment variables also outrank builder values, which is what puts the suites'
module-level apps, built with ``.sqlite(...)``, on the same stack.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
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

from pynenc_postgres.db.notify import stop_all_listeners
from tests.pynenc_suite.stack import assert_postgres_only, build_postgres_app, postgres_env

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureRequest
    from _pytest.monkeypatch import MonkeyPatch

    from tests.conftest import PostgresServer


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
def postgres_stack_env(
    request: FixtureRequest,
    monkeypatch: MonkeyPatch,
    database_url: str,
    postgres_server: PostgresServer,
) -> Iterator[str]:
    """Select every Postgres component, on this test's database, for every app it builds.

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
    for name, value in postgres_env(url).items():
        monkeypatch.setenv(name, value)
    yield url
    # Runs after every fixture that builds an app, and before the test's database is
    # dropped: the broker's LISTEN connection must not outlive it.
    stop_all_listeners()


@pytest.fixture(params=["postgres"])
def app_instance(postgres_stack_env: str) -> Pynenc:
    """pynenc's ``app_instance`` for the orchestrator suite: ``.postgres(url=...)``."""
    app = build_postgres_app(postgres_stack_env)
    assert_postgres_only(app)
    return app


@pytest.fixture(params=runner_combinations(), ids=lambda comp: comp.combination_id)
def app_combination_instance(
    request: FixtureRequest, monkeypatch: MonkeyPatch, postgres_stack_env: str
) -> Pynenc:
    """pynenc's combination app: every component ours, every runner."""
    combination: RunnerCombination = request.param
    test_module, test_name = get_module_name(request)
    monkeypatch.setenv("PYNENC__APP_ID", f"{test_module}.{test_name}")
    monkeypatch.setenv("PYNENC__SERIALIZER_CLS", combination.serializer.__name__)
    monkeypatch.setenv("PYNENC__RUNNER_CLS", combination.runner.__name__)
    monkeypatch.setenv("PYNENC__LOGGING_LEVEL", "info")
    monkeypatch.setenv("PYNENC__PRINT_ARGUMENTS", "False")
    # pynenc's default 0.1 s polling would make the suite several times slower.
    monkeypatch.setenv("PYNENC__RUNNER_LOOP_SLEEP_TIME_SEC", "0.01")
    monkeypatch.setenv("PYNENC__INVOCATION_WAIT_RESULTS_SLEEP_TIME_SEC", "0.01")
    app = Pynenc()
    assert_postgres_only(app)
    return app
