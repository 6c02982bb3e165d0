"""The hot-path connection pool: capacity, waiting, failures, interrupts, settings, fork.

Every test runs against the real server; failures are caused for real (backends
terminated by an admin session, sessions closed by ``idle_session_timeout``, a deadlock,
signals delivered to the thread that waits for Postgres).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from pynenc import PynencBuilder

from pynenc_postgres.db.engine import Database, get_database
from pynenc_postgres.db.errors import PostgresConfigError, PostgresPoolTimeoutError
from pynenc_postgres.db.pool import PooledConnection, PoolTimeoutError
from pynenc_postgres.db.settings import DatabaseSettings

RETRY_LOG = "Transient Postgres error"
RESULT_INSERT = (
    "INSERT INTO pynenc_invocation_result (app_id, invocation_id, serialized_result) "
    "VALUES (%s, %s, %s) ON CONFLICT (app_id, invocation_id) DO NOTHING"
)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def sessions(admin_url: str, application_name: str, state: str | None = None) -> int:
    """Server sessions that carry ``application_name`` (in ``state``, if given)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND (%s::text IS NULL OR state = %s)",
            (application_name, state, state),
        ).fetchone()
    assert row is not None
    return int(row[0])


def backend_pid(db: Database) -> int:
    row = db.fetchone("SELECT pg_backend_pid()", ())
    assert row is not None
    return int(row[0])


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


# -- capacity, reuse, waiting ----------------------------------------------------------


def test_idle_connection_is_reused(database_url: str) -> None:
    db = get_database(DatabaseSettings(url=database_url, pool_size=1, max_overflow=0))
    assert len({backend_pid(db) for _ in range(5)}) == 1
    assert db.pool_stats()["pool_size"] == 1


def test_capacity_is_size_plus_overflow(database_url: str) -> None:
    db = get_database(
        DatabaseSettings(url=database_url, pool_size=1, max_overflow=1, pool_timeout=0.2)
    )
    backend_pid(db)
    pool = db.pool
    a, b = pool.get(), pool.get()
    assert a is not b
    with pytest.raises(PoolTimeoutError):
        pool.get()
    stats = db.pool_stats()
    assert stats["pool_max"] == 2 and stats["pool_size"] <= 2
    pool.put(a)
    pool.put(b)  # above pool_size: closed rather than kept
    assert b.closed and not a.closed
    assert db.pool_stats()["pool_available"] == 1
    db.dispose()
    assert a.closed


def test_full_pool_reports_a_pool_timeout(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    db = get_database(settings)
    backend_pid(db)
    held = db.pool.get()
    try:
        with pytest.raises(PostgresPoolTimeoutError, match="postgres_pool_timeout"):
            db.fetchone("SELECT 1", ())
    finally:
        db.pool.put(held)
    assert db.fetchone("SELECT 1", ()) == (1,)


def test_waiting_thread_is_served_as_soon_as_a_connection_returns(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url, pool_size=1, max_overflow=0, pool_timeout=30)
    db = get_database(settings)
    backend_pid(db)
    pool = db.pool
    held = pool.get()
    served = threading.Event()
    outcome: list[Any] = []

    def waiter() -> None:
        try:
            outcome.append(db.fetchone("SELECT 41 + 1", ()))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            served.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: db.pool_stats().get("requests_waiting") == 1, "the call to queue")
    assert not served.is_set()
    returned = time.monotonic()
    pool.put(held)
    assert served.wait(settings.pool_timeout), "the waiting call was never served"
    waited = time.monotonic() - returned
    thread.join()
    assert outcome == [(42,)]
    # Handed over on return, not found by polling or at the end of pool_timeout.
    assert waited < settings.pool_timeout / 10, f"served {waited:.2f}s after the return"


def test_connection_returned_inside_a_transaction_is_not_reused(database_url: str) -> None:
    db = get_database(DatabaseSettings(url=database_url, pool_size=1, max_overflow=0))
    with db.connection() as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT set_config('application_name', 'left-behind', true)")
        first = conn
    assert first.closed
    with db.connection() as conn:
        assert conn is not first
        assert conn.info.transaction_status == TransactionStatus.IDLE
        row = conn.execute("SELECT current_setting('application_name')").fetchone()
        assert row == ("pynenc",)


def test_statement_cursor_is_reused(database_url: str) -> None:
    db = get_database(DatabaseSettings(url=database_url))
    backend_pid(db)
    conn = db.pool.get()
    assert isinstance(conn, PooledConnection)
    assert conn.hot_cursor is conn.hot_cursor
    db.pool.put(conn)


def test_connection_returned_after_dispose_is_closed(database_url: str) -> None:
    db = get_database(DatabaseSettings(url=database_url))
    backend_pid(db)
    old = db.pool
    conn = old.get()
    db.dispose()
    old.put(conn)  # to the pool it came from, closed meanwhile
    assert conn.closed
    assert db.pool is not old
    assert db.fetchone("SELECT 1", ()) == (1,)


def test_pool_settings_reach_the_pool_from_the_builder_and_the_environment(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = (
        PynencBuilder()
        .memory()
        .postgres_state_backend(
            url=database_url, pool_max_lifetime=120.0, pool_max_idle=30.0, pool_check=True
        )
        .build()
    )
    settings = app.state_backend.settings
    assert (settings.pool_max_lifetime, settings.pool_max_idle, settings.pool_check) == (
        120.0,
        30.0,
        True,
    )
    monkeypatch.setenv("PYNENC__POSTGRES_POOL_MAX_LIFETIME", "90")
    monkeypatch.setenv("PYNENC__POSTGRES_POOL_MAX_IDLE", "45")
    monkeypatch.setenv("PYNENC__POSTGRES_POOL_CHECK", "true")
    settings = (
        PynencBuilder()
        .memory()
        .postgres_state_backend(url=database_url)
        .build()
        .state_backend.settings
    )
    assert (settings.pool_max_lifetime, settings.pool_max_idle, settings.pool_check) == (
        90.0,
        45.0,
        True,
    )
    with pytest.raises(PostgresConfigError, match="postgres_pool_max_lifetime"):
        DatabaseSettings(url=database_url, pool_max_lifetime=0)


def test_connection_past_its_lifetime_is_replaced(database_url: str) -> None:
    db = get_database(
        DatabaseSettings(url=database_url, pool_size=1, max_overflow=0, pool_max_lifetime=0.5)
    )
    first = backend_pid(db)
    # Replaced when it comes back after its lifetime; each call below returns one.
    wait_until(lambda: backend_pid(db) != first, "the connection to be replaced")
    assert db.pool_stats()["pool_size"] == 1


def test_connection_idle_past_max_idle_is_closed_instead_of_reused(database_url: str) -> None:
    max_idle = 0.3
    db = get_database(
        DatabaseSettings(url=database_url, pool_size=1, max_overflow=0, pool_max_idle=max_idle)
    )
    first = backend_pid(db)
    assert backend_pid(db) == first  # used again at once: kept
    pool = db.pool
    conn = pool.get()
    pool.put(conn)
    returned = time.monotonic()
    wait_until(lambda: time.monotonic() - returned > max_idle, "the connection to idle")
    assert backend_pid(db) != first
    assert conn.closed
    assert db.pool_stats()["pool_size"] == 1


@pytest.mark.parametrize("check", [False, True])
def test_pool_check_makes_a_round_trip_at_checkout(database_url: str, check: bool) -> None:
    name = unique_name("check")
    db = get_database(
        DatabaseSettings(
            url=database_url, application_name=name, pool_size=1, max_overflow=0, pool_check=check
        )
    )
    db.fetchone("SELECT 'last statement'", ())
    with db.connection(), psycopg.connect(database_url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT query FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
    # The server shows the session's latest statement: the check's empty one, if made.
    assert row == ("",) if check else row == ("SELECT 'last statement'",)


# -- failures ----------------------------------------------------------------------------


def test_backends_terminated_while_threads_write_lose_no_call(database_url: str) -> None:
    """Sessions killed from outside under concurrent writes: every call succeeds, once.

    Each lost connection closes the pool it came from while other threads still hold
    connections of that pool: they must go back to their own pool, not to the next one,
    and the next pool's accounting must stay exact.
    """
    name = unique_name("storm")
    app_id = name
    size, overflow, threads, writes, step = 2, 2, 4, 50, 4
    db = get_database(
        DatabaseSettings(
            url=database_url,
            application_name=name,
            pool_size=size,
            max_overflow=overflow,
            retry_attempts=40,
            retry_initial_delay=0.01,
            retry_max_delay=0.05,
        )
    )
    backend_pid(db)
    progress = threading.Condition()
    written: list[str] = []
    errors: list[BaseException] = []
    finished = threading.Event()
    kills = 0

    def writer(number: int) -> None:
        try:
            for n in range(writes):
                key = f"{number}-{n}"
                db.execute(RESULT_INSERT, (app_id, key, str(n)))
                with progress:
                    written.append(key)
                    progress.notify_all()
        except BaseException as exc:
            errors.append(exc)

    def terminator() -> None:
        nonlocal kills
        with psycopg.connect(database_url, autocommit=True) as admin:
            target = step
            while not finished.is_set():
                with progress:
                    progress.wait_for(
                        lambda target=target: len(written) >= target or finished.is_set()
                    )
                    target = len(written) + step
                row = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = %s",
                    (name,),
                ).fetchone()
                kills += int(row[0]) if row else 0

    killer = threading.Thread(target=terminator)
    killer.start()
    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with progress:
        finished.set()
        progress.notify_all()
    killer.join()

    assert errors == []
    assert kills >= 10, f"only {kills} sessions were terminated"
    stored = db.fetchall(
        "SELECT invocation_id FROM pynenc_invocation_result WHERE app_id = %s", (app_id,)
    )
    expected = {f"{t}-{n}" for t in range(threads) for n in range(writes)}
    assert {row[0] for row in stored} == expected

    # Single statements are back on the direct path of the current pool.
    backend_pid(db)
    assert db._hot is db.pool
    # The pool's books are right afterwards: within its bounds now ...
    stats = db.pool_stats()
    assert stats["pool_max"] == size + overflow
    assert stats["pool_available"] <= stats["pool_size"] <= size + overflow
    assert stats["requests_waiting"] == 0
    wait_until(
        lambda: sessions(database_url, name) <= size + overflow,
        "connections of closed pools to leave the server",
    )
    # ... and under a burst of more threads than it may serve at once.
    peak = 0
    burst = threading.Barrier(2 * (size + overflow))

    def sleeper() -> None:
        burst.wait()
        db.fetchone("SELECT pg_sleep(0.3)", ())

    sleepers = [threading.Thread(target=sleeper) for _ in range(burst.parties)]
    for thread in sleepers:
        thread.start()
    while any(thread.is_alive() for thread in sleepers):
        peak = max(peak, sessions(database_url, name))
    for thread in sleepers:
        thread.join()
    assert 0 < peak <= size + overflow


def test_server_closing_idle_sessions_costs_no_call(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``idle_session_timeout`` closes every pooled session; the next calls do not fail."""
    name = unique_name("idle")
    database = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '1s'").format(
                sql.Identifier(str(database))
            )
        )
    size = 4
    # One attempt: a call that failed even once would raise.
    db = get_database(
        DatabaseSettings(
            url=database_url,
            application_name=name,
            pool_size=size,
            max_overflow=0,
            retry_attempts=1,
        )
    )
    together = threading.Barrier(size)

    def hold() -> None:
        with db.connection() as conn:
            conn.execute("SELECT 1")
            together.wait()

    holders = [threading.Thread(target=hold) for _ in range(size)]
    for thread in holders:
        thread.start()
    for thread in holders:
        thread.join()
    assert sessions(database_url, name) == size
    wait_until(lambda: sessions(database_url, name) == 0, "the server to close idle sessions")

    caplog.set_level(logging.WARNING, logger="pynenc_postgres")
    for n in range(2 * size):
        assert db.fetchone("SELECT %s::int", (n,)) == (n,)
    assert RETRY_LOG not in caplog.text


def test_deadlock_is_retried_without_discarding_the_pool(database_url: str) -> None:
    db = get_database(
        DatabaseSettings(url=database_url, retry_initial_delay=0.01, retry_max_delay=0.05)
    )
    backend_pid(db)
    pool = db.pool
    first_locks = threading.Barrier(2)
    attempts: list[int] = []
    errors: list[BaseException] = []

    def locker(first: int, second: int) -> None:
        def op(conn: psycopg.Connection[Any]) -> None:
            attempts.append(first)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (first,))
            if attempts.count(first) == 1:  # only the first attempts cross each other
                first_locks.wait()
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (second,))

        try:
            db.run(op, transaction=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=locker, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(attempts) == 3, "exactly one side lost the deadlock and was retried"
    assert db.pool is pool  # a deadlock says nothing about the connections


# -- interrupts --------------------------------------------------------------------------


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, as in a terminal.

    A suite started as a background job inherits an ignored SIGINT; these tests are about
    what the pool does when the interrupt is raised, so they restore Python's handler.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@contextmanager
def interrupt_when(condition: Callable[[], bool], signum: int) -> Iterator[threading.Thread]:
    """Send ``signum`` to the main thread as soon as ``condition`` holds."""
    stop = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def interrupter() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            if condition():
                signal.pthread_kill(main, signum)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=interrupter)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join()


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(f"signal {signum}")


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_interrupted_statements_give_their_connection_back(
    database_url: str, ctrl_c_raises: None
) -> None:
    """Ctrl-C (KeyboardInterrupt) or SystemExit while a statement runs leaks no slot."""
    assert threading.current_thread() is threading.main_thread()
    name = unique_name("interrupt")
    size, overflow = 1, 1
    db = get_database(
        DatabaseSettings(
            url=database_url,
            application_name=name,
            pool_size=size,
            max_overflow=overflow,
            pool_timeout=2,
        )
    )
    backend_pid(db)  # the statements below take the hot path
    previous = signal.signal(signal.SIGUSR1, _exit_on_signal)
    try:
        for n in range(2 * (size + overflow) + 1):
            signum, raised = (
                (signal.SIGINT, KeyboardInterrupt) if n % 2 else (signal.SIGUSR1, SystemExit)
            )
            running = lambda: sessions(database_url, name, state="active") > 0  # noqa: E731
            with interrupt_when(running, signum):
                with pytest.raises(raised):
                    db.fetchone("SELECT pg_sleep(30)", ())
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert db.fetchone("SELECT 1", ()) == (1,)
    assert db.pool_stats()["pool_size"] <= size + overflow


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_interrupt_while_waiting_for_a_connection_loses_no_slot(
    database_url: str, ctrl_c_raises: None
) -> None:
    assert threading.current_thread() is threading.main_thread()
    db = get_database(
        DatabaseSettings(url=database_url, pool_size=1, max_overflow=0, pool_timeout=5)
    )
    backend_pid(db)
    pool = db.pool
    held = pool.get()
    waiting = lambda: db.pool_stats().get("requests_waiting") == 1  # noqa: E731
    with interrupt_when(waiting, signal.SIGINT), pytest.raises(KeyboardInterrupt):
        db.fetchone("SELECT 1", ())
    pool.put(held)  # had the interrupted wait kept its place, this would go to nobody
    assert db.fetchone("SELECT 1", ()) == (1,)


# -- settings reach the server -----------------------------------------------------------


def test_url_options_are_kept_with_the_plugins_settings(database_url: str) -> None:
    url = with_query(database_url, "options=-c%20search_path%3Dpynenc_elsewhere,public")
    settings = DatabaseSettings(url=url, statement_timeout_ms=4321, synchronous_commit="off")
    db = get_database(settings)
    row = db.fetchone(
        "SELECT current_setting('search_path'), current_setting('statement_timeout'), "
        "current_setting('synchronous_commit')",
        (),
    )
    assert row == ("pynenc_elsewhere,public", "4321ms", "off")


def test_the_urls_own_application_name_and_connect_timeout_win(database_url: str) -> None:
    url = with_query(database_url, "application_name=billing-worker&connect_timeout=7")
    from_url = get_database(DatabaseSettings(url=url, application_name="ignored"))
    from_settings = get_database(DatabaseSettings(url=database_url, application_name="set"))

    assert from_url.fetchone("SELECT current_setting('application_name')", ()) == (
        "billing-worker",
    )
    assert from_url.run(lambda conn: conn.info.get_parameters().get("connect_timeout")) == "7"
    assert from_settings.fetchone("SELECT current_setting('application_name')", ()) == ("set",)


# -- processes ---------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_connection(database_url: str) -> None:
    db: Database = get_database(DatabaseSettings(url=database_url, pool_size=1, max_overflow=0))
    parent = backend_pid(db)
    parent_pool = db.pool
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not touch the parent's sockets nor its pool's threads
        try:
            row = db.fetchone("SELECT pg_backend_pid()", ())
            mine = db.pool is not parent_pool
            os.write(write_end, f"{row[0] if row and mine else 0}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child_backend = int(os.read(read_end, 64) or b"0")
    os.waitpid(pid, 0)
    assert child_backend not in (0, parent)
    assert db.pool is parent_pool
    assert backend_pid(db) == parent
