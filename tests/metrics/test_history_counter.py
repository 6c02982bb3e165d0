"""The history totals of migration 0009: counted once per row, never lowered by retention."""

from __future__ import annotations

import ast
from pathlib import Path

import psycopg

from pynenc_postgres.metrics.sql import COUNTED_STATUSES

INSERT = (
    "INSERT INTO pynenc_invocation_history (app_id, invocation_id, recorded_at, status, "
    "status_set_at, runner_id) SELECT %s, %s || i, '2026-01-01T00:00:00Z', %s, now(), 'r' "
    "FROM generate_series(1, %s) AS i ON CONFLICT DO NOTHING"
)


def totals(conn: psycopg.Connection, app: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, sum(total)::bigint FROM pynenc_history_counter WHERE app_id = %s "
        "GROUP BY status",
        (app,),
    ).fetchall()
    return {status: int(total) for status, total in rows}


def test_counted_statuses_match_the_migration() -> None:
    migration = Path(__file__).resolve().parents[2] / "alembic" / "versions"
    source = (migration / "0009_history_counters.py").read_text()
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == "COUNTED_STATUSES"
        ):
            assert ast.literal_eval(node.value) == COUNTED_STATUSES
            break
    else:
        raise AssertionError("0009 defines no COUNTED_STATUSES")


def test_statuses_cover_pynencs() -> None:
    from pynenc.invocation.status import InvocationStatus

    from pynenc_postgres.metrics.sql import ACTIVE_STATUSES, FINAL_STATUSES

    assert set(FINAL_STATUSES) == {s.value for s in InvocationStatus.get_final_statuses()}
    assert set(ACTIVE_STATUSES) | set(FINAL_STATUSES) == {s.value for s in InvocationStatus}
    assert not set(ACTIVE_STATUSES) & set(FINAL_STATUSES)


def test_totals_count_each_inserted_row_and_survive_retention(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(INSERT, ("a", "ok-", "success", 3))
        conn.execute(INSERT, ("a", "bad-", "failed", 2))
        conn.execute(INSERT, ("a", "run-", "running", 4))  # not counted
        conn.execute(INSERT, ("b", "ok-", "success", 1))  # another app
        assert totals(conn, "a") == {"success": 3, "failed": 2}
        # A resent row (same natural key) is skipped by ON CONFLICT, and not counted.
        conn.execute(INSERT, ("a", "ok-", "success", 3))
        # A rolled-back insert is not counted either.
        with conn.transaction(force_rollback=True):
            conn.execute(INSERT, ("a", "gone-", "success", 5))
        assert totals(conn, "a") == {"success": 3, "failed": 2}
        # Retention deletes history: the totals stay.
        conn.execute("DELETE FROM pynenc_invocation_history WHERE app_id = 'a'")
        assert totals(conn, "a") == {"success": 3, "failed": 2}
        conn.execute(INSERT, ("a", "new-", "success", 1))
        assert totals(conn, "a") == {"success": 4, "failed": 2}
        assert totals(conn, "b") == {"success": 1}


def test_a_transaction_updates_no_row_of_a_total_more_than_64_times(database_url: str) -> None:
    """Many counted rows in one transaction spread over rows of the total, 64 each.

    Updating one row once per inserted row would leave a row version per update, each
    one stepped over by the next update in the same transaction: quadratic in the rows
    of the transaction (an import of 100,000 rows took minutes).
    """
    rows = 5000
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(INSERT, ("bulk", "ok-", "success", rows))
            conn.execute(INSERT, ("bulk", "run-", "running", rows))
        shards = conn.execute(
            "SELECT count(*), max(total) FROM pynenc_history_counter "
            "WHERE app_id = 'bulk' AND status = 'success'"
        ).fetchone()
        assert totals(conn, "bulk") == {"success": rows}
    assert shards == (-(-rows // 64), 64)
    # A transaction with one counted row (pynenc's own writes) uses one of 16 rows.
    with psycopg.connect(database_url, autocommit=True) as conn:
        for n in range(20):
            conn.execute(INSERT, ("one", f"ok-{n}-", "success", 1))
        shard = conn.execute(
            "SELECT DISTINCT shard FROM pynenc_history_counter WHERE app_id = 'one'"
        ).fetchall()
        backend = conn.execute("SELECT pg_backend_pid() % 16").fetchone()
    assert shard == [backend]


def test_purge_of_an_app_removes_its_totals_only(database_url: str) -> None:
    from pynenc import PynencBuilder

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(INSERT, ("purged", "ok-", "success", 2))
        conn.execute(INSERT, ("kept", "ok-", "success", 2))
    app = PynencBuilder().app_id("purged").memory().postgres_state_backend(url=database_url).build()
    app.state_backend.purge()
    with psycopg.connect(database_url) as conn:
        assert totals(conn, "purged") == {}
        assert totals(conn, "kept") == {"success": 2}
