"""An idle host costs what the capacity formula of docs/operations.md says.

One host runs pynenc's ``PersistentProcessRunner`` with four worker processes, the
Postgres-only stack, configured by ``PYNENC__*`` variables alone. Once idle, the server's
committed transactions over a window and the sessions the host holds are compared with
:func:`pynenc_postgres.capacity.idle_fleet`. Short intervals (1 s re-check, 1 s
heartbeats) make the window short; the formula is the same at the defaults.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pynenc import Pynenc

from pynenc_postgres.capacity import idle_fleet
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.notify import stop_all_listeners
from tests.fleet import fleet_app

REPO = Path(__file__).resolve().parents[2]
RUNNER = "from tests.fleet.fleet_app import app; app.runner.run()"
WORKERS = 4
RECHECK = 1.0
POLL_MAX = 1.0
HEARTBEAT = 1.0
SETTLE_SEC = 4.0
WINDOW_SEC = 10.0
STARTUP_SEC = 180.0
HOST_NAME = "pynenc-fleet-host"
TOLERANCE = 0.25

COMPONENTS = {
    "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
    "PYNENC__BROKER_CLS": "PostgresBroker",
    "PYNENC__ORCHESTRATOR_CLS": "PostgresOrchestrator",
    "PYNENC__TRIGGER_CLS": "PostgresTrigger",
    "PYNENC__CLIENT_DATA_STORE_CLS": "PostgresClientDataStore",
}


def settings(url: str, app_id: str, wakeup: str) -> dict[str, str]:
    return {
        **COMPONENTS,
        "PYNENC__APP_ID": app_id,
        "PYNENC__POSTGRES_URL": url,
        "PYNENC__POSTGRES_BROKER_WAKEUP": wakeup,
        "PYNENC__POSTGRES_BROKER_RECHECK_INTERVAL_SEC": str(RECHECK),
        "PYNENC__POSTGRES_BROKER_POLL_MAX_INTERVAL_SEC": str(POLL_MAX),
        "PYNENC__POSTGRES_HEARTBEAT_INTERVAL_SEC": str(HEARTBEAT),
        "PYNENC__LOGGING_LEVEL": "warning",
    }


def commits(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def host_sessions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE %s",
            (f"{HOST_NAME}%",),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("PYNENC__"):
            monkeypatch.delenv(name)
    yield
    stop_all_listeners()
    dispose_all()


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def test_an_idle_host_costs_what_the_formula_says(
    database_url: str, client_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LISTEN mode; the poll mode's formula is checked by benchmarks/fleet.py."""
    wakeup = "listen"
    env = settings(database_url, f"capacity-{wakeup}", wakeup)
    runner_env = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")}
    runner_env |= env | {
        "PYNENC__RUNNER_CLS": "PersistentProcessRunner",
        "PYNENC__NUM_PROCESSES": str(WORKERS),
        "PYNENC__POSTGRES_APPLICATION_NAME": HOST_NAME,
    }
    log = Path(tempfile.mkdtemp(prefix="pynenc-capacity-")) / "runner.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            cwd=REPO,
            env=runner_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = Pynenc()
    monkeypatch.setattr(fleet_app.echo, "app", client)
    try:
        deadline = time.monotonic() + STARTUP_SEC
        while len(client.orchestrator.get_active_runners()) < WORKERS + 1:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the workers did not start: {log.read_text()}"
            time.sleep(0.2)
        group = fleet_app.echo.parallelize([(n,) for n in range(4 * WORKERS)])
        assert sorted(group.results) == list(range(4 * WORKERS))
        dispose_all()  # the test's own sessions are not the host's
        stop_all_listeners()

        time.sleep(SETTLE_SEC)
        sessions = host_sessions(database_url)
        before = commits(database_url)
        time.sleep(WINDOW_SEC)
        measured = (commits(database_url) - before - 1) / WINDOW_SEC
    finally:
        stop(process)

    expected = idle_fleet(
        1,
        WORKERS,
        wakeup=wakeup,
        recheck_interval=RECHECK,
        poll_max_interval=POLL_MAX,
        heartbeat_interval=HEARTBEAT,
    )
    print(
        f"{wakeup}: {measured:.2f} tx/s measured, {expected.transactions_per_second:.2f} "
        f"by the formula; {sessions} sessions, {expected.sessions} by the formula"
    )
    assert sessions == expected.sessions
    assert measured == pytest.approx(expected.transactions_per_second, rel=TOLERANCE)
