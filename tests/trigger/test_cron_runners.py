"""A cron task runs once per tick with two runner processes alive.

Two runner processes of the same app (built from environment variables alone) take
turns at pynenc's atomic services every few seconds, so both run the trigger loop
several times within every minute; the cron compare-and-set lets only one of them
fire each minute's tick. pynenc's SQLite broker and orchestrator carry the work
between the two processes on this host; the state backend and the trigger are ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pynenc import Pynenc
from pynenc.orchestrator.atomic_service import AtomicServiceExecutionStatus
from pynenc.trigger.monitoring import TriggerRunRecord

REPO = Path(__file__).resolve().parents[2]
APP_ID = "cron-two-runners"
TASK = "tests.trigger.cron_app.every_minute"
RUNNER = "from tests.trigger.cron_app import app; app.runner.run()"
TRIGGER_CLS = "PostgresTrigger"
TICKS = 3
# Three ticks take at most four minutes of wall clock; past that the runners are stuck.
DEADLINE_SECONDS = 300


def runner_env(database_url: str, sqlite_path: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")},
        "PYNENC__APP_ID": APP_ID,
        "PYNENC__POSTGRES_URL": database_url,
        "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
        "PYNENC__TRIGGER_CLS": TRIGGER_CLS,
        "PYNENC__BROKER_CLS": "SQLiteBroker",
        "PYNENC__ORCHESTRATOR_CLS": "SQLiteOrchestrator",
        "PYNENC__CLIENT_DATA_STORE_CLS": "SQLiteClientDataStore",
        "PYNENC__SQLITE_DB_PATH": sqlite_path,
        "PYNENC__RUNNER_CLS": "ThreadRunner",
        "PYNENC__RUNNER_LOOP_SLEEP_TIME_SEC": "0.05",
        # Each runner gets a slot of a 6 s atomic-service cycle: both run the trigger
        # loop several times a minute.
        "PYNENC__ATOMIC_SERVICE_INTERVAL_MINUTES": "0.1",
        "PYNENC__ATOMIC_SERVICE_CHECK_INTERVAL_MINUTES": "0.005",
        "PYNENC__ATOMIC_SERVICE_SPREAD_MARGIN_MINUTES": "0",
        "PYNENC__ATOMIC_SERVICE_MAX_START_SLOT_FRACTION": "1.0",
    }


@pytest.fixture
def two_runners(
    database_url: str, temp_sqlite_db_path: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pynenc]:
    """Two runner processes; yields an app of this process with the same configuration."""
    env = runner_env(database_url, temp_sqlite_db_path)
    runners = [
        subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    for name, value in env.items():
        if name.startswith("PYNENC__"):
            monkeypatch.setenv(name, value)
    try:
        yield Pynenc()
    finally:
        for runner in runners:
            runner.send_signal(signal.SIGTERM)
        for runner in runners:
            try:
                runner.wait(30)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()


def registrations(url: str) -> dict[str, datetime]:
    """When each invocation of the cron task was registered, by invocation id."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT i.invocation_id, h.recorded_at FROM pynenc_invocation i "
            "JOIN pynenc_invocation_history h USING (app_id, invocation_id) "
            "WHERE i.app_id = %s AND i.task_id = %s AND h.status = 'registered'",
            (APP_ID, TASK),
        ).fetchall()
    return {row[0]: row[1] for row in rows}


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def finished(url: str, invocation_ids: list[str]) -> bool:
    with psycopg.connect(url) as conn:
        done = conn.execute(
            "SELECT count(*) FROM pynenc_invocation_status "
            "WHERE app_id = %s AND invocation_id = ANY(%s) AND status = 'success'",
            (APP_ID, invocation_ids),
        ).fetchone()
    return done == (len(invocation_ids),)


def cron_runs(url: str) -> list[TriggerRunRecord]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT trigger_run_json FROM pynenc_trigger_run WHERE app_id = %s AND task_id = %s",
            (APP_ID, TASK),
        ).fetchall()
    return [TriggerRunRecord.from_json(row[0]) for row in rows]


def tick_of(run: TriggerRunRecord) -> datetime:
    """The minute whose tick the run fired: the time its cron compare-and-set recorded."""
    (participant,) = run.participants
    assert participant.context_type == "CronContext"
    assert participant.context_timestamp is not None
    return minute(participant.context_timestamp)


@pytest.mark.timeout(DEADLINE_SECONDS + 120)
def test_a_cron_task_runs_once_per_tick_with_two_runners(
    two_runners: Pynenc, database_url: str
) -> None:
    started = datetime.now(UTC)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len({minute(at) for at in registrations(database_url).values()}) < TICKS:
        assert time.monotonic() < deadline, f"the task ran in fewer than {TICKS} minutes"
        time.sleep(1)
    registered = registrations(database_url)
    while not finished(database_url, list(registered)):
        assert time.monotonic() < deadline, "the triggered invocations did not finish"
        time.sleep(0.5)

    # Each minute's tick ran the task once, and no minute was skipped.
    per_minute = Counter(minute(at) for at in registered.values())
    assert set(per_minute.values()) == {1}, per_minute
    minutes = sorted(per_minute)
    assert minutes == [minutes[0] + timedelta(minutes=i) for i in range(len(minutes))], minutes

    # The trigger's own record agrees: one run per tick, each with its own invocation.
    runs = cron_runs(database_url)
    per_tick = Counter(tick_of(run) for run in runs)
    assert set(per_tick.values()) == {1}, per_tick
    assert sorted(str(run.triggered_invocation_id) for run in runs) == sorted(registered)

    # Both processes were alive and ran the trigger loop (pynenc's atomic services).
    executions = two_runners.orchestrator.get_atomic_service_executions_in_timerange(
        start_time=started - timedelta(minutes=1),
        end_time=datetime.now(UTC) + timedelta(minutes=1),
        limit=10_000,
    )
    completed = Counter(
        e.runner_id for e in executions if e.status == AtomicServiceExecutionStatus.COMPLETED
    )
    assert len(completed) == 2, completed
    assert min(completed.values()) >= TICKS, completed
