"""``app_instance`` for pynenc's component suites on the Postgres-only stack.

Every component is ours (``PynencBuilder().postgres(url=...)``): state backend, broker,
orchestrator, trigger and client data store, all on the test's own database. pynenc's
suites take their app from ``app_instance``, so this one fixture puts each suite on the
stack a user gets from ``.postgres()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynenc import Pynenc

from pynenc_postgres.db.notify import stop_all_listeners
from tests.pynenc_suite.stack import assert_postgres_only, build_postgres_app


@pytest.fixture(params=["postgres"])
def app_instance(database_url: str) -> Iterator[Pynenc]:
    app = build_postgres_app(database_url)
    assert_postgres_only(app)
    yield app
    # The test's database is dropped next; the broker's LISTEN connection goes first.
    stop_all_listeners()
