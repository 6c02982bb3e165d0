"""Statements sent through the application's own connection, inside its transaction.

While :func:`pynenc_postgres.in_transaction` is active, every statement that a Postgres
component sends through :class:`~pynenc_postgres.db.engine.Database` runs on the
connection the application lent, instead of on the process's pool:

- inside the application's transaction: nothing is committed or rolled back here, and
  leaving the block commits nothing either. The rows become visible to runners, and the
  ``NOTIFY`` that a routing statement sends is delivered, when the application commits;
  a rollback leaves nothing behind;
- without retries: a statement resent after an error could not replay the application's
  part of the transaction, so an error is translated as usual and surfaces at once;
- with the connection's own settings (``statement_timeout``, ``synchronous_commit``):
  ``postgres_apply_settings=transaction`` sends no ``SET LOCAL`` on it, since that would
  change the application's transaction.

The borrowing lives in a context variable: another thread, or another asyncio task, of
the same process keeps using the pool. Reads go through the borrowed connection too,
because the rows written inside the block are visible only to it (pynenc reads the
invocation it has just registered, to report its status to the trigger).

Before the first statement of a :class:`Database` on a connection, one statement checks
that the connection reaches the same server and database, sees the pynenc tables of
the database's schema, and may write the tables a submission writes. The outcome is
remembered for the life of the connection, which cannot change server or database.

**Caches.** The application may roll back whatever was written inside the block, so a
process must not keep, past the block, anything it learnt from such a write. A cache of
rows checks :func:`current` and stores nothing while it is not ``None``; or it records
the write with :meth:`BorrowedTransaction.remember`, which lasts for the block only
(the block never learns whether the application commits).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.errors import (
    InTransactionError,
    PostgresPluginError,
    driver_error,
    is_database_error,
    translate,
)
from pynenc_postgres.db.sql import quote_ident

if TYPE_CHECKING:
    from pynenc_postgres.db.engine import Database, Params

T = TypeVar("T")

# The tables a submission writes (invocation, history, runner context, registration,
# concurrency arguments, queue, large arguments, conditions met by the new status):
# INSERT ... ON CONFLICT DO UPDATE needs SELECT, INSERT and UPDATE on each.
SUBMISSION_TABLES = (
    t.INVOCATION,
    t.INVOCATION_HISTORY,
    t.RUNNER_CONTEXT,
    t.ORCHESTRATOR_INVOCATION,
    t.ORCHESTRATOR_ARGUMENT,
    t.BROKER_MESSAGE,
    t.CLIENT_DATA,
    t.TRIGGER_VALID_CONDITION,
)
_PRIVILEGES = ("SELECT", "INSERT", "UPDATE")

# Same server (its start time), same database, the same pynenc tables; and whether the
# role may use the schema and write the submission tables. Catalog lookups only: a check
# that raised would abort the application's transaction.
_PRIVILEGE_TEST = " AND ".join(f"has_table_privilege(c.oid, '{p}')" for p in _PRIVILEGES)
_CHECK_SQL = f"""
    SELECT current_database(), pg_postmaster_start_time(),
           (SELECT c.oid::bigint FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s),
           current_user,
           coalesce((SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_catalog.pg_namespace n
                     WHERE n.nspname = %s), false),
           ARRAY(SELECT name FROM unnest(%s::text[]) AS name
                 WHERE NOT EXISTS (
                     SELECT FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = %s AND c.relname = name
                       AND {_PRIVILEGE_TEST}))"""

_ACTIVE: ContextVar[BorrowedTransaction | None] = ContextVar(
    "pynenc_postgres_borrowed_transaction", default=None
)


@dataclass(frozen=True)
class _Identity:
    database: str
    server_started: datetime
    invocation_table: int | None


# What the pool of each Database sees; fetched once, again after a mismatch.
_references: weakref.WeakKeyDictionary[Database, _Identity] = weakref.WeakKeyDictionary()
# Databases already checked against each borrowed connection.
_checked: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[Database]] = (
    weakref.WeakKeyDictionary()
)


def current() -> BorrowedTransaction | None:
    """The borrowed transaction of this thread or asyncio task, if a block is active."""
    return _ACTIVE.get()


@contextmanager
def borrowing(transaction: BorrowedTransaction) -> Iterator[BorrowedTransaction]:
    """Send this context's statements through ``transaction`` until the block ends."""
    transaction.check_usable()
    token = _ACTIVE.set(transaction)
    try:
        yield transaction
    finally:
        transaction.ended = True
        _ACTIVE.reset(token)


@contextmanager
def suspended() -> Iterator[None]:
    """Use the pool again for the block: for writes that are not the application's to undo."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class BorrowedTransaction:
    """The application's connection, lent for the statements of one ``in_transaction`` block.

    :param connection: the psycopg 3 connection (underneath a SQLAlchemy one, if need be).
    :param source: what the application passed, for messages ("SQLAlchemy Session").
    """

    def __init__(self, connection: psycopg.Connection[Any], source: str) -> None:
        self.connection = connection
        self.source = source
        self.ended = False
        self.statements = 0
        """Statements sent on the connection by this block (operations count as one)."""
        self._memo: set[Hashable] = set()

    def remember(self, key: Hashable) -> bool:
        """True the first time ``key`` is given in this block, False afterwards.

        For work done once per block (a check, a write) that must be done again in the
        next block: the application may roll this block's writes back.
        """
        if key in self._memo:
            return False
        self._memo.add(key)
        return True

    def check_usable(self) -> None:
        """Raise :class:`InTransactionError` unless a statement sent now joins a transaction."""
        if self.ended:
            raise InTransactionError(
                "This call reached pynenc-postgres after its in_transaction() block had "
                "ended (from an asyncio task, or a thread, that carried the block's context). "
                "Make the call inside the block, or after it without one."
            )
        conn = self.connection
        status = conn.info.transaction_status
        if conn.closed or status == TransactionStatus.UNKNOWN:
            raise InTransactionError(
                f"The {self.source} given to in_transaction() is closed. Pass an open "
                "connection whose transaction the application commits."
            )
        if status == TransactionStatus.INERROR:
            raise InTransactionError(
                f"The {self.source} given to in_transaction() is in a failed transaction: "
                "an earlier statement raised an error, and Postgres ignores everything "
                "until the transaction ends. Roll it back (conn.rollback() or "
                "session.rollback()) and do the work again in a new transaction."
            )
        if status == TransactionStatus.IDLE and conn.autocommit:
            raise InTransactionError(
                f"The {self.source} given to in_transaction() is in autocommit mode and not "
                "inside a transaction, so every statement would commit on its own. Open a "
                "transaction first (psycopg: `with conn.transaction():`, or connect with "
                "autocommit=False; SQLAlchemy: do not use isolation_level='AUTOCOMMIT')."
            )

    def execute(self, db: Database, query: str, params: Params) -> psycopg.Cursor[Any]:
        """Run one statement on the borrowed connection; its rows are tuples."""
        self._prepare(db)
        try:
            # The application's connection may have a row factory of its own (dict_row).
            cursor = self.connection.cursor(row_factory=tuple_row)
            cursor.execute(query, params)
        except Exception as exc:
            self._raise(db, exc)
        self.statements += 1
        return cursor

    def run(self, db: Database, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``operation`` on the borrowed connection: in its transaction, not retried."""
        self._prepare(db)
        conn = self.connection
        saved = conn.row_factory
        conn.row_factory = tuple_row
        try:
            result = operation(conn)
        except Exception as exc:
            self._raise(db, exc)
        finally:
            conn.row_factory = saved
        self.statements += 1
        return result

    def bind(self, db: Database) -> None:
        """Check that ``db``'s tables are the ones this connection writes, once per connection."""
        checked = _checked.setdefault(self.connection, set())
        if db in checked:
            return
        try:
            row = (
                self.connection.cursor(row_factory=tuple_row)
                .execute(_CHECK_SQL, _check_params(db))
                .fetchone()
            )
        except Exception as exc:
            self._raise(db, exc)
        assert row is not None
        seen = _Identity(row[0], row[1], row[2])
        if seen != _reference(db) and seen != _reference(db, refresh=True):
            expected = _reference(db)
            raise InTransactionError(
                f"The {self.source} given to in_transaction() is connected to database "
                f"{seen.database!r} on another server or database than the app's pynenc "
                f"tables ({db.settings.server}, schema {db.settings.schema!r}, database "
                f"{expected.database!r}). Pass a connection to that database, or point "
                "postgres_url at the application's database."
            )
        role, usage, forbidden = row[3], row[4], row[5]
        schema = quote_ident(db.settings.schema)
        if not usage:
            raise InTransactionError(
                f"The role {role!r} of the {self.source} given to in_transaction() may not "
                f"use schema {schema}, which holds the app's pynenc tables. Grant it "
                f"(GRANT USAGE ON SCHEMA {schema} TO {quote_ident(role)}, and the table "
                "privileges of docs/audit.md's runtime role), or connect with a role that has it."
            )
        if forbidden:
            raise InTransactionError(
                f"The role {role!r} of the {self.source} given to in_transaction() may not "
                f"write pynenc's tables: it lacks {', '.join(_PRIVILEGES)} on "
                f"{', '.join(f'{schema}.{name}' for name in forbidden)}. Grant them "
                "(docs/audit.md, the runtime role's GRANTs), or connect with a role that has "
                "them."
            )
        checked.add(db)

    def _prepare(self, db: Database) -> None:
        self.check_usable()
        if db not in _checked.get(self.connection, ()):
            self.bind(db)

    def _raise(self, db: Database, exc: Exception) -> NoReturn:
        """Raise ``exc`` as the usual project error, saying that it was not retried."""
        if isinstance(exc, PostgresPluginError) or not (
            isinstance(exc, UnicodeEncodeError) or is_database_error(exc)
        ):
            raise exc
        error = translate(exc, db.settings.server)
        failed = self.connection.info.transaction_status == TransactionStatus.INERROR
        error.args = (
            f"{error.args[0]} (sent through in_transaction() on the application's "
            f"{self.source}, so not retried"
            + ("; its transaction has failed: roll it back)" if failed else ")"),
        )
        raise error from driver_error(exc) or exc


def _check_params(db: Database) -> tuple[Any, ...]:
    schema = db.settings.schema
    return (schema, t.INVOCATION, schema, list(SUBMISSION_TABLES), schema)


def _reference(db: Database, *, refresh: bool = False) -> _Identity:
    """What ``db``'s own pool sees (the pool also checks the schema's revision)."""
    identity = None if refresh else _references.get(db)
    if identity is None:
        with suspended():
            row = db.fetchone(_CHECK_SQL, _check_params(db))
        assert row is not None
        identity = _Identity(row[0], row[1], row[2])
        _references[db] = identity
    return identity
