"""Fixtures of the broker and client data store tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.db.notify import stop_all_listeners

POSTGRES_COMPONENTS = {
    "broker_cls": "PostgresBroker",
    "client_data_store_cls": "PostgresClientDataStore",
}


@pytest.fixture
def broker_url(database_url: str) -> Iterator[str]:
    """A migrated database; this process's LISTEN connections close before it is dropped."""
    yield database_url
    stop_all_listeners()


def build_app(url: str, app_id: str | None = None, **config: Any) -> Pynenc:
    """An app whose broker and client data store are ours (memory orchestrator).

    Every app gets a fresh ``app_id`` unless given: pynenc keeps one instance per id.
    """
    return (
        PynencBuilder()
        .memory()
        .app_id(app_id or f"broker-{uuid.uuid4().hex[:10]}")
        .postgres_state_backend(url=url)
        .custom_config(**POSTGRES_COMPONENTS, **config)
        .build()
    )
