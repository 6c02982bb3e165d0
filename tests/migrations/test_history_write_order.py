"""Revision 0003 on a database that already holds history: no rewrite, old rows keep their
order, new rows follow in write order, and the documented pre-build path gives the same
schema as a plain upgrade."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation import InvocationStatus

from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings
from tests.conftest import PostgresServer
from tests.migrations.conftest import REPO, catalog
from tests.test_history_order import write
from tests.test_state_backend import build_app

TIE = datetime(2026, 2, 1, 8, 0, 0, 654321, tzinfo=UTC)
HISTORY = "pynenc_invocation_history"


@pytest.fixture
def at_0002_with_history(empty_database_url: str) -> Iterator[str]:
    """A database at revision 0002 whose history has two rows of one microsecond."""
    schema.upgrade(DatabaseSettings(url=empty_database_url), "0002")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for status in ("registered", "pending"):
            conn.execute(
                f"""INSERT INTO {HISTORY} (app_id, invocation_id, recorded_at, status,
                        status_set_at, runner_id)
                    VALUES ('old-app', 'old-inv', %s, %s, %s, 'r')""",
                (TIE, status, TIE),
            )
    yield empty_database_url


def relfilenode(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT relfilenode FROM pg_class WHERE oid = %s::regclass", (HISTORY,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_upgrade_keeps_the_table_file_and_new_rows_draw_numbers(
    at_0002_with_history: str,
) -> None:
    """A rewrite would give the table a new file; adding the column must not."""
    url = at_0002_with_history
    before = relfilenode(url)
    schema.upgrade(DatabaseSettings(url=url))
    assert relfilenode(url) == before
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(f"SELECT DISTINCT write_order FROM {HISTORY}").fetchall() == [(0,)]
        conn.execute(
            f"""INSERT INTO {HISTORY} (app_id, invocation_id, recorded_at, status,
                    status_set_at, runner_id) VALUES ('a', 'i', now(), 'running', now(), 'r'),
                    ('a', 'i', now(), 'success', now(), 'r')"""
        )
        orders = conn.execute(
            f"SELECT write_order FROM {HISTORY} WHERE app_id = 'a' ORDER BY write_order"
        ).fetchall()
    assert len(orders) == 2 and 0 < orders[0][0] < orders[1][0]


def test_rows_from_before_the_upgrade_keep_their_order_and_new_rows_follow(
    at_0002_with_history: str,
) -> None:
    url = at_0002_with_history
    schema.upgrade(DatabaseSettings(url=url))
    backend = build_app(url, "old-app").state_backend

    def history() -> list[str]:
        return [h.status_record.status.value for h in backend.get_history(InvocationId("old-inv"))]

    # Written before 0003, the order among them is unknown: they fall back to the old
    # order, by status name.
    assert history() == ["pending", "registered"]
    # A row written now in the same microsecond sorts after them, although "failed"
    # sorts before both by name.
    write(backend, "old-inv", InvocationStatus.FAILED, TIE)
    assert history() == ["pending", "registered", "failed"]
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO pynenc_invocation (app_id, invocation_id, task_id, call_id,
                   arguments_id, serialized_arguments)
               VALUES ('old-app', 'old-inv', 'm.t', 'c', 'a', '{}')"""
        )
        current = conn.execute(
            "SELECT status FROM pynenc_invocation_status WHERE invocation_id = 'old-inv'"
        ).fetchone()
    assert current == ("failed",)


def documented_prebuild() -> list[str]:
    """The statements of the pre-build block in docs/migrations.md, one per line."""
    text = (REPO / "docs" / "migrations.md").read_text()
    match = re.search(r"```sql\n(-- 0003 ahead of the upgrade[^\n]*\n.*?)```", text, re.S)
    assert match, "docs/migrations.md has no pre-build block for 0003"
    return [
        line for line in match.group(1).splitlines() if line.strip() and not line.startswith("--")
    ]


def test_the_documented_prebuild_then_upgrade_gives_the_same_schema(
    at_0002_with_history: str, postgres_server: PostgresServer
) -> None:
    url = at_0002_with_history
    statements = documented_prebuild()
    assert any("CREATE INDEX CONCURRENTLY" in s for s in statements)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[call-overload]
        valid = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = "
            "'ix_pynenc_invocation_history_invocation_order'::regclass"
        ).fetchone()
    assert valid == (True,)
    assert schema.current(DatabaseSettings(url=url)) == "0002"

    schema.upgrade(DatabaseSettings(url=url))
    schema.check_autogenerate(DatabaseSettings(url=url))

    plain = postgres_server.create_database()
    try:
        plain_url = postgres_server.url_for(plain)
        schema.upgrade(DatabaseSettings(url=plain_url))
        assert catalog(url) == catalog(plain_url)
    finally:
        postgres_server.drop_database(plain)


def test_a_role_granted_before_the_upgrade_still_writes_history(
    at_0002_with_history: str,
) -> None:
    """The numbers come from an identity, which needs no grant on its sequence: a runtime
    role with row privileges only (docs/audit.md) keeps working after the upgrade."""
    url = at_0002_with_history
    role = f"pynenc_writer_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(
                sql.Identifier(HISTORY), sql.Identifier(role)
            )
        )
    try:
        schema.upgrade(DatabaseSettings(url=url))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            row = conn.execute(
                f"""INSERT INTO {HISTORY} (app_id, invocation_id, recorded_at, status,
                        status_set_at, runner_id)
                    VALUES ('a', 'i', now(), 'running', now(), 'r') RETURNING write_order"""
            ).fetchone()
        assert row is not None and row[0] > 0
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
