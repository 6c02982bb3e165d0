"""Connections: one pool per process and settings, fork-safe, with bounded retries.

Hot paths run on raw psycopg connections in autocommit mode: one statement is one
round trip and one commit, with no BEGIN, no ROLLBACK on return to the pool and no
ORM in between. They come from :class:`~pynenc_postgres.db.pool.ConnectionPool`,
whose checkout is a list pop. SQLAlchemy serves the dialect and engines of the
migrations (:mod:`pynenc_postgres.db.schema`).

A connection always goes back to the pool it came from, whatever another thread did to
the process's pool meanwhile. A lost connection closes the pool it came from, and only a
lost connection does: a deadlock, a serialization failure or a server out of slots
leaves the pool alone. A call that never reached the server (its pooled connection had
been closed by the server while idle) is retried at once on a fresh connection, without
counting against ``postgres_retry_attempts``.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pynenc_postgres.db.borrowed import current as borrowed_transaction
from pynenc_postgres.db.errors import (
    PostgresConfigError,
    PostgresPluginError,
    driver_error,
    is_database_error,
    is_transient,
    translate,
)
from pynenc_postgres.db.pool import ConnectionPool, NothingSentError, PooledConnection
from pynenc_postgres.db.settings import DatabaseSettings, libpq_url
from pynenc_postgres.db.telemetry import count_operation, count_statement, retried

logger = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[psycopg.Connection[Any]], T]
# Positional (``%s``) or named (``%(name)s``) parameters of one statement.
Params = Sequence[Any] | Mapping[str, Any]

# Fresh connections tried for one call whose pooled connection turned out closed before
# anything was sent; past that, the failure counts as an ordinary lost connection.
_UNSENT_RETRIES = 3

# SQLSTATEs with which the server ends a session: shutdown, crash, recovery, database
# dropped, idle-session timeout. Class 08 (connection exceptions) is lost too.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})
_IDLE_SESSION_TIMEOUT = "57P05"


class Database:
    """Access to one Postgres database for one process.

    The connection pool is created on first use and recreated after a fork, so a forked
    runner never shares a socket with its parent. It is never pickled.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        # The pool that single statements use directly: set once the schema was checked
        # on it, and only when settings need no per-call transaction.
        self._hot: ConnectionPool | None = None
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
        url_params = _url_params(s.url)
        connect_args: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": s.prepare_threshold if s.prepare_threshold >= 0 else None,
        }
        # An argument replaces the URL's parameter of the same name. A URL that names
        # its own application_name or connect_timeout is the more specific choice.
        for keyword, value in (
            ("connect_timeout", s.connect_timeout),
            ("application_name", s.application_name),
        ):
            if keyword not in url_params:
                connect_args[keyword] = value
        if options:
            # Keep the URL's own options (search_path, ...) in front of the plugin's.
            own = str(url_params.get("options") or "").strip()
            connect_args["options"] = " ".join([own, *options] if own else options)
        return connect_args

    @property
    def pool(self) -> ConnectionPool:
        """The process's pool, created on first use, after a fork and after a lost connection."""
        pool = self._pool
        if pool is None or pool.closed or self._pool_pid != os.getpid():
            with self._lock:
                pool = self._pool
                if pool is None or pool.closed or self._pool_pid != os.getpid():
                    self._hot = None
                    self._schema_ready = False
                    pool = self._create_pool()
                    self._pool = pool
                    self._pool_pid = os.getpid()
        return pool

    def _create_pool(self) -> ConnectionPool:
        s = self.settings
        conninfo = libpq_url(s.url)
        connect_args = self._connect_args()

        def connect() -> PooledConnection:
            return PooledConnection.connect(conninfo, **connect_args)

        return ConnectionPool(
            connect,
            s.pool_size,
            s.max_overflow,
            s.pool_timeout,
            max_lifetime=s.pool_max_lifetime,
            max_idle=s.pool_max_idle,
            check=s.pool_check,
        )

    def pool_stats(self) -> dict[str, int]:
        """Counts of this process's pool (empty before first use), for monitoring.

        ``pool_min`` and ``pool_max`` (its bounds), ``pool_size`` (connections open or
        being opened), ``pool_available`` (idle), ``requests_waiting`` (threads waiting).
        """
        pool = self._pool
        if pool is None or pool.closed or self._pool_pid != os.getpid():
            return {}
        return pool.stats()

    def dispose(self) -> None:
        """Close every pooled connection of this process; the next call opens new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
            mine = self._pool_pid == os.getpid()
            self._pool_pid = None
            self._hot = None
        if pool is not None and mine:
            pool.close()

    def forget_after_fork(self) -> None:
        """Drop the parent's pool without closing its sockets, which the parent still uses."""
        if self._pool is not None:
            self._pool.forget()
        self._pool = None
        self._pool_pid = None
        self._hot = None
        self._schema_ready = False
        self._lock = threading.Lock()

    def _checkout(self) -> tuple[ConnectionPool, PooledConnection]:
        """A live connection and the pool it must go back to."""
        for _ in range(_UNSENT_RETRIES):
            pool = self.pool
            try:
                return pool, pool.get()
            except NothingSentError:
                continue  # that pool is closed now: the next one opens a fresh connection
        pool = self.pool
        return pool, pool.get()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Check out a raw autocommit psycopg connection, checking the schema once per process.

        Driver errors are not translated here; :meth:`run` does that after retrying. A
        connection left inside a transaction is closed when returned, not reused.
        """
        pool, conn = self._checkout()
        try:
            if not self._schema_ready or (self._hot is not pool and self._local_settings is None):
                self._prepare_schema(pool, conn)
            yield conn
        except BaseException as exc:
            _release(pool, conn, exc)
            raise
        pool.put(conn)

    def _prepare_schema(self, pool: ConnectionPool, conn: psycopg.Connection[Any]) -> None:
        from pynenc_postgres.db import schema

        with self._lock:
            if not self._schema_ready:
                schema.ensure_ready(self, conn)
                self._schema_ready = True
            if self._local_settings is None and pool is self._pool:
                self._hot = pool

    def fetchone(self, query: str, params: Params) -> tuple[Any, ...] | None:
        """Run one statement (with retries) and return its first row, if any."""
        row: tuple[Any, ...] | None = self._statement(query, params, _ONE_ROW)
        return row

    def fetchall(self, query: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run one statement (with retries) and return all its rows."""
        rows: list[tuple[Any, ...]] = self._statement(query, params, _ALL_ROWS)
        return rows

    def execute(self, query: str, params: Params) -> None:
        """Run one statement (with retries); it is committed when this returns."""
        self._statement(query, params, _NO_ROWS)

    def _statement(self, query: str, params: Params, fetch: int) -> Any:
        """One statement: a first attempt without building a closure, then the retry loop."""
        count_statement(query)
        borrowed = borrowed_transaction()
        if borrowed is not None:  # inside in_transaction(): the application's connection
            return _fetch(borrowed.execute(self, query, params), fetch)
        failure: Exception | None = None
        pool = self._hot
        if pool is not None and self._pool_pid == os.getpid():
            try:
                conn = pool.get()
            except Exception as exc:  # pool exhausted, or its connection found closed
                failure = exc
            else:
                try:
                    result = _fetch(conn.hot_cursor.execute(query, params), fetch)
                except BaseException as exc:
                    _release(pool, conn, exc)
                    if not isinstance(exc, Exception):
                        raise  # KeyboardInterrupt, SystemExit: the slot was given back
                    failure = exc
                else:
                    pool.put(conn)
                    return result

        def op(conn: psycopg.Connection[Any]) -> Any:
            return _fetch(_cursor(conn).execute(query, params), fetch)

        return self._run_with_retries(op, False, failure)

    def run(self, operation: Operation[T], *, transaction: bool = False) -> T:
        """Run ``operation`` on a pooled connection; retry transient failures with backoff.

        Every write this layer issues is idempotent (``INSERT ... ON CONFLICT``), so a
        statement resent after a dropped connection neither fails nor duplicates rows.
        Inside ``in_transaction()`` it runs once, on the application's connection
        (:mod:`pynenc_postgres.db.borrowed`).

        :param operation: callable receiving the psycopg connection.
        :param transaction: run ``operation`` inside one transaction.
        :raises PostgresPluginError: the failure was permanent, or outlasted
            ``postgres_retry_attempts``.
        """
        count_operation(operation)
        borrowed = borrowed_transaction()
        if borrowed is not None:  # inside in_transaction(): the application's connection
            return borrowed.run(self, operation)
        # The first attempt inlines connection(): this is the path every call takes.
        pool = self._hot
        if pool is None or self._pool_pid != os.getpid():
            return self._run_with_retries(operation, transaction, None)
        try:
            conn = pool.get()
        except Exception as exc:  # pool exhausted, or its connection found closed
            return self._run_with_retries(operation, transaction, exc)
        try:
            if transaction:
                with conn.transaction():
                    result = operation(conn)
            else:
                result = operation(conn)
        except BaseException as exc:
            _release(pool, conn, exc)
            if not isinstance(exc, Exception):
                raise
            return self._run_with_retries(operation, transaction, exc)
        pool.put(conn)
        return result

    def _run_with_retries(
        self, operation: Operation[T], transaction: bool, failure: Exception | None
    ) -> T:
        """The retry loop of :meth:`run`; ``failure`` is the first attempt's error, if any."""
        s = self.settings
        delay = s.retry_initial_delay
        local = self._local_settings
        attempt = 1
        unsent = 0
        while True:
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
                if _never_ran(exc) and unsent < _UNSENT_RETRIES:
                    # Nothing reached the server: a fresh connection, at once, uncounted.
                    unsent += 1
                    logger.debug("Pooled connection to %s was closed by the server", s.server)
                    continue
                cause = driver_error(exc) or exc
                if not is_transient(exc) or attempt >= s.retry_attempts:
                    if is_transient(exc):
                        error = translate(exc, s.server)
                        error.args = (
                            f"{error.args[0]} (gave up after {attempt} attempts; "
                            "see postgres_retry_attempts)",
                        )
                        raise error from cause
                    raise translate(exc, s.server) from cause
                logger.warning(
                    "Transient Postgres error on %s (attempt %d/%d), retrying in %.2fs: %s",
                    s.server,
                    attempt,
                    s.retry_attempts,
                    delay,
                    str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause),
                )
                retried(cause)
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, s.retry_max_delay)
                attempt += 1


def _release(pool: ConnectionPool, conn: PooledConnection, exc: BaseException) -> None:
    """Give ``conn`` back to ``pool``, its own, after ``exc``; close both if it was lost."""
    if is_connection_loss(exc):
        # After a restart every pooled connection is dead: start afresh.
        pool.close()
        pool.discard(conn)
    elif conn.closed or conn.broken:
        pool.discard(conn)
    else:
        pool.put(conn)


def is_connection_loss(exc: BaseException) -> bool:
    """True when ``exc`` means the session is gone: SQLSTATE class 08, 57P01-57P05, or a
    driver error without SQLSTATE (the socket closed, reset or unreachable).

    A deadlock, a serialization failure or a server out of connection slots is not a
    loss: the session (or the pool) is still good.
    """
    err = driver_error(exc)
    if not isinstance(err, psycopg.OperationalError):
        return False
    sqlstate = err.sqlstate
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in _SESSION_ENDED
    return True


def _never_ran(exc: BaseException) -> bool:
    """True when the call certainly never reached the server, so resending costs nothing."""
    if isinstance(exc, NothingSentError):
        return True
    # The server ends only an idle session for idle_session_timeout: the statement sent
    # afterwards was never executed.
    err = driver_error(exc)
    return err is not None and err.sqlstate == _IDLE_SESSION_TIMEOUT


def _url_params(url: str) -> dict[str, Any]:
    """The URL's connection parameters, decoded as libpq decodes them."""
    try:
        return conninfo_to_dict(libpq_url(url))
    except psycopg.Error:
        # libpq's message quotes the offending part of the URL, which may be the password.
        raise PostgresConfigError(
            "postgres_url cannot be read as a libpq connection URL; check its "
            "percent-escapes and query parameters."
        ) from None


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
