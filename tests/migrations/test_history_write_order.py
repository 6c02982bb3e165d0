"""Revision 0005 on a database that already holds history: no rewrite, old rows keep their
order, new rows follow in write order, and a role granted before the upgrade still writes."""

from __future__ import annotations

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


def indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
            (HISTORY,),
        ).fetchall()
    return {row[0] for row in rows}


def test_the_upgrade_keeps_the_table_file_and_new_rows_draw_numbers(
    at_0002_with_history: str,
) -> None:
    """A rewrite would give the table a new file, and an index build would read the whole
    table under the ALTER TABLE's lock; the upgrade must do neither."""
    url = at_0002_with_history
    before, indexes_before = relfilenode(url), indexes(url)
    schema.upgrade(DatabaseSettings(url=url))
    assert relfilenode(url) == before
    assert indexes(url) == indexes_before
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

    # Written before 0005, the order among them is unknown: they fall back to the old
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
