"""PostgresClientDataStore beyond pynenc's suites: lossless values, idempotence, scope."""

from __future__ import annotations

import psycopg
import pytest
from pynenc import Pynenc

from pynenc_postgres.client_data_store import PostgresClientDataStore
from tests.broker.conftest import build_app


def store_of(app: Pynenc) -> PostgresClientDataStore:
    store = app.client_data_store
    assert isinstance(store, PostgresClientDataStore)
    return store


def rows(url: str, app_id: str) -> list[tuple[str, bytes]]:
    with psycopg.connect(url) as conn:
        return [
            (key, bytes(value))
            for key, value in conn.execute(
                "SELECT data_key, data_value FROM pynenc_client_data WHERE app_id = %s "
                "ORDER BY data_key",
                (app_id,),
            ).fetchall()
        ]


@pytest.mark.parametrize(
    "value",
    [
        "nul \x00 in the middle \x00",
        "\x00",
        "lone surrogate \ud800 and emoji \U0001f600",
        "",
    ],
    ids=["nul", "only-nul", "surrogate", "empty"],
)
def test_any_string_round_trips_exactly(broker_url: str, value: str) -> None:
    store = store_of(build_app(broker_url))
    store._store("key", value)
    assert store._retrieve("key") == value


def test_a_50_mb_value_with_nul_round_trips_through_pynenc(broker_url: str) -> None:
    app = build_app(broker_url)
    store = store_of(app)
    value = ("0123456789abcdef\x00" * 3_000_000)[:50_000_000]
    assert len(value) == 50_000_000

    key = store.serialize(value)
    assert store.is_reference(key)
    store._deserialized_cache.clear()  # read it back from the database

    assert store.resolve(key) == value
    # Stored once, as pynenc serialized it, byte for byte.
    ((stored_key, stored),) = rows(app_id=app.app_id, url=broker_url)
    assert stored_key == key
    assert stored.decode() == app.serializer.serialize(value)


def test_storing_a_key_again_is_a_no_op(broker_url: str) -> None:
    app = build_app(broker_url)
    store = store_of(app)
    value = "v" * 5000
    first = store.serialize(value)
    with psycopg.connect(broker_url) as conn:
        before = conn.execute("SELECT xmin::text, stored_at FROM pynenc_client_data").fetchall()

    assert store.serialize(value) == first
    store._store(first, app.serializer.serialize(value))

    with psycopg.connect(broker_url) as conn:
        after = conn.execute("SELECT xmin::text, stored_at FROM pynenc_client_data").fetchall()
    assert after == before  # not even rewritten


def test_values_are_scoped_to_their_app(broker_url: str) -> None:
    app_a, app_b = build_app(broker_url), build_app(broker_url)
    a, b = store_of(app_a), store_of(app_b)
    a._store("shared-key", "a's")
    b._store("shared-key", "b's")
    a._store("only-a", "a only")

    assert a._retrieve("shared-key") == "a's"
    assert b._retrieve("shared-key") == "b's"
    with pytest.raises(KeyError, match="only-a"):
        b._retrieve("only-a")

    a.purge()

    with pytest.raises(KeyError):
        a._retrieve("shared-key")
    assert b._retrieve("shared-key") == "b's"
    assert rows(broker_url, app_a.app_id) == []
