"""What the five components share (``db/component.py``): derived values stay per process."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest
from pynenc import PynencBuilder

from pynenc_postgres.db.component import DatabaseComponent
from pynenc_postgres.db.notify import stop_all_listeners

COMPONENTS = ("state_backend", "broker", "orchestrator", "trigger", "client_data_store")
DERIVED = {"conf", "settings", "sql", "db"}


@pytest.fixture(autouse=True)
def _stop_listeners() -> Iterator[None]:
    yield
    stop_all_listeners()


@pytest.mark.parametrize("name", COMPONENTS)
def test_a_pickled_component_leaves_its_pool_behind_and_derives_it_again(
    name: str, database_url: str
) -> None:
    app = PynencBuilder().postgres(url=database_url).build()
    component = getattr(app, name)
    assert isinstance(component, DatabaseComponent)
    assert component.db.fetchone("SELECT 1", ()) == (1,)
    assert component.sql is not None
    assert DERIVED <= set(vars(component))

    copy = pickle.loads(pickle.dumps(component))

    assert not DERIVED & set(vars(copy)), "a spawned worker must not reuse this process's pool"
    assert copy.settings == component.settings
    assert copy.db.fetchone("SELECT 1", ()) == (1,)
    assert copy.app_id == app.app_id
