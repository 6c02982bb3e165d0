"""The scheduled run: once per interval in the cluster, safe during work, never stuck on a lock."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pynenc_postgres.cli import main
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import RetentionPolicy, purge_invocations
from pynenc_postgres.retention.scheduled import RetentionSchedule
from tests.retention import tasks
from tests.retention.conftest import APP, Seed, age, bind, build, statuses
from tests.retention.orphans import invocation_ids, orphans, rows_of
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def runs(url: str, app_id: str = APP) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT run_id, kind, runner_id, started_at, finished_at, outcome, invocations, "
            "batches_blocked, error FROM pynenc_retention_run WHERE app_id = %s "
            "ORDER BY started_at",
            (app_id,),
        ).fetchall()


def test_runners_of_a_cluster_run_each_intervals_retention_once(database_url: str) -> None:
    """Four runners (each its own orchestrator and connections) ask all the time."""
    apps = [build(database_url, retention="1d", retention_interval="1s") for _ in range(4)]
    stop = threading.Event()

    def runner(index: int) -> None:
        schedule = apps[index].orchestrator.retention
        while not stop.is_set():
            schedule.maybe_run(f"runner-{index}")
            time.sleep(0.005)
        schedule.wait(30)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(runs(database_url)) >= 3, "three intervals' runs", timeout=30)
    stop.set()
    for thread in threads:
        thread.join()

    recorded = runs(database_url)
    started = [row[3] for row in recorded]
    # Never two runs in one interval (the server's clock; the claim and the record share
    # one statement, so started_at is the claim's now()).
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert all(gap >= timedelta(seconds=1) for gap in gaps), gaps
    assert {row[1] for row in recorded} == {"scheduled"}
    assert {row[5] for row in recorded} == {"completed"}
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT last_run_id FROM pynenc_retention_schedule WHERE app_id = %s", (APP,)
        ).fetchone()
    assert row is not None and row[0] == recorded[-1][0]


def test_two_runner_processes_run_each_intervals_retention_once(database_url: str) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.retention.schedule_child", database_url, name, "2.5"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("host-a", "host-b")
    ]
    for child in children:
        assert child.wait(timeout=120) == 0
    recorded = runs(database_url)
    started = [row[3] for row in recorded]
    assert len(recorded) >= 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert all(gap >= timedelta(seconds=1) for gap in gaps), gaps
    assert {row[2] for row in recorded} <= {"host-a", "host-b"}


def test_a_process_asks_the_schedule_once_per_interval_not_per_loop(database_url: str) -> None:
    schedule = RetentionSchedule(
        DatabaseSettings(url=database_url),
        APP,
        RetentionPolicy.parse("1d", "", "1h"),
        runner_dead_after=timedelta(minutes=10),
    )
    asked: list[str] = []
    claim = schedule._claim

    def counting(*args: Any) -> tuple[bool, float]:
        asked.append("claim")
        return claim(*args)

    schedule._claim = counting  # type: ignore[method-assign]
    assert schedule.maybe_run("r1") is True
    schedule.wait(30)
    for _ in range(1000):
        assert schedule.maybe_run("r1") is False
    assert asked == ["claim"]

    # Another process that starts now learns the due time from its one statement.
    other = RetentionSchedule(
        DatabaseSettings(url=database_url),
        APP,
        RetentionPolicy.parse("1d", "", "1h"),
        runner_dead_after=timedelta(minutes=10),
    )
    assert other.maybe_run("r2") is False
    assert 3500 < other._next_check - time.monotonic() <= 3600
    assert len(runs(database_url)) == 1


def test_a_policy_that_keeps_everything_sends_nothing(database_url: str) -> None:
    app = build(database_url)
    assert not app.orchestrator.retention.policy.enabled
    app.orchestrator.register_runner_heartbeats(["r1"], True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pynenc_retention_schedule").fetchone()
    assert row == (0,)


def test_a_batch_blocked_by_a_lock_fails_alone_and_the_next_run_goes_on(
    seeded: str, retention_seed: Seed
) -> None:
    age(seeded, timedelta(days=2))
    # The failed invocation: a row of its own in most tables, no step or child.
    (held,) = (i for i, status in statuses(seeded).items() if status == "failed")
    before = rows_of(seeded, APP)
    settings = DatabaseSettings(url=seeded)
    with psycopg.connect(seeded) as holder:
        # Another transaction holds the row lock of one finished invocation.
        holder.execute(
            "SELECT 1 FROM pynenc_orchestrator_invocation "
            "WHERE app_id = %s AND invocation_id = %s FOR UPDATE",
            (APP, held),
        )
        started = time.monotonic()
        report = purge_invocations(
            settings, APP, older_than=timedelta(days=1), batch_size=1, lock_timeout_ms=200
        )
        waited = time.monotonic() - started
        holder.rollback()

    assert report.batches_blocked == 1
    assert report.outcome == "blocked"
    assert report.invocations == len(retention_seed.finished) - 1
    assert "lock timeout after 200 ms" in report.errors[0]
    # The blocked invocation is whole: every row it had is there.
    after = rows_of(seeded, APP)
    for table, rows in before.items():
        mine = {row for row in rows if held in row}
        assert mine <= after[table], table
    assert invocation_ids(seeded, APP) == retention_seed.unfinished | {held}
    assert orphans(seeded, APP, retention_seed.finished - {held}) == {}
    ((_, kind, _, _, finished_at, outcome, _, blocked, error),) = runs(seeded)
    assert (kind, outcome, blocked) == ("command", "blocked", 1)
    assert finished_at is not None and "lock timeout" in error
    assert waited < 30  # it gave up instead of waiting for the holder

    # The lock is gone: the next run removes what was left.
    again = purge_invocations(settings, APP, older_than=timedelta(days=1))
    assert (again.invocations, again.outcome) == (1, "completed")
    assert invocation_ids(seeded, APP) == retention_seed.unfinished


def test_inspect_retention_shows_the_last_runs(
    seeded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    age(seeded, timedelta(days=2))
    assert main(["purge", "--url", seeded, "--app-id", APP, "--older-than", "1d"]) == 0
    capsys.readouterr()
    assert main(["inspect", "retention", "--url", seeded, "--app-id", APP]) == 0
    out = capsys.readouterr().out
    assert f"app {APP}  command  completed" in out
    assert "policy: command: concurrency_controlled_final, failed, success older than 1d" in out
    assert "pynenc_orchestrator_invocation" in out
    assert main(["inspect", "retention", "--url", seeded, "--app-id", "nobody"]) == 0
    assert capsys.readouterr().out.strip() == "No retention run recorded."


def test_retention_during_a_workload_loses_nothing_unfinished_or_younger_than_the_window(
    database_url: str,
) -> None:
    window = timedelta(seconds=2)
    # The runner's own heartbeat, which the schedule rides on, comes with its
    # atomic-service check (every 30 s by default): every 0.3 s here.
    app = build(
        database_url,
        retention="2s",
        retention_interval="1s",
        config={"atomic_service_check_interval_minutes": 0.005},
    )
    bind(app)
    tasks.release_hold.clear()
    runner = threading.Thread(target=app.runner.run, daemon=True)
    runner.start()
    finished_at: dict[str, datetime] = {}
    try:
        holding = tasks.hold()
        wait_until(
            lambda: (
                app.orchestrator.get_invocation_status(holding.invocation_id).value == "running"
            ),
            "hold is running",
        )
        deadline = time.monotonic() + 6
        with psycopg.connect(database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                invocation = tasks.add(1, 2)
                assert invocation.result == 3
                row = conn.execute(
                    "SELECT status_set_at FROM pynenc_orchestrator_invocation "
                    "WHERE app_id = %s AND invocation_id = %s",
                    (APP, invocation.invocation_id),
                ).fetchone()
                assert row is not None, "removed before its window passed"
                finished_at[invocation.invocation_id] = row[0]
                time.sleep(0.05)
        # Work in flight for longer than the window is all there.
        assert holding.invocation_id in invocation_ids(database_url, APP)
        assert app.orchestrator.get_invocation_status(holding.invocation_id).value == "running"
        assert app.state_backend.get_invocation(holding.invocation_id)
    finally:
        tasks.release_hold.set()
        app.runner.stop_runner_loop()
        runner.join()
    app.orchestrator.retention.wait(30)

    recorded = runs(database_url)
    assert len(recorded) >= 2
    assert {row[5] for row in recorded} <= {"completed", "running"}
    last_end = max(row[4] or row[3] for row in recorded)
    remaining = invocation_ids(database_url, APP)
    removed = set(finished_at) - remaining
    assert removed, "retention removed nothing during the workload"
    # Only finished invocations older than the window at some run were removed.
    for invocation_id in removed:
        assert finished_at[invocation_id] < last_end - window
    assert orphans(database_url, APP, removed) == {}


def test_the_record_of_runs_stays_bounded(database_url: str) -> None:
    from pynenc_postgres.retention.purge import RUN_RECORDS_KEPT

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pynenc_retention_run (app_id, run_id, kind, policy, started_at, "
            "finished_at, outcome) SELECT %s, 'old-' || i, 'scheduled', 'p', "
            "now() - make_interval(hours => i), now() - make_interval(hours => i), "
            "'completed' FROM generate_series(1, %s) AS i",
            (APP, RUN_RECORDS_KEPT + 5),
        )
    report = purge_invocations(DatabaseSettings(url=database_url), APP)
    recorded = runs(database_url)
    assert len(recorded) == RUN_RECORDS_KEPT
    assert recorded[-1][0] == report.run_id
    assert recorded[0][0] == f"old-{RUN_RECORDS_KEPT - 1}"


def test_a_claim_resent_after_a_lost_reply_recognises_itself(database_url: str) -> None:
    schedule = RetentionSchedule(
        DatabaseSettings(url=database_url),
        APP,
        RetentionPolicy.parse("1d", "", "1h"),
        runner_dead_after=timedelta(minutes=10),
    )
    assert schedule._claim("run-1", "r1", 3600.0)[0] is True
    # The same statement again, as the retry after a dropped connection sends it.
    assert schedule._claim("run-1", "r1", 3600.0)[0] is True
    # Another claim in the same interval loses.
    assert schedule._claim("run-2", "r2", 3600.0)[0] is False
    assert [row[0] for row in runs(database_url)] == ["run-1"]
