"""The Postgres-only stack that the pynenc suites run on, as builder values and as
``PYNENC__*`` environment variables (for apps that runner processes rebuild, and for the
suites' module-level apps, which environment variables override)."""

from __future__ import annotations

from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.builder import COMPONENT_CLASSES


def postgres_env(url: str) -> dict[str, str]:
    """``PYNENC__*`` variables that select every Postgres component on ``url``."""
    env = {f"PYNENC__{key.upper()}": cls for key, cls in COMPONENT_CLASSES.items()}
    env["PYNENC__POSTGRES_URL"] = url
    return env


def build_postgres_app(url: str) -> Pynenc:
    """What a user gets from ``PynencBuilder().postgres(url=...)``."""
    return PynencBuilder().postgres(url=url).build()


def assert_postgres_only(app: Pynenc) -> None:
    """Every component of ``app`` is ours, whatever configured it."""
    components = {
        "state_backend_cls": app.state_backend,
        "broker_cls": app.broker,
        "orchestrator_cls": app.orchestrator,
        "trigger_cls": app.trigger,
        "client_data_store_cls": app.client_data_store,
    }
    found = {key: type(component).__name__ for key, component in components.items()}
    assert found == COMPONENT_CLASSES, found
