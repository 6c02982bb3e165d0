"""Submit pynenc tasks inside the application's own database transaction.

::

    with psycopg.connect(url) as conn:           # or a SQLAlchemy Session / Connection
        conn.execute("INSERT INTO orders ...")
        with in_transaction(conn):
            send_invoice(order_id)                # any task call, .parallelize(...) too
    # the invocation exists for runners once conn commits, and never if it rolls back

The statements go through the application's connection (:mod:`pynenc_postgres.db.borrowed`);
this module turns what the application passes into that connection.

There is no asyncio form. pynenc's task calls are synchronous: a call sends its statements
before it returns, from the thread that makes it, so they cannot be sent through an
asyncio connection (``psycopg.AsyncConnection``, SQLAlchemy's ``AsyncSession``), whose
statements must be awaited on its event loop. An asyncio application runs the unit of
work, with a synchronous connection or Session, in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg

from pynenc_postgres.db import borrowed
from pynenc_postgres.db.component import enlist_app
from pynenc_postgres.db.errors import UnsupportedConnectionError

if TYPE_CHECKING:
    from pynenc.app import Pynenc

__all__ = ["in_transaction"]

_ACCEPTED = (
    "a psycopg 3 Connection, a SQLAlchemy Connection or a SQLAlchemy Session (with the "
    "postgresql+psycopg dialect)"
)
_NO_ASYNC = (
    "pynenc's task calls are synchronous, so in_transaction() needs a synchronous "
    "connection; it cannot send statements through an asyncio one. In an asyncio "
    "application, run the transaction's work with a synchronous connection or Session in a "
    "thread (asyncio.to_thread); see docs/operations.md."
)


@contextmanager
def in_transaction(connection: Any, *, app: Pynenc | None = None) -> Iterator[None]:
    """Write every pynenc submission made in the block inside ``connection``'s transaction.

    Every row that a task call or ``.parallelize(...)`` writes in the block (invocation,
    history, orchestrator registration, queue message, client data) is written through
    ``connection``, inside its transaction, and becomes visible to runners only when the
    application commits; the ``NOTIFY`` that wakes idle workers is delivered then too. If
    the application rolls back, nothing of them remains and nothing runs. Neither the block
    nor pynenc-postgres commits or rolls back: that is the application's decision.

    Statements in the block are not retried (a retry could not replay the application's
    part of the transaction): an error surfaces at once as the usual pynenc-postgres error.
    The block covers the calls made in this thread or asyncio task only; others keep
    their own connections.

    :param connection: a psycopg 3 ``Connection``, a SQLAlchemy ``Connection`` or a
        SQLAlchemy ``Session``, with the ``postgresql+psycopg`` dialect. A Session, or a
        Connection not yet in a transaction, has its transaction begun here, so that its
        ``commit()`` commits the submissions.
    :param app: check up front that this app can submit in the block. Without it, an
        app is checked at its first submission in the block.
    :raises UnsupportedConnectionError: ``connection`` is of another kind (psycopg 2,
        another SQLAlchemy dialect, an asyncio connection or an Engine).
    :raises InTransactionError: the connection is closed, in autocommit mode outside a
        transaction, in a failed transaction, or to another database than the app's; the
        app has components that are not on PostgreSQL; or a call in the block waits for a
        result, which could only come after the commit.
    """
    raw, source = _psycopg_connection(connection)
    with borrowed.borrowing(borrowed.BorrowedTransaction(raw, source)) as transaction:
        if app is not None:
            transaction.remember(("app", id(app)))
            enlist_app(app, transaction)
        yield


def _psycopg_connection(connection: Any) -> tuple[psycopg.Connection[Any], str]:
    """The psycopg connection under ``connection``, and what to call it in messages."""
    if isinstance(connection, psycopg.Connection):
        return connection, "psycopg connection"
    if isinstance(connection, psycopg.AsyncConnection):
        raise UnsupportedConnectionError(
            f"in_transaction() was given an AsyncConnection: {_NO_ASYNC}"
        )
    module = type(connection).__module__
    if module.startswith("sqlalchemy."):
        return _sqlalchemy_connection(connection)
    if module.startswith("psycopg2"):
        raise UnsupportedConnectionError(
            "in_transaction() was given a psycopg2 connection; it needs psycopg 3, the "
            "driver pynenc-postgres uses. Connect with psycopg 3 (import psycopg), or with "
            "SQLAlchemy's postgresql+psycopg dialect."
        )
    raise UnsupportedConnectionError(
        f"in_transaction() was given {type(connection).__qualname__}; pass {_ACCEPTED}."
    )


def _sqlalchemy_connection(connection: Any) -> tuple[psycopg.Connection[Any], str]:
    """Begin the transaction of a SQLAlchemy Session or Connection, and find its driver's."""
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session, scoped_session

    if isinstance(connection, scoped_session):
        connection = connection()
    if isinstance(connection, AsyncSession | AsyncConnection):
        kind = type(connection).__name__
        raise UnsupportedConnectionError(f"in_transaction() was given an {kind}: {_NO_ASYNC}")
    if isinstance(connection, Engine):
        raise UnsupportedConnectionError(
            "in_transaction() was given a SQLAlchemy Engine, which has no transaction of "
            "its own; pass the Connection (engine.begin()) or Session whose transaction "
            "the application commits."
        )
    if isinstance(connection, Session):
        source = "SQLAlchemy Session"
        # Begins the Session's transaction (if not begun) on the connection it commits.
        sa_connection = connection.connection()
    elif isinstance(connection, Connection):
        source = "SQLAlchemy Connection"
        sa_connection = connection
    else:
        raise UnsupportedConnectionError(
            f"in_transaction() was given {type(connection).__qualname__}; pass {_ACCEPTED}."
        )
    dialect = sa_connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        raise UnsupportedConnectionError(
            f"in_transaction() was given a {source} of the {dialect.name}+{dialect.driver} "
            "dialect; it needs PostgreSQL through psycopg 3. Create the engine with a "
            "postgresql+psycopg:// URL."
        )
    if not sa_connection.in_transaction():
        # Otherwise the statements would open a transaction that SQLAlchemy does not
        # know about, that its commit() would skip and its pool would roll back.
        sa_connection.begin()
    raw = sa_connection.connection.dbapi_connection
    if not isinstance(raw, psycopg.Connection):
        raise UnsupportedConnectionError(
            f"The {source} given to in_transaction() has no open psycopg connection "
            f"(found {type(raw).__qualname__}); pass one that is open."
        )
    return raw, source
