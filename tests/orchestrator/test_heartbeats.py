"""Heartbeats: written at most every few seconds, HOT, never moved back by a late statement,
and brought back to the server's clock after it stepped back."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import psycopg
import pytest

from pynenc_postgres.db.models import HEARTBEAT_STORAGE_PARAMETERS
from pynenc_postgres.orchestrator import PostgresOrchestrator
from pynenc_postgres.orchestrator.heartbeats import DEAD_AFTER_FRACTION, heartbeat_interval
from pynenc_postgres.orchestrator.sql import statements
from tests.orchestrator.apps import build_app

SQL = statements("public")
DEADLINE_SEC = 30.0


def orchestrator_of(url: str, app_id: str, **config: object) -> PostgresOrchestrator:
    orchestrator = build_app(url, app_id, **config).orchestrator
    assert isinstance(orchestrator, PostgresOrchestrator)
    return orchestrator


def beat_of(url: str, app_id: str, runner_id: str) -> tuple[datetime, int]:
    """The stored heartbeat and the row version's transaction id (changes on every write)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT last_heartbeat_at, xmin::text::bigint FROM pynenc_runner_heartbeat "
            "WHERE app_id = %s AND runner_id = %s",
            (app_id, runner_id),
        ).fetchone()
    assert row is not None
    return row[0], int(row[1])


def test_heartbeats_are_written_at_most_once_per_interval(database_url: str) -> None:
    orchestrator = orchestrator_of(database_url, "throttled", postgres_heartbeat_interval_sec=0.5)
    orchestrator.register_runner_heartbeats(["worker-1"])
    first = beat_of(database_url, "throttled", "worker-1")
    for _ in range(20):  # pynenc's runner loop reports several times a second
        orchestrator.register_runner_heartbeats(["worker-1"])
    assert beat_of(database_url, "throttled", "worker-1") == first

    time.sleep(0.6)
    orchestrator.register_runner_heartbeats(["worker-1"])
    later = beat_of(database_url, "throttled", "worker-1")
    assert later[1] != first[1] and later[0] > first[0]


def test_a_new_runner_or_a_changed_flag_is_written_at_once(database_url: str) -> None:
    orchestrator = orchestrator_of(database_url, "at-once", postgres_heartbeat_interval_sec=60)
    orchestrator.register_runner_heartbeats(["worker-1"])
    first = beat_of(database_url, "at-once", "worker-1")

    orchestrator.register_runner_heartbeats(["worker-1", "worker-2"])
    assert beat_of(database_url, "at-once", "worker-2")  # the new runner is there at once
    assert beat_of(database_url, "at-once", "worker-1")[1] != first[1]  # one statement, both

    orchestrator.register_runner_heartbeats(["worker-1"], can_run_atomic_service=True)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT can_run_atomic_service FROM pynenc_runner_heartbeat "
            "WHERE app_id = 'at-once' AND runner_id = 'worker-1'"
        ).fetchone()
    assert row == (True,)
    second = beat_of(database_url, "at-once", "worker-1")
    orchestrator.register_runner_heartbeats(["worker-1"], consumed_queues=["other"])
    assert beat_of(database_url, "at-once", "worker-1")[1] != second[1]


def test_the_interval_stays_well_inside_the_time_after_which_a_runner_is_dead() -> None:
    assert heartbeat_interval(5.0, 600.0) == 5.0
    assert heartbeat_interval(5.0, 15.0) == 15.0 / DEAD_AFTER_FRACTION
    assert heartbeat_interval(5.0, 0.06) == pytest.approx(0.01)


def test_a_runner_that_keeps_reporting_stays_alive_with_a_short_dead_after(
    database_url: str,
) -> None:
    """Dead after 1.2 s; reports every 0.05 s for 3 s: never seen dead by the server."""
    orchestrator = orchestrator_of(database_url, "short", runner_considered_dead_after_minutes=0.02)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        orchestrator.register_runner_heartbeats(["worker"])
        assert [r.runner_id for r in orchestrator.get_active_runners()] == ["worker"]
        time.sleep(0.05)


def test_heartbeat_updates_are_hot(database_url: str) -> None:
    """Heartbeat updates write no index entry: every one is a heap-only tuple update, and
    the table stays one page however often runners beat."""
    orchestrator_of(database_url, "hot").register_runner_heartbeats(["a", "b", "c"])
    counts = (
        "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size('pynenc_runner_heartbeat') "
        "FROM pg_stat_user_tables WHERE relname = 'pynenc_runner_heartbeat'"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        before = conn.execute(counts).fetchone()
        for _ in range(500):  # each its own transaction, as the runners' beats are
            conn.execute(SQL.register_heartbeats, ("hot", False, None, ["a", "b", "c"], None))
        conn.execute("SELECT pg_stat_force_next_flush()")
        after = conn.execute(counts).fetchone()
    assert before is not None and after is not None
    updated, hot = after[0] - before[0], after[1] - before[1]
    assert updated == 1500
    assert hot == updated
    assert after[2] == 8192


def test_the_heartbeat_table_has_the_models_storage_parameters(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'pynenc_runner_heartbeat'"
        ).fetchone()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'pynenc_runner_heartbeat'"
        ).fetchall()
    assert row is not None
    assert dict(option.split("=", 1) for option in row[0]) == HEARTBEAT_STORAGE_PARAMETERS
    assert [d for (d,) in indexes if "last_heartbeat_at" in d] == []


def test_a_late_statement_never_moves_a_heartbeat_back(database_url: str) -> None:
    """A heartbeat whose transaction began before a newer beat committed (it waited for
    the row lock) stamps an older ``now()``; the stored beat keeps the newer time."""
    orchestrator_of(database_url, "late").register_runner_heartbeats(["worker"])
    params = ("late", False, None, ["worker"], None)
    result: list[Any] = []
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM pynenc_runner_heartbeat WHERE app_id = 'late' FOR UPDATE")
        late = psycopg.connect(database_url)
        late.execute("BEGIN")
        (began,) = late.execute("SELECT now()").fetchone()  # type: ignore[misc]

        def write_late() -> None:
            late.execute(SQL.register_heartbeats, params)  # waits for the holder's lock
            late.commit()
            result.append(True)

        thread = threading.Thread(target=write_late)
        thread.start()
        wait_until_blocked(database_url, late.info.backend_pid)
        # Meanwhile a newer beat: written by the holder, committed before the late one.
        (newer,) = holder.execute(
            "UPDATE pynenc_runner_heartbeat SET last_heartbeat_at = clock_timestamp() "
            "WHERE app_id = 'late' RETURNING last_heartbeat_at"
        ).fetchone()  # type: ignore[misc]
        holder.commit()
        thread.join(DEADLINE_SEC)
        late.close()
    assert result == [True]
    assert began < newer
    assert beat_of(database_url, "late", "worker")[0] == newer


def wait_until_blocked(url: str, pid: int) -> None:
    deadline = time.monotonic() + DEADLINE_SEC
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row and row[0] == "Lock":
                return
            assert time.monotonic() < deadline, "the late heartbeat never waited for the lock"
            time.sleep(0.01)


def test_after_the_server_clock_steps_back_heartbeats_follow_it(database_url: str) -> None:
    """A beat stamped ahead of the server's clock (as after the clock stepped back by an
    hour) is alive by pynenc's rule; the runner's next beat brings it to the clock, so
    from then on its age is measured on the clock the server has now."""
    orchestrator = orchestrator_of(
        database_url,
        "stepped",
        postgres_heartbeat_interval_sec=0,
        runner_considered_dead_after_minutes=1,
    )
    orchestrator.register_runner_heartbeats(["live", "dead"])
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE pynenc_runner_heartbeat SET last_heartbeat_at = now() + interval '1 hour' "
            "WHERE app_id = 'stepped'"
        )
    # Both stamped ahead: both alive, however long ago they really beat.
    assert {r.runner_id for r in orchestrator.get_active_runners()} == {"live", "dead"}

    orchestrator.register_runner_heartbeats(["live"])
    with psycopg.connect(database_url) as conn:
        ahead = dict(
            conn.execute(
                "SELECT runner_id, extract(epoch FROM last_heartbeat_at - clock_timestamp()) "
                "FROM pynenc_runner_heartbeat WHERE app_id = 'stepped'"
            ).fetchall()
        )
    assert ahead["live"] <= 0  # back on the server's clock
    assert ahead["dead"] > 3000  # a runner that never beats again keeps its stamp
