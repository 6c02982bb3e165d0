"""Fixtures for pynenc's pynmon suite on the Postgres-only stack.

Each of the suite's modules builds a module-level ``app`` with ``.memory()`` or
``.sqlite(...)``, runs tasks on it (some with process runners), then asks a real pynmon
server about them. ``PYNENC__*`` variables, which outrank builder values and reach
spawned workers, put every one of those apps on our five components. An app keeps the
configuration it first read, so each pynenc module gets one database for the session, as
pynenc gives it one SQLite file.

Two fixtures make up for what the suite assumes about being run module by module (the
evidence is in docs/compatibility.md):

- pynmon's ``pynmon_server`` serves ``request.module.app``. Through ``all_tests`` that is
  the importing module's ``app``, the one of the last module imported, not the app the
  test ran its tasks on; this test module's ``app`` is set to the test's own.
- ``pynmon_server`` registers pynmon's routes again for every test, and FastAPI nests
  the app's lifespan once more per router each time, until starting the server exceeds
  Python's recursion limit. The routes and lifespan are restored after each test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from pynenc import Pynenc
from pynenc_tests.integration.pynmon.conftest import *
from pynmon.app import app as pynmon_app

from pynenc_postgres.db.notify import stop_all_listeners
from tests.pynenc_suite.stack import assert_postgres_only, postgres_env

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureRequest
    from _pytest.monkeypatch import MonkeyPatch

    from tests.conftest import PostgresServer

# One database per pynenc module, for that module's app.
_module_databases: dict[str, str] = {}


@pytest.fixture(autouse=True)
def postgres_stack_env(
    request: FixtureRequest, monkeypatch: MonkeyPatch, postgres_server: PostgresServer
) -> Iterator[str]:
    """Every app of the test's pynenc module on the Postgres-only stack, on its database."""
    module_name = request.function.__module__
    if module_name not in _module_databases:
        name = postgres_server.create_database(template=postgres_server.template)
        _module_databases[module_name] = postgres_server.url_for(name)
    url = _module_databases[module_name]
    for name, value in postgres_env(url).items():
        monkeypatch.setenv(name, value)
    for app in _module_apps(module_name):
        if app.conf.state_backend_cls != "PostgresStateBackend":
            # Read before these variables were set (``test_log_explorer_formats`` names
            # its tests after its apps' ids at import).
            app._reset_cached_components()
        assert_postgres_only(app)
    yield url
    stop_all_listeners()


def _module_apps(module_name: str) -> list[Pynenc]:
    apps = {id(v): v for v in vars(sys.modules[module_name]).values() if isinstance(v, Pynenc)}
    return list(apps.values())


@pytest.fixture(autouse=True)
def own_module_app(request: FixtureRequest, monkeypatch: MonkeyPatch) -> None:
    """``request.module.app`` is the app of the module that defines the test."""
    monkeypatch.setattr(request.module, "app", sys.modules[request.function.__module__].app)


@pytest.fixture(autouse=True)
def pynmon_routes_restored() -> Iterator[None]:
    """pynmon's routes and lifespan as they were before ``pynmon_server`` added its own."""
    router = pynmon_app.router
    routes, lifespan = list(router.routes), router.lifespan_context
    yield
    router.routes[:] = routes
    router.lifespan_context = lifespan
