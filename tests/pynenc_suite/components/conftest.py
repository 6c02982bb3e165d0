"""``app_instance`` for pynenc's broker and client data store suites.

The app keeps its state, its queue and its large values in Postgres
(:class:`~pynenc_postgres.state_backend.PostgresStateBackend`,
:class:`~pynenc_postgres.broker.PostgresBroker`,
:class:`~pynenc_postgres.client_data_store.PostgresClientDataStore`), next to pynenc's
memory or SQLite orchestrator and trigger, as the state-backend suites pair them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.db.notify import stop_all_listeners

POSTGRES_COMPONENTS = {
    "broker_cls": "PostgresBroker",
    "client_data_store_cls": "PostgresClientDataStore",
}


@pytest.fixture(params=["memory", "sqlite"])
def app_instance(
    request: pytest.FixtureRequest, database_url: str, temp_sqlite_db_path: str
) -> Iterator[Pynenc]:
    """pynenc's ``app_instance`` with our state backend, broker and client data store."""
    builder = PynencBuilder()
    if request.param == "memory":
        builder = builder.memory()
    else:
        builder = builder.sqlite(sqlite_db_path=temp_sqlite_db_path)
    app = (
        builder.postgres_state_backend(url=database_url)
        .custom_config(**POSTGRES_COMPONENTS)
        .build()
    )
    assert type(app.broker).__name__ == "PostgresBroker"
    assert type(app.client_data_store).__name__ == "PostgresClientDataStore"
    yield app
    # The test's database is dropped next; its LISTEN connection goes first.
    stop_all_listeners()
