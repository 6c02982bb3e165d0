"""An application's unit of work, three ways, and what the ``in_transaction()`` tests read.

An order row is the application's business write; the tasks are what it submits with it.
The same unit of work runs on a psycopg 3 connection, a SQLAlchemy Connection and a
SQLAlchemy Session (ORM), each committing or rolling back as the application would.
Counts are always read from the database, on a connection of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from pynenc import Pynenc, PynencBuilder
from sqlalchemy import Integer, Text, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from pynenc_postgres.db.settings import parse_url
from tests.transaction import tasks

KINDS = ("psycopg", "sqlalchemy-connection", "sqlalchemy-session")

BUSINESS_TABLES = """
    CREATE TABLE shop_order (order_id integer PRIMARY KEY, note text NOT NULL);
    CREATE TABLE task_run (
        order_id integer NOT NULL,
        invocation_id text NOT NULL,
        ran_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
"""

# Above pynenc's min_size_to_cache (1,024): stored in the client data store.
LARGE_DOCUMENT = "invoice line\n" * 200


class Base(DeclarativeBase):
    pass


class Order(Base):
    """The application's own model, in its own metadata."""

    __tablename__ = "shop_order"
    order_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    note: Mapped[str] = mapped_column(Text)


class UnitOfWork:
    """One application transaction: ``target`` goes to ``in_transaction()``."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self._engine = None
        if kind == "psycopg":
            self._conn = psycopg.connect(url)
            self.target: Any = self._conn
            return
        self._engine = create_engine(parse_url(url), poolclass=NullPool)
        if kind == "sqlalchemy-connection":
            self._sa = self._engine.connect()
            self.target = self._sa
        elif kind == "sqlalchemy-session":
            self._session = Session(self._engine)
            self.target = self._session
        else:
            raise ValueError(kind)

    def add_order(self, order_id: int) -> None:
        note = f"order {order_id}"
        if self.kind == "psycopg":
            self._conn.execute("INSERT INTO shop_order VALUES (%s, %s)", (order_id, note))
        elif self.kind == "sqlalchemy-connection":
            self._sa.execute(
                text("INSERT INTO shop_order VALUES (:i, :n)"), {"i": order_id, "n": note}
            )
        else:
            self._session.add(Order(order_id=order_id, note=note))
            self._session.flush()

    def commit(self) -> None:
        self.target.commit()

    def rollback(self) -> None:
        self.target.rollback()

    def close(self) -> None:
        self.target.close()
        if self._engine is not None:
            self._engine.dispose()


@contextmanager
def unit_of_work(kind: str, url: str) -> Iterator[UnitOfWork]:
    unit = UnitOfWork(kind, url)
    try:
        yield unit
    finally:
        unit.close()


def create_business_tables(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BUSINESS_TABLES)


def build_app(url: str, app_id: str | None = None, **config: Any) -> Pynenc:
    """An app with every component on Postgres (a fresh app id unless given)."""
    return (
        PynencBuilder()
        .app_id(app_id or f"tx-{uuid.uuid4().hex[:10]}")
        .postgres(url=url)
        .custom_config(**config)
        .build()
    )


@contextmanager
def bound(app: Pynenc) -> Iterator[Pynenc]:
    """The test tasks submit to ``app`` for the duration."""
    previous = [task.app for task in tasks.ALL_TASKS]
    for task in tasks.ALL_TASKS:
        task.app = app
    try:
        yield app
    finally:
        for task, before in zip(tasks.ALL_TASKS, previous, strict=True):
            task.app = before


def submit_order_tasks(order_id: int) -> list[Any]:
    """What the application submits for one order: single calls and a parallelize batch."""
    invocations = [
        tasks.send_invoice(order_id),
        tasks.attach_document(order_id, LARGE_DOCUMENT),
        tasks.reserve_stock(order_id),
    ]
    group = tasks.send_invoice.parallelize([(order_id,), (order_id,), (order_id,)])
    invocations.extend(group.invocations)
    return invocations


def pynenc_tables(conn: psycopg.Connection[Any], column: str) -> list[str]:
    """Every pynenc table (not view) of the public schema that has ``column``."""
    rows = conn.execute(
        """
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'public' AND c.table_name LIKE 'pynenc\\_%%'
          AND c.column_name = %s AND t.table_type = 'BASE TABLE'
        ORDER BY 1""",
        (column,),
    ).fetchall()
    return [row[0] for row in rows]


def app_rows(url: str, app_id: str) -> dict[str, int]:
    """Rows of ``app_id`` in every pynenc table, read from the database."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: conn.execute(
                f"SELECT count(*) FROM {table} WHERE app_id = %s",
                (app_id,),
            ).fetchone()[0]  # type: ignore[index]
            for table in pynenc_tables(conn, "app_id")
        }


def changed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The tables whose count changed, and by how much."""
    return {table: after[table] - before[table] for table in after if after[table] != before[table]}


def rows_of_invocations(url: str, invocation_ids: list[str]) -> dict[str, int]:
    """Rows naming these invocations, in every pynenc table with an invocation id."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: conn.execute(
                f"SELECT count(*) FROM {table} WHERE invocation_id = ANY(%s)",
                (invocation_ids,),
            ).fetchone()[0]  # type: ignore[index]
            for table in pynenc_tables(conn, "invocation_id")
        }


def runner_contexts(url: str, app_id: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT runner_id FROM pynenc_runner_context WHERE app_id = %s ORDER BY 1", (app_id,)
        )
        return [row[0] for row in rows]


def orders(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT order_id FROM shop_order ORDER BY 1")]


def task_runs(url: str, order_id: int) -> list[str]:
    """The invocation id of every run of a task body for ``order_id``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT invocation_id FROM task_run WHERE order_id = %s ORDER BY ran_at", (order_id,)
        )
        return [row[0] for row in rows]
