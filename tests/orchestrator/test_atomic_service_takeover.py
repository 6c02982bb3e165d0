"""The atomic-service slot survives a crashed holder.

A runner process claims the atomic service through pynenc's own claim flow and is
killed with SIGKILL while it holds it. A real pynenc ThreadRunner in this process is
refused the slot while the holder lives (its attempts are recorded BLOCKED), and takes
it once the holder is dead by pynenc's heartbeat rule, measured on the server's clock.
pynenc's own memory and SQLite orchestrators keep a killed holder's slot forever.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc
from pynenc_tests.conftest import check_no_atomic_service_overlap

from tests.orchestrator.apps import ORCHESTRATOR_CLS, SERVICE_CONFIG, build_app

REPO = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 120.0
DEAD_AFTER = timedelta(minutes=float(str(SERVICE_CONFIG["runner_considered_dead_after_minutes"])))


def executions(url: str, app_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "SELECT atomic_service_run_id, runner_id, status, reason, recorded_at, end_time "
            "FROM pynenc_atomic_service_execution WHERE app_id = %s ORDER BY recorded_at",
            (app_id,),
        )
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def wait_for(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


@pytest.fixture
def holder(database_url: str) -> Iterator[tuple[str, subprocess.Popen[str], str]]:
    """A runner process holding the atomic service: (app id, process, its run id)."""
    app_id = f"takeover-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.orchestrator.service_holder",
            database_url,
            app_id,
            "holder",
            ORCHESTRATOR_CLS,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"the holder exited before claiming (code {process.wait()})"
        yield app_id, process, json.loads(line)["run_id"]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_killed_holder_loses_the_slot_to_a_live_runner(
    database_url: str, holder: tuple[str, subprocess.Popen[str], str]
) -> None:
    app_id, holder_process, held_run = holder
    app: Pynenc = build_app(database_url, app_id, runner_cls="ThreadRunner", **SERVICE_CONFIG)
    runner_thread = threading.Thread(target=app.runner.run, daemon=True)
    runner_thread.start()
    try:
        live_runner = wait_for(
            lambda: getattr(app.runner, "runner_context", None) and app.runner.runner_id,
            "the thread runner to start",
        )

        # While the holder lives, the runner's turns are refused: BLOCKED, naming it.
        blocked = wait_for(
            lambda: [
                row
                for row in executions(database_url, app_id)
                if row["runner_id"] != "holder" and row["status"] == "blocked"
            ],
            "the live runner to try for the slot",
        )
        assert blocked[0]["reason"] == f"prior_running:{held_run} runner:holder"
        (held,) = [e for e in executions(database_url, app_id) if e["runner_id"] == "holder"]
        assert (held["atomic_service_run_id"], held["status"]) == (held_run, "running")

        holder_process.send_signal(signal.SIGKILL)
        holder_process.wait()

        taken = wait_for(
            lambda: [
                row
                for row in executions(database_url, app_id)
                if row["runner_id"] != "holder" and row["status"] in ("running", "completed")
            ],
            "the live runner to take the slot over",
        )
        rows = executions(database_url, app_id)
        (held,) = [e for e in rows if e["runner_id"] == "holder"]
        assert held["status"] == "abandoned"
        assert held["reason"].startswith("holder_dead: runner holder sent no heartbeat")
        assert held["end_time"] is not None
        assert taken[0]["runner_id"] == live_runner

        # Taken only once the holder was dead by pynenc's rule, on the server's clock.
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT last_heartbeat_at FROM pynenc_runner_heartbeat "
                "WHERE app_id = %s AND runner_id = 'holder'",
                (app_id,),
            ).fetchone()
        assert row is not None
        assert taken[0]["recorded_at"] - row[0] >= DEAD_AFTER
        assert held["end_time"] - row[0] >= DEAD_AFTER

        # The live runner keeps running the service: later cycles complete too.
        wait_for(
            lambda: [
                e
                for e in executions(database_url, app_id)
                if e["runner_id"] == live_runner and e["status"] == "completed"
            ],
            "a completed atomic-service run by the live runner",
        )
    finally:
        app.runner.stop_runner_loop()
        runner_thread.join()
    check_no_atomic_service_overlap(app)
