"""Connections: one pool per process and settings, fork-safe, with bounded retries.

Hot paths run on raw psycopg connections in autocommit mode: one statement is one
round trip and one commit, with no BEGIN, no ROLLBACK on return to the pool and no
ORM in between. They come from :class:`~pynenc_postgres.db.pool.ConnectionPool`,
whose checkout is a list pop. SQLAlchemy provides the URL handling here, and the
dialect and engines of the migrations (:mod:`pynenc_postgres.db.schema`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from pynenc_postgres.db.errors import (
    PostgresPluginError,
    driver_error,
    is_database_error,
    is_transient,
    translate,
)
from pynenc_postgres.db.pool import ConnectionPool, PooledConnection
from pynenc_postgres.db.settings import DatabaseSettings, libpq_url

logger = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[psycopg.Connection[Any]], T]


class Database:
    """Access to one Postgres database for one process.

    The connection pool is created on first use and recreated after a fork, so a forked
    runner never shares a socket with its parent. It is never pickled.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        self._schema_ready = False
        self._lock = threading.Lock()
        self._local_settings = _local_settings(settings)

    def __repr__(self) -> str:
        return f"Database({self.settings.server!r}, schema={self.settings.schema!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (get_database, (self.settings,))

    def _connect_args(self) -> dict[str, Any]:
        """psycopg connection arguments of the pool's connections."""
        s = self.settings
        options = []
        if s.apply_settings == "startup":
            if s.statement_timeout_ms > 0:
                options.append(f"-c statement_timeout={s.statement_timeout_ms}")
            if s.synchronous_commit:
                options.append(f"-c synchronous_commit={s.synchronous_commit}")
        connect_args: dict[str, Any] = {
            "connect_timeout": s.connect_timeout,
            "application_name": s.application_name,
            "prepare_threshold": s.prepare_threshold if s.prepare_threshold >= 0 else None,
        }
        if options:
            connect_args["options"] = " ".join(options)
        return connect_args

    @property
    def pool(self) -> ConnectionPool:
        """The process's pool of raw connections, created on first use and after a fork."""
        pool = self._pool
        if pool is None or self._pool_pid != os.getpid():
            with self._lock:
                pool = self._pool
                if pool is None or self._pool_pid != os.getpid():
                    pool = self._create_pool()
                    self._pool = pool
                    self._pool_pid = os.getpid()
                    self._schema_ready = False
        return pool

    def _create_pool(self) -> ConnectionPool:
        s = self.settings
        conninfo = libpq_url(s.url)
        connect_args = self._connect_args()

        def connect() -> psycopg.Connection[Any]:
            return PooledConnection.connect(conninfo, autocommit=True, **connect_args)

        return ConnectionPool(connect, s.pool_size, s.max_overflow, s.pool_timeout)

    def dispose(self) -> None:
        """Close every pooled connection of this process; the next call opens new ones."""
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None
            self._pool_pid = None

    def forget_after_fork(self) -> None:
        """Drop the parent's pool without closing its sockets, which the parent still uses."""
        if self._pool is not None:
            self._pool.forget()
        self._pool = None
        self._pool_pid = None
        self._schema_ready = False
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Check out a raw autocommit psycopg connection, checking the schema once per process.

        Driver errors are not translated here; :meth:`run` does that after retrying.
        """
        pool = self.pool
        conn = pool.get()
        try:
            if not self._schema_ready:
                self._prepare_schema(conn)
            yield conn
        except BaseException as exc:
            if conn_is_broken(conn, exc):
                pool.discard(conn)
            else:
                pool.put(conn)
            raise
        pool.put(conn)

    def _prepare_schema(self, conn: psycopg.Connection[Any]) -> None:
        from pynenc_postgres.db import schema

        with self._lock:
            if self._schema_ready:
                return
            schema.ensure_ready(self, conn)
            self._schema_ready = True

    def fetchone(self, query: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """Run one statement (with retries) and return its first row, if any."""
        row: tuple[Any, ...] | None = self._statement(query, params, _ONE_ROW)
        return row

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (with retries) and return all its rows."""
        rows: list[tuple[Any, ...]] = self._statement(query, params, _ALL_ROWS)
        return rows

    def execute(self, query: str, params: Sequence[Any]) -> None:
        """Run one statement (with retries); it is committed when this returns."""
        self._statement(query, params, _NO_ROWS)

    def _statement(self, query: str, params: Sequence[Any], fetch: int) -> Any:
        """One statement: a first attempt without building a closure, then the retry loop."""
        conn = self._hot_connection()
        failure = conn if isinstance(conn, Exception) else None
        if isinstance(conn, PooledConnection):
            try:
                result = _fetch(conn.hot_cursor.execute(query, params), fetch)
            except Exception as exc:
                self._release_after(conn, exc)
                failure = exc
            else:
                self._pool.put(conn)  # type: ignore[union-attr]
                return result

        def op(conn: psycopg.Connection[Any]) -> Any:
            return _fetch(_cursor(conn).execute(query, params), fetch)

        return self._run_with_retries(op, False, failure)

    def _hot_connection(self) -> PooledConnection | Exception | None:
        """A pooled connection for a single statement's first attempt.

        The single-statement helpers run that attempt without building a closure. The
        error of a failed checkout is returned, and with None (first use in this
        process) the caller goes straight to :meth:`_run_with_retries`, which opens the
        pool, checks the schema, and retries transient failures (every write is
        idempotent, so a statement may be sent again).
        """
        pool = self._pool
        if (
            pool is None
            or not self._schema_ready
            or self._pool_pid != os.getpid()
            or self._local_settings  # settings go with each transaction: the slow path
        ):
            return None
        try:
            conn = pool.get()
        except Exception as exc:
            return exc
        if isinstance(conn, PooledConnection):
            return conn
        pool.put(conn)
        return None

    def _release_after(self, conn: psycopg.Connection[Any], exc: BaseException) -> None:
        pool = self._pool
        if pool is None:
            conn.close()
        elif conn_is_broken(conn, exc):
            pool.discard(conn)
        else:
            pool.put(conn)

    def run(self, operation: Operation[T], *, transaction: bool = False) -> T:
        """Run ``operation`` on a pooled connection; retry transient failures with backoff.

        Every write this layer issues is idempotent (``INSERT ... ON CONFLICT``), so a
        statement resent after a dropped connection neither fails nor duplicates rows.

        :param operation: callable receiving the psycopg connection.
        :param transaction: run ``operation`` inside one transaction.
        :raises PostgresPluginError: the failure was permanent, or outlasted
            ``postgres_retry_attempts``.
        """
        # The first attempt inlines connection(): this is the path every call takes.
        pool = self._pool
        if (
            pool is not None
            and self._schema_ready
            and self._pool_pid == os.getpid()
            and not self._local_settings
        ):
            try:
                conn = pool.get()
            except Exception as exc:  # pool exhausted, or a new connection failed
                return self._run_with_retries(operation, transaction, exc)
            try:
                if transaction:
                    with conn.transaction():
                        result = operation(conn)
                else:
                    result = operation(conn)
            except BaseException as exc:
                if conn_is_broken(conn, exc):
                    pool.discard(conn)
                else:
                    pool.put(conn)
                if not isinstance(exc, Exception):
                    raise
                return self._run_with_retries(operation, transaction, exc)
            pool.put(conn)
            return result
        return self._run_with_retries(operation, transaction, None)

    def _run_with_retries(
        self, operation: Operation[T], transaction: bool, failure: Exception | None
    ) -> T:
        """The retry loop of :meth:`run`; ``failure`` is the first attempt's error, if any."""
        s = self.settings
        delay = s.retry_initial_delay
        local = self._local_settings
        for attempt in range(1, s.retry_attempts + 1):
            try:
                if failure is not None:
                    exc, failure = failure, None
                    raise exc
                with self.connection() as conn:
                    if transaction or local:
                        with conn.transaction():
                            if local:
                                conn.execute(local[0], local[1])
                            return operation(conn)
                    return operation(conn)
            except PostgresPluginError:
                raise
            except UnicodeEncodeError as exc:
                # Raised by psycopg while adapting a parameter, before anything is sent.
                raise translate(exc, s.server) from None
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                cause = driver_error(exc) or exc
                if not is_transient(exc) or attempt == s.retry_attempts:
                    if is_transient(exc):
                        error = translate(exc, s.server)
                        error.args = (
                            f"{error.args[0]} (gave up after {attempt} attempts; "
                            "see postgres_retry_attempts)",
                        )
                        raise error from cause
                    raise translate(exc, s.server) from cause
                if isinstance(cause, psycopg.OperationalError):
                    # After a restart every pooled connection is dead; start afresh.
                    self.dispose()
                logger.warning(
                    "Transient Postgres error on %s (attempt %d/%d), retrying in %.2fs: %s",
                    s.server,
                    attempt,
                    s.retry_attempts,
                    delay,
                    str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause),
                )
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, s.retry_max_delay)
        raise AssertionError("unreachable: the retry loop returns or raises")


def _local_settings(settings: DatabaseSettings) -> tuple[str, tuple[str, ...]] | None:
    """The ``SET LOCAL`` statement of ``apply_settings="transaction"``, or None."""
    if settings.apply_settings != "transaction":
        return None
    names: list[str] = []
    values: list[str] = []
    if settings.statement_timeout_ms > 0:
        names.append("statement_timeout")
        values.append(str(settings.statement_timeout_ms))
    if settings.synchronous_commit:
        names.append("synchronous_commit")
        values.append(settings.synchronous_commit)
    if not names:
        return None
    calls = ", ".join(f"set_config('{name}', %s, true)" for name in names)
    return f"SELECT {calls}", tuple(values)


_NO_ROWS, _ONE_ROW, _ALL_ROWS = 0, 1, 2


def _fetch(cursor: psycopg.Cursor[Any], fetch: int) -> Any:
    if fetch == _ONE_ROW:
        return cursor.fetchone()
    if fetch == _ALL_ROWS:
        return cursor.fetchall()
    return None


def _cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    if isinstance(conn, PooledConnection):
        return conn.hot_cursor
    return conn.cursor()


def conn_is_broken(conn: Any, exc: BaseException) -> bool:
    """True when the connection cannot be reused after ``exc``."""
    if getattr(conn, "broken", False) or getattr(conn, "closed", False):
        return True
    err = driver_error(exc)
    return err is not None and isinstance(err, psycopg.OperationalError) and not err.sqlstate


_registry: dict[DatabaseSettings, Database] = {}
_registry_lock = threading.Lock()


def get_database(settings: DatabaseSettings) -> Database:
    """The process-wide :class:`Database` for these settings (one pool per URL and options)."""
    database = _registry.get(settings)
    if database is None:
        with _registry_lock:
            database = _registry.setdefault(settings, Database(settings))
    return database


def dispose_all() -> None:
    """Close every pool of this process (tests, CLI shutdown)."""
    for database in list(_registry.values()):
        database.dispose()


def _forget_pools_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for database in _registry.values():
        database.forget_after_fork()


os.register_at_fork(after_in_child=_forget_pools_in_child)
