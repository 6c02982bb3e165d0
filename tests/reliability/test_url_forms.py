"""Every URL form the README accepts connects for real, at run time and for migrations.

The server is this module's own: TCP with password authentication, and a Unix socket.
Each form reaches the database through the runtime pool (psycopg) and through the
schema tooling (the startup check, ``db current``), which build their connections
separately.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings
from tests.reliability.conftest import APP_PASSWORD, APP_ROLE, Dedicated

PASSWORD = quote(APP_PASSWORD, safe="")


def forms(dedicated: Dedicated, database: str) -> dict[str, tuple[str, bool]]:
    """URL by form name, and whether it goes over the Unix socket."""
    port = dedicated.server.port
    socket_dir = str(dedicated.server.socket_dir)
    tcp = f"{APP_ROLE}:{PASSWORD}@127.0.0.1:{port}/{database}"
    return {
        "postgresql": (f"postgresql://{tcp}", False),
        "postgres": (f"postgres://{tcp}", False),
        "postgresql+psycopg": (f"postgresql+psycopg://{tcp}", False),
        "socket in host= query": (
            f"postgresql://{APP_ROLE}@/{database}?host={quote(socket_dir, safe='')}&port={port}",
            True,
        ),
        "socket as %2F-encoded host": (
            f"postgresql://{APP_ROLE}@{quote(socket_dir, safe='')}:{port}/{database}",
            True,
        ),
    }


FORMS = [
    "postgresql",
    "postgres",
    "postgresql+psycopg",
    "socket in host= query",
    "socket as %2F-encoded host",
]


@pytest.mark.parametrize("form", FORMS)
def test_url_form_connects_at_run_time_and_for_migrations(dedicated: Dedicated, form: str) -> None:
    database = dedicated.new_database()
    url, over_socket = forms(dedicated, database)[form]
    settings = DatabaseSettings(url=url)

    def whoami(conn: psycopg.Connection[Any]) -> Any:
        return conn.execute(
            "SELECT current_user, current_database(), host(inet_server_addr())"
        ).fetchone()

    # The runtime pool (its first call also runs the startup check on that connection).
    assert get_database(settings).run(whoami) == (
        APP_ROLE,
        database,
        None if over_socket else "127.0.0.1",
    )
    # The schema tooling opens its own connection from the same URL.
    assert schema.current(settings) == schema.head_revision()
    assert PASSWORD not in settings.server and APP_PASSWORD not in settings.server
