"""pynenc's own integration.orchestrator suite, unmodified, against PostgresOrchestrator.

``app_instance`` is the PostgresOrchestrator app of ``tests/pynenc_suite/orchestrator``.
The suite's module-level apps (built with ``.sqlite(...)``) and the runner processes they
spawn get the orchestrator from ``PYNENC__ORCHESTRATOR_CLS``, which outranks builder
values. Those apps keep components built for an earlier module of the session (pynenc's
SQLite orchestrator in ``test_integration_orchestrator``), so they are reset around each
test of this module.
"""

import sys
from collections.abc import Iterator

import pytest
from _pytest.fixtures import FixtureRequest
from _pytest.monkeypatch import MonkeyPatch
from pynenc import Pynenc
from pynenc_tests.integration.orchestrator.all_tests import *

from tests.pynenc_suite.orchestrator.conftest import ORCHESTRATOR_CLS, app_instance


@pytest.fixture(autouse=True)
def postgres_orchestrator_env(
    request: FixtureRequest, monkeypatch: MonkeyPatch, postgres_state_backend_env: str
) -> Iterator[None]:
    monkeypatch.setenv("PYNENC__ORCHESTRATOR_CLS", ORCHESTRATOR_CLS)
    module_app = getattr(sys.modules[request.function.__module__], "app", None)
    if isinstance(module_app, Pynenc):
        module_app._reset_cached_components()
        assert type(module_app.orchestrator).__name__ == ORCHESTRATOR_CLS
    yield
    # The environment goes first: a runner thread of the test that is still winding
    # down and rebuilds a component must get the other modules' orchestrator.
    monkeypatch.delenv("PYNENC__ORCHESTRATOR_CLS")
    if isinstance(module_app, Pynenc):
        module_app._reset_cached_components()
