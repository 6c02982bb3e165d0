"""Connections: one engine per process and settings, fork-safe, with bounded retries.

Hot paths run on the raw psycopg connection in autocommit mode: one statement is one
round trip and one commit, with no BEGIN, no ROLLBACK on return to the pool and no
ORM in between. SQLAlchemy provides the pool, the dialect for migrations, and the
URL handling.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import QueuePool

from pynenc_postgres.db.errors import (
    PostgresPluginError,
    driver_error,
    is_transient,
    translate,
)
from pynenc_postgres.db.settings import DatabaseSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[psycopg.Connection[Any]], T]


class Database:
    """Access to one Postgres database for one process.

    The engine is created on first use and recreated after a fork, so a forked
    runner never shares a socket with its parent. It is never pickled.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._schema_ready = False
        self._lock = threading.Lock()
        self._local_settings = _local_settings(settings)

    def __repr__(self) -> str:
        return f"Database({self.settings.server!r}, schema={self.settings.schema!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (get_database, (self.settings,))

    @property
    def engine(self) -> Engine:
        """The process's SQLAlchemy engine (pool of psycopg connections)."""
        pid = os.getpid()
        if self._engine is None or self._engine_pid != pid:
            with self._lock:
                if self._engine is None or self._engine_pid != pid:
                    self._engine = self._create_engine()
                    self._engine_pid = pid
                    self._schema_ready = False
        return self._engine

    def _create_engine(self) -> Engine:
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
        return create_engine(
            s.sqlalchemy_url,
            poolclass=QueuePool,
            pool_size=s.pool_size,
            max_overflow=s.max_overflow,
            pool_timeout=s.pool_timeout,
            # Statements run in autocommit, so nothing is left to roll back on checkin;
            # a reset would cost a round trip per call.
            pool_reset_on_return=None,
            isolation_level="AUTOCOMMIT",
            connect_args=connect_args,
        )

    def dispose(self) -> None:
        """Close every pooled connection of this process; the next call opens new ones."""
        with self._lock:
            if self._engine is not None and self._engine_pid == os.getpid():
                self._engine.dispose()
            self._engine = None
            self._engine_pid = None

    def forget_after_fork(self) -> None:
        """Drop the parent's pool without closing its sockets, which the parent still uses."""
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._engine = None
        self._engine_pid = None
        self._schema_ready = False
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Check out a raw autocommit psycopg connection, checking the schema once per process.

        Driver errors are not translated here; :meth:`run` does that after retrying.
        """
        fairy = self.engine.raw_connection()
        try:
            conn: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
            if not self._schema_ready:
                self._prepare_schema(conn)
            yield conn
        except BaseException as exc:
            if conn_is_broken(fairy.driver_connection, exc):
                fairy.invalidate(exc if isinstance(exc, Exception) else None)
            raise
        finally:
            fairy.close()

    def _prepare_schema(self, conn: psycopg.Connection[Any]) -> None:
        from pynenc_postgres.db import schema

        with self._lock:
            if self._schema_ready:
                return
            schema.ensure_ready(self, conn)
            self._schema_ready = True

    def run(self, operation: Operation[T], *, transaction: bool = False) -> T:
        """Run ``operation`` on a pooled connection; retry transient failures with backoff.

        Every write this layer issues is idempotent (``INSERT ... ON CONFLICT``), so a
        statement resent after a dropped connection neither fails nor duplicates rows.

        :param operation: callable receiving the psycopg connection.
        :param transaction: run ``operation`` inside one transaction.
        :raises PostgresPluginError: the failure was permanent, or outlasted
            ``postgres_retry_attempts``.
        """
        s = self.settings
        delay = s.retry_initial_delay
        local = self._local_settings
        for attempt in range(1, s.retry_attempts + 1):
            try:
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
            except (psycopg.Error, sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError) as exc:
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


def conn_is_broken(conn: Any, exc: BaseException) -> bool:
    """True when the connection cannot be reused after ``exc``."""
    if getattr(conn, "broken", False) or getattr(conn, "closed", False):
        return True
    err = driver_error(exc)
    return err is not None and isinstance(err, psycopg.OperationalError) and not err.sqlstate


_registry: dict[DatabaseSettings, Database] = {}
_registry_lock = threading.Lock()


def get_database(settings: DatabaseSettings) -> Database:
    """The process-wide :class:`Database` for these settings (one engine per URL and options)."""
    database = _registry.get(settings)
    if database is None:
        with _registry_lock:
            database = _registry.setdefault(settings, Database(settings))
    return database


def dispose_all() -> None:
    """Close every engine of this process (tests, CLI shutdown)."""
    for database in list(_registry.values()):
        database.dispose()


def _forget_engines_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for database in _registry.values():
        database.forget_after_fork()


os.register_at_fork(after_in_child=_forget_engines_in_child)
