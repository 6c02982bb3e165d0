"""Misuses of ``in_transaction()``: each one fails with an error that says what to do."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from pynenc import PynencBuilder
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from pynenc_postgres import (
    InTransactionError,
    PostgresPluginError,
    UnsupportedConnectionError,
    in_transaction,
)
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.settings import parse_url
from tests.conftest import PostgresServer
from tests.transaction import tasks
from tests.transaction.shop import (
    app_rows,
    bound,
    build_app,
    orders,
    rows_of_invocations,
)


def test_an_app_not_on_the_postgres_broker_and_orchestrator_is_refused(shop_url: str) -> None:
    app = (
        PynencBuilder()
        .memory()
        .app_id(f"tx-mixed-{uuid.uuid4().hex[:8]}")
        .postgres_state_backend(url=shop_url)
        .build()
    )
    expected = r"its broker is MemBroker, its orchestrator is MemOrchestrator, its trigger is"
    with bound(app), psycopg.connect(shop_url) as conn:
        with pytest.raises(InTransactionError, match=expected) as raised:
            with in_transaction(conn):
                tasks.send_invoice(1)
        assert "PynencBuilder().postgres(url=...)" in str(raised.value)
        # Refused before anything was written: the application's transaction goes on.
        assert conn.info.transaction_status != TransactionStatus.INERROR
        assert app_rows(shop_url, app.app_id)["pynenc_invocation"] == 0
        # Given up front, the app is checked as the block starts.
        with pytest.raises(InTransactionError, match=expected):
            with in_transaction(conn, app=app):
                raise AssertionError("the block must not start")


def test_a_connection_to_another_database_is_refused(
    postgres_server: PostgresServer, shop_url: str
) -> None:
    other = postgres_server.create_database(template=postgres_server.template)
    app = build_app(shop_url)
    try:
        with bound(app), psycopg.connect(postgres_server.url_for(other)) as conn:
            with pytest.raises(InTransactionError) as raised:
                with in_transaction(conn):
                    tasks.send_invoice(1)
            message = str(raised.value)
            assert f"connected to database '{other}' on another server or database" in message
            assert f"database '{make_url(shop_url).database}'" in message
            assert "Pass a connection to that database" in message
            with pytest.raises(InTransactionError, match="another server or database"):
                with in_transaction(conn, app=app):
                    raise AssertionError("the block must not start")
    finally:
        dispose_all()
        postgres_server.drop_database(other)


@pytest.fixture
def shop_role(postgres_server: PostgresServer, shop_url: str) -> Iterator[str]:
    """The URL of a role with no privileges on the schema, whose USAGE the test grants."""
    role, password = f"shop_{secrets.token_hex(4)}", secrets.token_hex(12)
    with psycopg.connect(shop_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.execute(f"GRANT ALL ON shop_order TO {role}")
    yield make_url(shop_url).set(username=role, password=password).render_as_string(False)
    dispose_all()
    with psycopg.connect(shop_url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
    with postgres_server.admin() as conn:
        conn.execute(f"DROP ROLE {role}")


def test_a_role_that_may_not_write_the_pynenc_tables_is_refused(
    shop_url: str, shop_role: str
) -> None:
    app = build_app(shop_url)
    role = make_url(shop_role).username
    with bound(app), psycopg.connect(shop_role) as conn:
        with pytest.raises(InTransactionError, match='may not use schema "public"'):
            with in_transaction(conn):
                tasks.send_invoice(1)
        with psycopg.connect(shop_url, autocommit=True) as admin:
            admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        with pytest.raises(InTransactionError) as raised:
            with in_transaction(conn):
                tasks.send_invoice(1)
        assert "lacks SELECT, INSERT, UPDATE on" in str(raised.value)
        assert '"public".pynenc_broker_message' in str(raised.value)
        # The checks read the catalog only: the application's transaction is intact.
        conn.execute("INSERT INTO shop_order VALUES (1, 'kept')")
        conn.commit()
    assert orders(shop_url) == [1]


def test_an_autocommit_connection_is_refused(shop_url: str) -> None:
    with psycopg.connect(shop_url, autocommit=True) as conn:
        with pytest.raises(InTransactionError, match="autocommit mode and not inside a"):
            with in_transaction(conn):
                raise AssertionError("the block must not start")
    engine = create_engine(parse_url(shop_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as sa_connection:
            with pytest.raises(InTransactionError, match="isolation_level='AUTOCOMMIT'"):
                with in_transaction(sa_connection):
                    raise AssertionError("the block must not start")
    finally:
        engine.dispose()


def test_a_failed_transaction_is_refused(shop_url: str) -> None:
    app = build_app(shop_url)
    with bound(app), psycopg.connect(shop_url) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        with pytest.raises(InTransactionError, match=r"in a failed transaction.*Roll it back"):
            with in_transaction(conn):
                raise AssertionError("the block must not start")
        conn.rollback()
        with in_transaction(conn):
            tasks.send_invoice(1)
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1 / 0")
            with pytest.raises(InTransactionError, match="in a failed transaction"):
                tasks.send_invoice(2)


def test_waiting_for_a_result_inside_the_block_is_refused(shop_url: str) -> None:
    app = build_app(shop_url)
    with bound(app), psycopg.connect(shop_url) as conn:
        with in_transaction(conn):
            invocation = tasks.send_invoice(1)
            with pytest.raises(InTransactionError, match="Leave the block and commit first"):
                invocation.result  # noqa: B018
            group = tasks.send_invoice.parallelize([(2,), (3,)])
            with pytest.raises(InTransactionError, match="Waiting for the result of invocation"):
                list(group.results)
        # Refused before anything was sent: the transaction commits what was submitted.
        conn.commit()
    ids = [invocation.invocation_id, *(i.invocation_id for i in group.invocations)]
    assert rows_of_invocations(shop_url, ids)["pynenc_broker_message"] == 3


def test_what_cannot_carry_the_transaction_is_refused(shop_url: str) -> None:
    with pytest.raises(UnsupportedConnectionError, match="pass a psycopg 3 Connection"):
        with in_transaction(object()):
            raise AssertionError("the block must not start")

    closed = psycopg.connect(shop_url)
    closed.close()
    with pytest.raises(InTransactionError, match=r"is closed\. Pass an open connection"):
        with in_transaction(closed):
            raise AssertionError("the block must not start")

    # What psycopg2's connections look like to in_transaction(): their module's name.
    psycopg2_like = type("connection", (), {"__module__": "psycopg2.extensions"})()
    with pytest.raises(UnsupportedConnectionError, match="needs psycopg 3"):
        with in_transaction(psycopg2_like):
            raise AssertionError("the block must not start")

    engine = create_engine(parse_url(shop_url), poolclass=NullPool)
    try:
        with pytest.raises(UnsupportedConnectionError, match="Engine, which has no transaction"):
            with in_transaction(engine):
                raise AssertionError("the block must not start")
    finally:
        engine.dispose()

    sqlite = create_engine("sqlite://")
    with Session(sqlite) as session:
        with pytest.raises(UnsupportedConnectionError, match="sqlite\\+pysqlite dialect"):
            with in_transaction(session):
                raise AssertionError("the block must not start")
    sqlite.dispose()


def test_asyncio_connections_are_refused_with_the_reason(shop_url: str) -> None:
    async def check() -> None:
        async with await psycopg.AsyncConnection.connect(shop_url) as aconn:
            with pytest.raises(UnsupportedConnectionError, match="task calls are synchronous"):
                with in_transaction(aconn):
                    raise AssertionError("the block must not start")
        engine = create_async_engine(parse_url(shop_url), poolclass=NullPool)
        async with AsyncSession(engine) as session:
            with pytest.raises(UnsupportedConnectionError, match=r"asyncio\.to_thread"):
                with in_transaction(session):
                    raise AssertionError("the block must not start")
        await engine.dispose()

    asyncio.run(check())


def test_a_call_from_a_task_that_outlived_its_block_is_refused(shop_url: str) -> None:
    """asyncio tasks copy the context they were created in, the borrowing included."""
    app = build_app(shop_url)

    async def check() -> None:
        release = asyncio.Event()

        async def later() -> None:
            await release.wait()
            tasks.send_invoice(1)

        with psycopg.connect(shop_url) as conn:
            with in_transaction(conn):
                task = asyncio.create_task(later())
            release.set()
            with pytest.raises(InTransactionError, match="after its in_transaction\\(\\) block"):
                await task

    with bound(app):
        asyncio.run(check())


def test_a_lost_connection_is_not_retried(
    postgres_server: PostgresServer, shop_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A retry would resend the statement outside the application's transaction."""
    app = build_app(shop_url)
    with bound(app), psycopg.connect(shop_url) as conn:
        with in_transaction(conn):
            tasks.send_invoice(1)
            with postgres_server.admin() as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            with caplog.at_level(logging.WARNING, logger="pynenc_postgres"):
                with pytest.raises(PostgresPluginError, match="so not retried") as raised:
                    tasks.send_invoice(2)
    assert not isinstance(raised.value, InTransactionError)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    assert app_rows(shop_url, app.app_id)["pynenc_invocation"] == 0
