"""Storing a value again keeps it from retention while a new invocation is about to use it."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from tests.retention.conftest import build


def stored_at(url: str, key: str) -> datetime:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT stored_at FROM pynenc_client_data WHERE data_key = %s", (key,)
        ).fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def test_storing_an_old_value_again_moves_stored_at_forward(database_url: str) -> None:
    store = build(database_url).client_data_store
    key = store.serialize("v" * 5000)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE pynenc_client_data SET stored_at = stored_at - interval '2 days' "
            "WHERE data_key = %s",
            (key,),
        )
        (now,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]
    old = stored_at(database_url, key)
    assert old < now - timedelta(days=1)

    store._store(key, "ignored: the key is a hash of the value already stored")

    assert stored_at(database_url, key) >= now
