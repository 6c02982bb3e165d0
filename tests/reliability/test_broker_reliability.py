"""The broker behind a transaction-mode pooler, across a server restart, and with the
server closing idle sessions; password authentication throughout."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.broker import PostgresBroker
from pynenc_postgres.db import notify
from pynenc_postgres.db.notify import NotificationListener, stop_all_listeners
from tests.reliability.conftest import APP_PASSWORD, APP_ROLE, Dedicated
from tests.reliability.test_pressure import bouncer_url, pgbouncer  # noqa: F401  (fixture)

LONG_WAIT_SEC = 60.0
DEADLINE_SEC = 60.0


@pytest.fixture(autouse=True)
def _listeners_closed_after_each_test() -> Iterator[None]:
    yield
    stop_all_listeners()


def build_broker(url: str, **config: Any) -> PostgresBroker:
    app: Pynenc = (
        PynencBuilder()
        .memory()
        .app_id(f"rel-broker-{uuid.uuid4().hex[:8]}")
        .postgres_state_backend(url=url)
        .custom_config(broker_cls="PostgresBroker", **config)
        .build()
    )
    broker = app.broker
    assert isinstance(broker, PostgresBroker)
    return broker


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SEC
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {DEADLINE_SEC}s waiting for {what}")
        time.sleep(0.02)


def consume_until_done(broker: PostgresBroker, done: threading.Event, taken: list[str]) -> None:
    while True:
        finished = done.is_set()
        invocation_id = broker.retrieve_invocation()
        if invocation_id is not None:
            taken.append(str(invocation_id))
        elif finished:
            return


def test_consumers_poll_through_a_transaction_mode_pooler(
    dedicated: Dedicated,
    pgbouncer: int,  # noqa: F811
) -> None:
    url = bouncer_url(pgbouncer, dedicated.new_database())
    config = {
        "postgres_apply_settings": "transaction",
        "postgres_prepare_threshold": -1,
        "queue_timeout_sec": 0.3,
    }
    broker = build_broker(url, **config)
    assert broker.wakeup_mode == "poll"
    done = threading.Event()
    taken: list[str] = []
    threads = [
        threading.Thread(target=consume_until_done, args=(broker, done, taken)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()

    for batch in range(20):
        broker.route_invocations([f"id-{batch}-{n}" for n in range(9)], "default", 0.0)
        broker.route_invocation(f"id-{batch}-single", "default", 1.0)
    done.set()
    for thread in threads:
        thread.join(DEADLINE_SEC)

    assert Counter(taken) == Counter(
        [f"id-{b}-{n}" for b in range(20) for n in range(9)] + [f"id-{b}-single" for b in range(20)]
    )
    assert broker.count_invocations() == 0


def test_a_waiting_consumer_rides_out_a_server_restart(
    dedicated: Dedicated, caplog: pytest.LogCaptureFixture
) -> None:
    url = dedicated.app_url(dedicated.new_database())
    broker = build_broker(
        url,
        queue_timeout_sec=LONG_WAIT_SEC,
        postgres_retry_attempts=30,
        postgres_retry_max_delay=1.0,
    )
    notifier = broker.notifier()
    notifier.start()
    listener = notifier.listener
    assert isinstance(listener, NotificationListener)
    assert listener.connected
    caplog.set_level(logging.WARNING)

    dedicated.server.stop("fast")
    wait_until(lambda: not listener.connected, "the listener to notice the stop")
    result: list[Any] = []
    consumer = threading.Thread(target=lambda: result.append(broker.retrieve_invocation()))
    consumer.start()  # waits while the server is down: polls, its claims retried
    dedicated.server.start()
    wait_until(lambda: listener.connected, "the listener to LISTEN again")

    broker.route_invocation("after the restart", "default", 0.0)
    consumer.join(LONG_WAIT_SEC + DEADLINE_SEC)

    assert result == ["after the restart"]
    assert listener.reconnects >= 1
    assert any("LISTEN connection" in record.getMessage() for record in caplog.records)
    assert all(APP_PASSWORD not in record.getMessage() for record in caplog.records)


def test_the_listener_stays_connected_when_the_server_closes_idle_sessions(
    dedicated: Dedicated,
) -> None:
    database = dedicated.new_database()
    dedicated.server.execute(
        sql.SQL("ALTER ROLE {} IN DATABASE {} SET idle_session_timeout = '1s'").format(
            sql.Identifier(APP_ROLE), sql.Identifier(database)
        )
    )
    broker = build_broker(dedicated.app_url(database), queue_timeout_sec=LONG_WAIT_SEC)
    notifier = broker.notifier()
    notifier.start()
    listener = notifier.listener
    assert isinstance(listener, NotificationListener)
    first_pid = listener.backend_pid

    # Three keepalives span more than the 1 s after which the server closes an idle session.
    wait_until(lambda: listener.keepalives >= 3, "three keepalive queries")

    assert listener.reconnects == 0
    assert listener.connected and listener.backend_pid == first_pid
    key = broker.wake_key(broker.app_id, "default")
    result: list[Any] = []
    consumer = threading.Thread(target=lambda: result.append(broker.retrieve_invocation()))
    consumer.start()
    wait_until(lambda: notifier.waiting(key) == 1, "the consumer to wait")
    # The pool's connections sat idle longer than the timeout: the route is retried
    # on a fresh connection, and the NOTIFY still reaches the listener.
    broker.route_invocation("kept alive", "default", 0.0)
    consumer.join(LONG_WAIT_SEC + DEADLINE_SEC)
    assert result == ["kept alive"]


def test_auto_finds_that_notifications_never_arrive_through_a_pooler_and_polls(
    dedicated: Dedicated,
    pgbouncer: int,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The role-level settings of docs/operations.md leave ``auto`` nothing to tell a
    pooler by: it listens, finds that its own probes never come back, and polls."""
    monkeypatch.setattr(notify, "PROBE_TIMEOUT_SEC", 0.5)
    url = bouncer_url(pgbouncer, dedicated.new_database())
    broker = build_broker(
        url,
        postgres_statement_timeout_ms=0,
        postgres_synchronous_commit="",
        postgres_prepare_threshold=-1,
        queue_timeout_sec=LONG_WAIT_SEC,
        postgres_broker_poll_interval_sec=0.05,
        postgres_broker_poll_max_interval_sec=0.2,
    )
    assert broker.wakeup_mode == "listen"
    caplog.set_level(logging.WARNING)
    notifier = broker.notifier()
    notifier.start()
    listener = notifier.listener
    assert listener is not None
    wait_until(lambda: listener.deaf, "the listener to give up on notifications")
    assert not notifier.live
    assert any(
        "never arrived" in r.getMessage() and "transaction-mode pooler" in r.getMessage()
        for r in caplog.records
    )
    # The probes were sent and received by the server: only their delivery failed.
    assert listener.notifications == 0

    result: list[Any] = []
    consumer = threading.Thread(target=lambda: result.append(broker.retrieve_invocation()))
    consumer.start()
    # Routed by another client, so only polling can find it.
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        conn.execute(
            broker.sql.route_one,
            (broker.app_id, "default", 0.0, "polled", broker.sql.channel, "x"),
        )
    consumer.join(LONG_WAIT_SEC + DEADLINE_SEC)
    assert result == ["polled"]


def test_directly_connected_notifications_are_live(dedicated: Dedicated) -> None:
    broker = build_broker(dedicated.app_url(dedicated.new_database()))
    notifier = broker.notifier()
    notifier.start()
    wait_until(lambda: notifier.live, "the probe to come back")
    assert notifier.listener is not None and not notifier.listener.deaf
