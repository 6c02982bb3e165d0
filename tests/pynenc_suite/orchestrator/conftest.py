"""``app_instance`` for pynenc's orchestrator suites: PostgresOrchestrator on a fresh database.

pynenc's suites take the app from ``app_instance``; here it is pynenc's memory broker,
trigger and client data store with our state backend and our orchestrator, selected
through configuration as a user would (``orchestrator_cls``).
"""

from __future__ import annotations

import pytest
from pynenc import Pynenc, PynencBuilder

ORCHESTRATOR_CLS = "PostgresOrchestrator"


def build_app(url: str, **config: object) -> Pynenc:
    """An app whose orchestrator and state backend are on the database at ``url``."""
    return (
        PynencBuilder()
        .memory()
        .postgres_state_backend(url=url)
        .custom_config(orchestrator_cls=ORCHESTRATOR_CLS, **config)
        .build()
    )


@pytest.fixture(params=["postgres"])
def app_instance(database_url: str) -> Pynenc:
    app = build_app(database_url)
    assert type(app.orchestrator).__name__ == ORCHESTRATOR_CLS
    return app
