"""One clock: runners whose Python clocks are ten minutes off still agree with the rest.

Two runner processes run with their Python clocks (``time.time``, ``datetime.now``)
skewed by +10 and -10 minutes; the database server's clock is untouched. With the
timeouts far below the skew nothing of theirs is recovered by mistake, by any of the
three processes; once one of them crashes, its stuck PENDING and RUNNING invocations are
found as soon as pynenc's timeouts have passed in real time, not ten minutes later.
An orchestrator that stamped and compared Python timestamps would recover the lagging
runner's fresh invocations at once, and miss the crashed leading runner's for ten
minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pynenc import Pynenc

from tests.orchestrator.apps import ORCHESTRATOR_CLS, build_app

REPO = Path(__file__).resolve().parents[2]
SKEW_SECONDS = 600.0
# Timeouts far below the skew, far above the real age of anything the test makes.
REALISTIC = (60.0, 1.0)  # max_pending_seconds, runner_considered_dead_after_minutes
# Short timeouts, to see stuck work found as soon as they pass.
SHORT = (1.0, 0.1)
DEADLINE_SECONDS = 120.0


@dataclass
class SkewedRunner:
    """A runner process with a skewed clock, and what it set up."""

    runner_id: str
    process: subprocess.Popen[str]
    python_time: float
    pending: str
    running: str

    def recovery(self, max_pending_seconds: float, dead_after_minutes: float) -> Recovery:
        """The invocations this runner's own recovery service would pick up."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"recover {max_pending_seconds} {dead_after_minutes}\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return Recovery(set(answer["pending"]), set(answer["running"]))


@dataclass
class Recovery:
    pending: set[str]
    running: set[str]


def start_skewed_runner(url: str, app_id: str, runner_id: str, skew: float) -> SkewedRunner:
    env = {**os.environ, "PYNENC_TEST_CLOCK_SKEW_SECONDS": str(skew)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.orchestrator.skewed_runner",
            url,
            app_id,
            runner_id,
            ORCHESTRATOR_CLS,
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"runner {runner_id} exited before setting up (code {process.wait()})"
    ready = json.loads(line)
    return SkewedRunner(
        runner_id, process, ready["python_time"], ready["pending"], ready["running"]
    )


def recovery_of(app: Pynenc, max_pending_seconds: float, dead_after_minutes: float) -> Recovery:
    app.conf.max_pending_seconds = max_pending_seconds
    app.conf.runner_considered_dead_after_minutes = dead_after_minutes
    return Recovery(
        set(app.orchestrator.get_pending_invocations_for_recovery()),
        set(app.orchestrator.get_running_invocations_for_recovery()),
    )


@pytest.fixture
def skewed_runners(database_url: str) -> Iterator[tuple[Pynenc, SkewedRunner, SkewedRunner]]:
    app_id = f"skew-{uuid.uuid4().hex[:8]}"
    started: list[SkewedRunner] = []
    try:
        ahead = start_skewed_runner(database_url, app_id, "ahead", SKEW_SECONDS)
        started.append(ahead)
        behind = start_skewed_runner(database_url, app_id, "behind", -SKEW_SECONDS)
        started.append(behind)
        yield build_app(database_url, app_id), ahead, behind
    finally:
        for runner in started:
            if runner.process.poll() is None:
                runner.process.kill()
            runner.process.wait()


def test_skewed_runner_clocks_neither_recover_by_mistake_nor_miss_stuck_work(
    database_url: str, skewed_runners: tuple[Pynenc, SkewedRunner, SkewedRunner]
) -> None:
    app, ahead, behind = skewed_runners
    now = time.time()
    # The children's Python clocks really are off by the skew (startup lag aside).
    assert abs(ahead.python_time - now - SKEW_SECONDS) < SKEW_SECONDS / 5
    assert abs(behind.python_time - now + SKEW_SECONDS) < SKEW_SECONDS / 5
    ours = {ahead.pending, ahead.running, behind.pending, behind.running}

    # What the database holds is the server's clock, not the runners' skewed ones.
    with psycopg.connect(database_url) as conn:
        offsets = conn.execute(
            """SELECT extract(epoch FROM status_set_at - now()) FROM pynenc_orchestrator_invocation
               UNION ALL
               SELECT extract(epoch FROM last_heartbeat_at - now()) FROM pynenc_runner_heartbeat
               UNION ALL
               SELECT extract(epoch FROM first_heartbeat_at - now()) FROM pynenc_runner_heartbeat
            """
        ).fetchall()
    assert offsets and all(abs(float(offset)) < SKEW_SECONDS / 5 for (offset,) in offsets)

    # Nothing is recovered by mistake, whichever runner's recovery service asks.
    for asker in ("ahead", "behind", "true clock"):
        if asker == "ahead":
            found = ahead.recovery(*REALISTIC)
        elif asker == "behind":
            found = behind.recovery(*REALISTIC)
        else:
            found = recovery_of(app, *REALISTIC)
        assert found.pending & ours == set(), f"{asker} recovers fresh PENDING invocations"
        assert found.running & ours == set(), f"{asker} recovers live runners' invocations"

    # The runner whose clock is ahead crashes; its stuck work is found on time.
    ahead.process.kill()
    ahead.process.wait()
    killed_at = time.monotonic()
    seen: dict[str, Recovery] = {}
    while True:
        seen = {"behind": behind.recovery(*SHORT), "true clock": recovery_of(app, *SHORT)}
        if all(ahead.running in found.running for found in seen.values()):
            break
        assert time.monotonic() - killed_at < DEADLINE_SECONDS, (
            f"the crashed runner's RUNNING invocation was not found for recovery: {seen}"
        )
        time.sleep(0.2)
    for asker, found in seen.items():
        # Both PENDING invocations are older than max_pending_seconds by now.
        assert found.pending & ours == {ahead.pending, behind.pending}, asker
        # The live runner keeps its RUNNING invocation; the dead one's is recovered.
        assert found.running & ours == {ahead.running}, asker
