"""``app_instance`` for pynenc's trigger suites: PostgresTrigger selected through config.

The app's broker, orchestrator and client data store are pynenc's memory or SQLite
ones; the state backend and the trigger are ours.
"""

from collections.abc import Iterator

import pytest
from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.trigger import PostgresTrigger


@pytest.fixture(params=["memory", "sqlite"])
def app_instance(
    request: pytest.FixtureRequest, database_url: str, temp_sqlite_db_path: str
) -> Iterator[Pynenc]:
    builder = PynencBuilder()
    if request.param == "memory":
        builder = builder.memory()
    else:
        builder = builder.sqlite(sqlite_db_path=temp_sqlite_db_path)
    app = (
        builder.postgres_state_backend(url=database_url)
        .custom_config(trigger_cls="PostgresTrigger")
        .build()
    )
    assert isinstance(app.trigger, PostgresTrigger)
    yield app
