"""Fixtures of the fault and bad-input tests.

Tests that stop the server, change its ``max_connections`` or need password
authentication get a :class:`DedicatedPostgres` of their own module, whatever server the
rest of the suite runs against; the others use the session server of ``tests/conftest.py``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from psycopg import sql
from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.settings import DatabaseSettings
from tests.reliability.server import DedicatedPostgres

APP_ROLE = "pynenc_app"
# Distinctive, with characters that need quoting in a URL, so a leak is easy to spot.
APP_PASSWORD = "Sekr3t:p@ss/w0rd%!"

_names = itertools.count()


@dataclass
class Dedicated:
    """A module's private server, a password-protected role and a migrated template."""

    server: DedicatedPostgres
    template: str = "pynenc_template"

    def new_database(self) -> str:
        name = f"rel_{next(_names)}_{uuid.uuid4().hex[:6]}"
        self.server.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(self.template), sql.Identifier(APP_ROLE)
            )
        )
        return name

    def app_url(self, database: str, password: str = APP_PASSWORD) -> str:
        """URL of the application role over TCP, where the password is checked."""
        return self.server.tcp_url(APP_ROLE, password, database)

    def socket_url(self, database: str) -> str:
        return self.server.url(database)


@pytest.fixture(scope="module")
def dedicated(request: pytest.FixtureRequest) -> Iterator[Dedicated]:
    server = DedicatedPostgres(
        max_connections=getattr(request.module, "MAX_CONNECTIONS", 40), tcp=True
    )
    try:
        server.start()
        server.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
            )
        )
        handle = Dedicated(server)
        server.execute(f"CREATE DATABASE {handle.template} OWNER {APP_ROLE}")
        # Migrated by the application role, which therefore owns the tables.
        schema.upgrade(DatabaseSettings(url=handle.app_url(handle.template)))
        yield handle
    finally:
        dispose_all()
        server.destroy()


def build_app(url: str, app_id: str | None = None, **postgres: Any) -> Pynenc:
    """A pynenc app (memory broker and orchestrator) storing its state at ``url``.

    Every app gets a fresh ``app_id``: pynenc keeps one instance per id in a process.
    """
    builder = PynencBuilder().memory().app_id(app_id or f"rel-{uuid.uuid4().hex[:10]}")
    return builder.postgres_state_backend(url=url, **postgres).build()
