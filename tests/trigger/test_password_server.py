"""PostgresTrigger against a server that requires a password and closes idle sessions.

A trust-auth test server hides real failures: here the role authenticates with
scram-sha-256 over TCP and the server ends every session idle for a second, so the
pooled connections the trigger keeps between calls are dead when it comes back.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from pynenc import PynencBuilder
from pynenc.trigger.monitoring import EventRecord

from pynenc_postgres.db.models import TRIGGER_TABLES
from tests.reliability.conftest import (  # the fixture of the dedicated server
    APP_PASSWORD,
    APP_ROLE,
    Dedicated,
    dedicated,  # noqa: F401
)

TICK = datetime(2030, 1, 1, tzinfo=UTC)


def test_trigger_works_with_password_auth_and_idle_sessions_closed(
    dedicated: Dedicated,  # noqa: F811
) -> None:
    database = dedicated.new_database()
    dedicated.server.execute(
        f"ALTER ROLE {APP_ROLE} IN DATABASE {database} SET idle_session_timeout = '1s'"
    )
    app = (
        PynencBuilder()
        .memory()
        .app_id("password-trigger")
        .postgres_state_backend(url=dedicated.app_url(database))
        .custom_config(trigger_cls="PostgresTrigger")
        .build()
    )
    trigger = app.trigger
    assert trigger.store_last_cron_execution("cron", TICK)
    assert trigger.claim_trigger_run("run-1")
    event_id = trigger.emit_event("signed.up", {"user": "ada"})

    # Wait until the server has ended the trigger's idle pooled sessions.
    deadline = time.monotonic() + 60
    while dedicated.server.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (APP_ROLE,)
    ) != [(0,)]:
        assert time.monotonic() < deadline, "the server kept the idle sessions open"
        time.sleep(0.1)

    # Each call meets a dead connection first and still gets its one answer.
    assert trigger.store_last_cron_execution(
        "cron", TICK + timedelta(minutes=1), expected_last_execution=TICK
    )
    assert not trigger.claim_trigger_run("run-1")
    assert trigger.claim_trigger_run("run-2")
    record = trigger.get_event(event_id)
    assert isinstance(record, EventRecord) and record.payload == {"user": "ada"}

    # Nothing the trigger wrote holds the password.
    for table in TRIGGER_TABLES:
        rows = dedicated.server.execute(f"SELECT * FROM {table}", database=database)
        for secret in (APP_PASSWORD, quote(APP_PASSWORD, safe="")):
            assert secret not in repr(rows), table
