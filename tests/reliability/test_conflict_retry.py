"""A deadlock (40P01) and a serialization failure (40001), forced for real, are retried.

Both go through ``Database.run(op, transaction=True)``: the losing transaction is rolled
back by the server, the layer logs one retry and runs ``op`` again in a new transaction,
which then commits.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
import psycopg.errors
import pytest

from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings
from tests.waiting import DEFAULT_TIMEOUT, wait_until

ENGINE_LOG = "pynenc_postgres.db.engine"


@pytest.fixture
def rows(database_url: str) -> str:
    """Two rows that two transactions fight over (a test table, not part of the schema)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE conflict_test (id int PRIMARY KEY, value text NOT NULL)")
        conn.execute("INSERT INTO conflict_test VALUES (1, 'start'), (2, 'start')")
    return database_url


def values(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return [
            (int(r[0]), str(r[1])) for r in conn.execute("SELECT * FROM conflict_test ORDER BY id")
        ]


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == ENGINE_LOG and record.levelno == logging.WARNING
    ]


def settings_for(url: str) -> DatabaseSettings:
    return DatabaseSettings(url=url, retry_attempts=3, retry_initial_delay=0.01)


def test_a_deadlock_is_retried_and_the_transaction_then_commits(
    rows: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``op`` locks row 1 then row 2; another session locks row 2 then row 1.

    The other session waits first, with a ``deadlock_timeout`` longer than the test, so
    it never runs the deadlock check; ``op`` closes the cycle and its own check (after
    the server's ``deadlock_timeout``) finds it: ``op``'s transaction is the victim,
    however slowly either side gets there.
    """
    caplog.set_level(logging.WARNING, logger=ENGINE_LOG)
    database = get_database(settings_for(rows))
    attempts: list[int] = []
    failures: list[str | None] = []
    op_holds_row_1 = threading.Event()
    other_holds_row_2 = threading.Event()
    other_pid: list[int] = []

    def other_waits_for_a_lock(watcher: psycopg.Connection[Any]) -> bool:
        row = watcher.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (other_pid[0],)
        ).fetchone()
        return row == ("Lock",)

    def op(conn: psycopg.Connection[Any]) -> int:
        attempts.append(conn.info.backend_pid)
        conn.execute("UPDATE conflict_test SET value = 'op' WHERE id = 1")
        if len(attempts) == 1:
            assert other_holds_row_2.wait(DEFAULT_TIMEOUT), "the other session never started"
            op_holds_row_1.set()
            with psycopg.connect(rows, autocommit=True) as watcher:
                wait_until(
                    lambda: other_waits_for_a_lock(watcher),
                    "the other session waiting for row 1",
                    interval=0.005,
                )
        try:
            conn.execute("UPDATE conflict_test SET value = 'op' WHERE id = 2")
        except psycopg.Error as exc:
            failures.append(exc.sqlstate)
            raise
        return len(attempts)

    def other_session() -> None:
        with psycopg.connect(rows) as conn:
            conn.execute("SET deadlock_timeout = '10min'")
            other_pid.append(conn.info.backend_pid)
            conn.execute("UPDATE conflict_test SET value = 'other' WHERE id = 2")
            other_holds_row_2.set()
            assert op_holds_row_1.wait(DEFAULT_TIMEOUT), "op never locked row 1"
            conn.execute("UPDATE conflict_test SET value = 'other' WHERE id = 1")
            conn.commit()

    other = threading.Thread(target=other_session)
    other.start()
    try:
        assert database.run(op, transaction=True) == 2
    finally:
        other.join(DEFAULT_TIMEOUT)
    assert failures == ["40P01"]  # the first attempt was the deadlock's victim
    assert len(retries(caplog)) == 1 and "attempt 1/3" in retries(caplog)[0]
    # The retry ran after the other session committed, so its writes are the last.
    assert values(rows) == [(1, "op"), (2, "op")]


def test_a_serialization_failure_is_retried_with_a_new_snapshot(
    rows: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A REPEATABLE READ transaction updates a row that another session changed after
    its snapshot: 40001. The retry reads the committed value, so no update is lost."""
    caplog.set_level(logging.WARNING, logger=ENGINE_LOG)
    database = get_database(settings_for(rows))
    failures: list[str | None] = []
    attempts = 0

    def op(conn: psycopg.Connection[Any]) -> str:
        nonlocal attempts
        attempts += 1
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute("SELECT value FROM conflict_test WHERE id = 1").fetchone()
        assert row is not None
        if attempts == 1:
            with psycopg.connect(rows, autocommit=True) as other:
                other.execute("UPDATE conflict_test SET value = 'other' WHERE id = 1")
        try:
            conn.execute("UPDATE conflict_test SET value = %s WHERE id = 1", (row[0] + "+op",))
        except psycopg.Error as exc:
            failures.append(exc.sqlstate)
            raise
        return str(row[0])

    assert database.run(op, transaction=True) == "other"
    assert attempts == 2
    assert failures == ["40001"]
    assert len(retries(caplog)) == 1 and "attempt 1/3" in retries(caplog)[0]
    assert values(rows) == [(1, "other+op"), (2, "start")]
