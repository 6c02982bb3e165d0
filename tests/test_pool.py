"""The hot-path connection pool: capacity, overflow, reuse, and what it refuses to keep."""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg
import pytest

from pynenc_postgres.db.engine import Database, get_database
from pynenc_postgres.db.errors import PostgresUnavailableError
from pynenc_postgres.db.pool import ConnectionPool, PooledConnection, PoolTimeoutError
from pynenc_postgres.db.settings import DatabaseSettings


def make_pool(url: str, size: int = 1, overflow: int = 1, timeout: float = 0.2) -> ConnectionPool:
    return ConnectionPool(
        lambda: PooledConnection.connect(url, autocommit=True), size, overflow, timeout
    )


def test_idle_connection_is_reused(database_url: str) -> None:
    pool = make_pool(database_url)
    first = pool.get()
    pool.put(first)
    assert pool.get() is first
    pool.put(first)
    pool.close()
    assert first.closed


def test_capacity_is_size_plus_overflow_and_waiters_time_out(database_url: str) -> None:
    pool = make_pool(database_url, size=1, overflow=1, timeout=0.2)
    a, b = pool.get(), pool.get()
    assert a is not b
    with pytest.raises(PoolTimeoutError):
        pool.get()
    pool.put(a)
    pool.put(b)  # above pool_size: closed rather than kept
    assert b.closed and not a.closed
    pool.close()


def test_waiter_gets_connection_returned_by_another_thread(database_url: str) -> None:
    pool = make_pool(database_url, size=1, overflow=0, timeout=5)
    held = pool.get()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get()))
    waiter.start()
    pool.put(held)
    waiter.join(10)
    assert got == [held]
    pool.put(held)
    pool.close()


def test_connection_left_in_a_transaction_is_not_pooled(database_url: str) -> None:
    pool = make_pool(database_url, size=2, overflow=0)
    conn = pool.get()
    conn.execute("BEGIN")
    pool.put(conn)
    assert conn.closed
    fresh = pool.get()
    assert fresh is not conn and not fresh.closed
    pool.put(fresh)
    pool.close()


def test_busy_connection_is_closed_when_returned_after_close(database_url: str) -> None:
    pool = make_pool(database_url)
    conn = pool.get()
    pool.close()
    pool.put(conn)
    assert conn.closed


def test_statement_cursor_is_reused(database_url: str) -> None:
    pool = make_pool(database_url)
    conn = pool.get()
    assert isinstance(conn, PooledConnection)
    assert conn.hot_cursor is conn.hot_cursor
    pool.put(conn)
    pool.close()


def test_database_run_reuses_one_connection_and_reports_pool_exhaustion(
    database_url: str,
) -> None:
    settings = DatabaseSettings(url=database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    db = get_database(settings)
    pids = {db.fetchone("SELECT pg_backend_pid()", ())[0] for _ in range(5)}  # type: ignore[index]
    assert len(pids) == 1
    held = db.pool.get()
    try:
        with pytest.raises(PostgresUnavailableError, match="postgres_pool_timeout"):
            db.fetchone("SELECT 1", ())
    finally:
        db.pool.put(held)
    db.dispose()


def test_broken_connection_is_replaced_and_the_call_retried(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url, retry_initial_delay=0.01)
    db = get_database(settings)
    first = db.fetchone("SELECT pg_backend_pid()", ())
    assert first is not None
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first[0],))
    second = db.fetchone("SELECT pg_backend_pid()", ())
    assert second is not None and second[0] != first[0]
    db.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_connection(database_url: str) -> None:
    db: Database = get_database(DatabaseSettings(url=database_url))
    parent = db.fetchone("SELECT pg_backend_pid()", ())
    assert parent is not None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not touch the parent's socket
        try:
            row = db.fetchone("SELECT pg_backend_pid()", ())
            os.write(write_end, str(row[0] if row else 0).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child_backend = int(os.read(read_end, 64) or b"0")
    os.waitpid(pid, 0)
    assert child_backend not in (0, parent[0])
    again = db.fetchone("SELECT pg_backend_pid()", ())
    assert again is not None and again[0] == parent[0]
    db.dispose()
