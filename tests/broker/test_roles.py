"""The runtime role of docs/audit.md runs the broker and the client data store."""

from __future__ import annotations

import re
import secrets
import threading
from typing import Any

import psycopg
from pynenc import Pynenc
from sqlalchemy.engine import make_url

from pynenc_postgres.broker import PostgresBroker
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.notify import stop_all_listeners
from tests.audit.cookbook import blocks
from tests.broker.conftest import build_app
from tests.conftest import PostgresServer


def test_the_documented_runtime_grants_are_enough(
    postgres_server: PostgresServer, broker_url: str
) -> None:
    role, password = f"pynenc_runtime_{secrets.token_hex(4)}", secrets.token_hex(12)
    database = make_url(broker_url).database
    script = re.sub(r"\bpynenc_runtime\b", role, blocks()["grants_runtime"])
    script = script.replace("'change-me'", f"'{password}'")
    script = script.replace("ON DATABASE app ", f'ON DATABASE "{database}" ')
    with psycopg.connect(broker_url, autocommit=True) as conn:
        conn.execute(script)
    url = make_url(broker_url).set(username=role, password=password)
    try:
        app: Pynenc = build_app(url.render_as_string(hide_password=False), queue_timeout_sec=30)
        broker = app.broker
        assert isinstance(broker, PostgresBroker)
        broker.route_invocations(["a", "b"], "default", 1.0)
        assert broker.count_invocations() == 2
        assert [broker.retrieve_invocation(), broker.retrieve_invocation()] == ["a", "b"]

        result: list[Any] = []
        consumer = threading.Thread(target=lambda: result.append(broker.retrieve_invocation()))
        consumer.start()
        broker.route_invocation("woken", "default", 0.0)
        consumer.join(60)
        assert result == ["woken"]

        store = app.client_data_store
        key = store.serialize("x" * 5000)
        store._deserialized_cache.clear()
        assert store.resolve(key) == "x" * 5000
        app.purge()
        assert broker.count_invocations() == 0
    finally:
        stop_all_listeners()
        dispose_all()
        with psycopg.connect(broker_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
        with postgres_server.admin() as conn:
            conn.execute(f"DROP ROLE {role}")
