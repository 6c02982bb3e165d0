"""Races across processes: eight processes attempt the same step at the same moment.

Each round, eight spawned processes (each with its own connections, as runners on
different hosts would have) meet at a barrier and attempt the same status transition
or the same atomic-service start. The database must show exactly one winner, and
every loser must get pynenc's own error, over many rounds.
"""

from __future__ import annotations

import multiprocessing
import queue
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import AtomicServiceExecutionStatus, AtomicServiceRun

from pynenc_postgres.db.engine import dispose_all
from tests.conftest import PostgresServer
from tests.orchestrator.apps import build_app, register, runner_context
from tests.orchestrator.race_child import race

RACERS = 8
ROUNDS = 25
# Generous: eight spawned interpreters on a shared two-core machine.
DEADLINE_SECONDS = 180.0

Outcome = tuple[int, str, str | None]


@dataclass
class Racers:
    url: str
    app: Pynenc
    commands: list[Any]
    results: Any

    def round(
        self, round_no: int, kind: str, target: str, attempts: list[tuple[str, str]]
    ) -> list[Outcome]:
        """Send each racer its (status, runner id) and collect the eight outcomes."""
        for commands, (status, runner_id) in zip(self.commands, attempts, strict=True):
            commands.put((round_no, kind, target, status, runner_id))
        outcomes: list[Outcome] = []
        for _ in range(RACERS):
            try:
                reported, index, outcome, detail = self.results.get(timeout=DEADLINE_SECONDS)
            except queue.Empty:
                pytest.fail(f"round {round_no}: a racer did not report within the deadline")
            assert reported == round_no, f"racer {index} answered round {reported}"
            outcomes.append((index, outcome, detail))
        return sorted(outcomes)


@pytest.fixture(scope="module")
def racers(postgres_server: PostgresServer) -> Iterator[Racers]:
    name = postgres_server.create_database(template=postgres_server.template)
    url = postgres_server.url_for(name)
    app_id = f"race-{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACERS)
    results = ctx.Queue()
    commands = [ctx.Queue() for _ in range(RACERS)]
    processes = [
        ctx.Process(target=race, args=(url, app_id, i, commands[i], barrier, results))
        for i in range(RACERS)
    ]
    for process in processes:
        process.start()
    try:
        for _ in range(RACERS):
            ready = results.get(timeout=DEADLINE_SECONDS)
            assert ready[0] == "ready", f"a racer failed to start: {ready}"
        yield Racers(url, build_app(url, app_id), commands, results)
    finally:
        for command_queue in commands:
            command_queue.put(None)
        for process in processes:
            process.join(timeout=DEADLINE_SECONDS)
            if process.is_alive():
                process.kill()
        dispose_all()
        postgres_server.drop_database(name)


def winners(outcomes: list[Outcome]) -> list[int]:
    return [index for index, outcome, _ in outcomes if outcome == "won"]


def losses(outcomes: list[Outcome]) -> dict[int, str]:
    return {index: outcome for index, outcome, _ in outcomes if outcome != "won"}


def row_of(url: str, app_id: str, invocation_id: str) -> tuple[str, str | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status, status_owner_id FROM pynenc_orchestrator_invocation "
            "WHERE app_id = %s AND invocation_id = %s",
            (app_id, invocation_id),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def history(url: str, app_id: str, invocation_id: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        return [
            (status, owner)
            for status, owner in conn.execute(
                "SELECT status, status_owner_id FROM pynenc_invocation_history "
                "WHERE app_id = %s AND invocation_id = %s ORDER BY recorded_at, status",
                (app_id, invocation_id),
            ).fetchall()
        ]


def test_eight_runners_claiming_one_invocation_one_wins(racers: Racers) -> None:
    """REGISTERED to PENDING by eight runners: one owner, seven transition errors."""
    app, app_id = racers.app, racers.app.app_id
    for round_no in range(ROUNDS):
        invocation_id = register(app, f"claim-{round_no}")
        attempts = [(InvocationStatus.PENDING.value, f"racer-{i}") for i in range(RACERS)]
        outcomes = racers.round(round_no, "transition", invocation_id, attempts)

        assert len(winners(outcomes)) == 1, f"round {round_no}: {outcomes}"
        winner = f"racer-{winners(outcomes)[0]}"
        assert set(losses(outcomes).values()) == {"InvocationStatusTransitionError"}
        assert row_of(racers.url, app_id, invocation_id) == ("pending", winner)
        changes = history(racers.url, app_id, invocation_id)
        assert [s for s, _ in changes] == ["registered", "pending"]
        assert changes[1] == ("pending", winner)


def test_start_running_against_pending_recovery_one_wins(racers: Racers) -> None:
    """PENDING to RUNNING (by the owner) against PENDING to PENDING_RECOVERY (by others)."""
    app, app_id = racers.app, racers.app.app_id
    seen: set[str] = set()
    for round_no in range(ROUNDS):
        invocation_id = register(app, f"recover-{round_no}")
        app.orchestrator.set_invocation_status(
            invocation_id, InvocationStatus.PENDING, runner_context("owner")
        )
        attempts = [
            (InvocationStatus.RUNNING.value, "owner")
            if i % 2 == 0
            else (InvocationStatus.PENDING_RECOVERY.value, f"recoverer-{i}")
            for i in range(RACERS)
        ]
        outcomes = racers.round(ROUNDS + round_no, "transition", invocation_id, attempts)

        assert len(winners(outcomes)) == 1, f"round {round_no}: {outcomes}"
        winning_status = attempts[winners(outcomes)[0]][0]
        seen.add(winning_status)
        assert set(losses(outcomes).values()) == {"InvocationStatusTransitionError"}
        status, owner = row_of(racers.url, app_id, invocation_id)
        assert status == winning_status
        # RUNNING keeps the owner; PENDING_RECOVERY releases it.
        assert owner == ("owner" if winning_status == "running" else None)
        changes = [s for s, _ in history(racers.url, app_id, invocation_id)]
        assert changes == ["registered", "pending", winning_status]
    # Which side wins is up to the scheduler; it is reported, not required.
    print(f"winning statuses over {ROUNDS} rounds: {sorted(seen)}")


def test_only_the_owner_finishes_a_running_invocation(racers: Racers) -> None:
    """RUNNING to SUCCESS by the owner (four processes) against FAILED by four others."""
    app, app_id = racers.app, racers.app.app_id
    owner = runner_context("owner")
    for round_no in range(ROUNDS):
        invocation_id = register(app, f"finish-{round_no}")
        app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.PENDING, owner)
        app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.RUNNING, owner)
        attempts = [
            (InvocationStatus.SUCCESS.value, "owner")
            if i % 2 == 0
            else (InvocationStatus.FAILED.value, f"intruder-{i}")
            for i in range(RACERS)
        ]
        outcomes = racers.round(2 * ROUNDS + round_no, "transition", invocation_id, attempts)

        assert len(winners(outcomes)) == 1, f"round {round_no}: {outcomes}"
        assert winners(outcomes)[0] % 2 == 0, "a runner that does not own it finished it"
        lost = losses(outcomes)
        assert {lost[i] for i in lost if i % 2 == 0} == {"InvocationStatusTransitionError"}
        # An intruder is refused for ownership before the owner finishes, and for the
        # final status after; either is pynenc's own error.
        assert {lost[i] for i in lost if i % 2 == 1} <= {
            "InvocationStatusOwnershipError",
            "InvocationStatusTransitionError",
        }
        assert row_of(racers.url, app_id, invocation_id) == ("success", None)
        changes = [s for s, _ in history(racers.url, app_id, invocation_id)]
        assert changes == ["registered", "pending", "running", "success"]


def test_eight_runners_starting_the_atomic_service_one_holds_it(racers: Racers) -> None:
    """Eight simultaneous RUNNING starts: one holder, seven BLOCKED rows naming it."""
    app, app_id = racers.app, racers.app.app_id
    for round_no in range(ROUNDS):
        cycle = f"cycle-{round_no}-{uuid.uuid4().hex[:6]}"
        attempts = [("running", f"service-runner-{i}") for i in range(RACERS)]
        outcomes = racers.round(3 * ROUNDS + round_no, "atomic_service", cycle, attempts)

        assert len(winners(outcomes)) == 1, f"round {round_no}: {outcomes}"
        winner = winners(outcomes)[0]
        assert set(losses(outcomes).values()) == {"blocked"}
        with psycopg.connect(racers.url) as conn:
            rows = conn.execute(
                "SELECT atomic_service_run_id, runner_id, status, reason "
                "FROM pynenc_atomic_service_execution "
                "WHERE app_id = %s AND atomic_service_run_id LIKE %s",
                (app_id, f"{cycle}-%"),
            ).fetchall()
            running = conn.execute(
                "SELECT atomic_service_run_id FROM pynenc_atomic_service_execution "
                "WHERE app_id = %s AND status = 'running'",
                (app_id,),
            ).fetchall()
        winning_run = f"{cycle}-{winner}"
        assert running == [(winning_run,)]
        assert len(rows) == RACERS
        for run_id, runner_id, status, reason in rows:
            if run_id == winning_run:
                assert (runner_id, status) == (f"service-runner-{winner}", "running")
            else:
                assert status == "blocked"
                assert reason == f"prior_running:{winning_run} runner:service-runner-{winner}"
        app.orchestrator.finalize_atomic_service_execution(
            AtomicServiceRun(
                runner_id=f"service-runner-{winner}", atomic_service_run_id=winning_run
            ),
            datetime.now(UTC),
            AtomicServiceExecutionStatus.COMPLETED,
        )
        assert app.orchestrator.get_active_atomic_service_executions() == []
