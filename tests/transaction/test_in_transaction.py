"""Submissions inside the application's transaction: visible on commit only, gone on rollback.

No runner here (see ``test_runner.py``): these tests read every pynenc table of the app
before, during and after the application's transaction.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg.rows import dict_row
from pynenc import context
from pynenc.invocation.status import InvocationStatus
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from pynenc_postgres import in_transaction
from pynenc_postgres.db.settings import parse_url
from tests.transaction import tasks
from tests.transaction.shop import (
    KINDS,
    app_rows,
    bound,
    build_app,
    changed,
    orders,
    rows_of_invocations,
    runner_contexts,
    submit_order_tasks,
    unit_of_work,
)


@pytest.mark.parametrize("kind", KINDS)
def test_rollback_leaves_no_row_and_commit_writes_every_row(kind: str, shop_url: str) -> None:
    app = build_app(shop_url)
    app.state_backend  # noqa: B018 - pynenc registers the app (app info) on first use
    before = app_rows(shop_url, app.app_id)

    # Only the submitting process's own context is committed on its own: like the app
    # info, it describes the process, not the submission, and all its submissions share it.
    own_context = {"pynenc_runner_context": 1}
    with bound(app), unit_of_work(kind, shop_url) as unit:
        unit.add_order(1)
        with in_transaction(unit.target):
            rolled_back = submit_order_tasks(1)
        # Written inside the application's transaction: nobody else sees them yet.
        assert changed(before, app_rows(shop_url, app.app_id)) == own_context
        unit.rollback()

    after_rollback = app_rows(shop_url, app.app_id)
    assert changed(before, after_rollback) == own_context
    assert runner_contexts(shop_url, app.app_id) == [
        context.get_or_create_runner_context(app.app_id).runner_id
    ]
    ids = [inv.invocation_id for inv in rolled_back]
    assert sum(rows_of_invocations(shop_url, ids).values()) == 0
    assert orders(shop_url) == []

    before = after_rollback
    with bound(app), unit_of_work(kind, shop_url) as unit:
        unit.add_order(2)
        with in_transaction(unit.target):
            committed = submit_order_tasks(2)
        assert app_rows(shop_url, app.app_id) == before
        unit.commit()

    written = changed(before, app_rows(shop_url, app.app_id))
    submitted = len(committed)
    assert written == {
        "pynenc_invocation": submitted,
        "pynenc_invocation_history": submitted,  # REGISTERED
        "pynenc_orchestrator_invocation": submitted,
        "pynenc_broker_message": submitted,
        "pynenc_client_data": 1,  # the large document
        "pynenc_orchestrator_argument": 1,  # reserve_stock's order_id
    }
    assert orders(shop_url) == [2]
    for invocation in committed:
        assert app.orchestrator.get_invocation_status(invocation.invocation_id) == (
            InvocationStatus.REGISTERED
        )


def test_statements_join_the_transaction_of_a_psycopg_transaction_block(shop_url: str) -> None:
    """An autocommit connection inside ``conn.transaction()`` is inside a transaction."""
    app = build_app(shop_url)
    with bound(app), psycopg.connect(shop_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO shop_order VALUES (3, 'in a transaction block')")
            with in_transaction(conn):
                invocation = tasks.send_invoice(3)
            assert (
                rows_of_invocations(shop_url, [invocation.invocation_id])["pynenc_invocation"] == 0
            )
        # The block committed on leaving conn.transaction().
        assert rows_of_invocations(shop_url, [invocation.invocation_id])["pynenc_invocation"] == 1


def test_other_threads_keep_their_own_connections(shop_url: str) -> None:
    """The borrowing is per thread: a thread started inside the block commits on its own."""
    app = build_app(shop_url)
    outside: list[str] = []
    with bound(app), psycopg.connect(shop_url) as conn:
        with in_transaction(conn):
            inside = tasks.send_invoice(4).invocation_id
            thread = threading.Thread(
                target=lambda: outside.append(tasks.send_invoice(5).invocation_id)
            )
            thread.start()
            thread.join()
        visible = rows_of_invocations(shop_url, [inside, *outside])
        assert visible["pynenc_invocation"] == 1  # the thread's, committed already
        conn.rollback()
    assert rows_of_invocations(shop_url, [outside[0]])["pynenc_invocation"] == 1
    assert rows_of_invocations(shop_url, [inside])["pynenc_invocation"] == 0


def test_transactions_of_one_process_do_not_wait_for_each_other(shop_url: str) -> None:
    """Two threads, each in its own application transaction, submit at the same time.

    Rows that every submission of a process shares (its runner context) are not locked
    by an open application transaction, so the second commits while the first is open.
    """
    app = build_app(shop_url)
    first_submitted, first_may_commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with psycopg.connect(shop_url) as conn:
                conn.execute("INSERT INTO shop_order VALUES (10, 'first')")
                with in_transaction(conn):
                    tasks.send_invoice(10)
                first_submitted.set()
                assert first_may_commit.wait(120), "the test never let the first commit"
                conn.commit()
        except BaseException as exc:
            errors.append(exc)
            first_submitted.set()

    with bound(app):
        thread = threading.Thread(target=first)
        thread.start()
        try:
            assert first_submitted.wait(120), "the first transaction never submitted"
            with psycopg.connect(shop_url) as conn:
                conn.execute("INSERT INTO shop_order VALUES (11, 'second')")
                with in_transaction(conn):
                    second = tasks.send_invoice(11)
                conn.commit()
            assert orders(shop_url) == [11]
            assert rows_of_invocations(shop_url, [second.invocation_id])["pynenc_invocation"] == 1
        finally:
            first_may_commit.set()
            thread.join()
    assert not errors
    assert orders(shop_url) == [10, 11]


def test_a_sqlalchemy_connection_or_session_is_begun_by_the_block(shop_url: str) -> None:
    """A Connection or Session that has sent nothing yet: its commit() must commit the block.

    Had the statements begun a transaction SQLAlchemy does not know about, its commit()
    would skip it and its pool would roll it back on return.
    """
    app = build_app(shop_url)
    engine = create_engine(parse_url(shop_url))
    try:
        with bound(app):
            with engine.connect() as sa_connection:
                with in_transaction(sa_connection):
                    by_connection = tasks.send_invoice(20)
                sa_connection.commit()
            with Session(engine) as session:
                with in_transaction(session):
                    by_session = tasks.send_invoice(21)
                session.commit()
            scoped = scoped_session(sessionmaker(engine))
            with in_transaction(scoped):
                by_scoped_session = tasks.send_invoice(22)
            scoped.commit()
            scoped.remove()
    finally:
        engine.dispose()
    ids = [i.invocation_id for i in (by_connection, by_session, by_scoped_session)]
    assert rows_of_invocations(shop_url, ids)["pynenc_broker_message"] == len(ids)


def test_a_connection_with_its_own_row_factory_works(shop_url: str) -> None:
    """The application's connection may return dicts; pynenc's statements still get tuples."""
    app = build_app(shop_url)
    with bound(app), psycopg.connect(shop_url, row_factory=dict_row) as conn:
        with in_transaction(conn):
            invocations = submit_order_tasks(23)
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
        conn.commit()
    ids = [invocation.invocation_id for invocation in invocations]
    assert rows_of_invocations(shop_url, ids)["pynenc_broker_message"] == len(ids)
