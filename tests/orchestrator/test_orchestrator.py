"""PostgresOrchestrator beyond pynenc's suites: app scoping, purges, server-clock stamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pynenc.exceptions import InvocationStatusOwnershipError, InvocationStatusTransitionError
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import AtomicServiceExecutionStatus, AtomicServiceRun

from pynenc_postgres.db.models import ORCHESTRATOR_TABLES
from pynenc_postgres.orchestrator import PostgresOrchestrator
from tests.orchestrator.apps import build_app, register, runner_context


def rows_per_table(url: str, app_id: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                f"SELECT count(*) FROM {table} WHERE app_id = %s", (app_id,)
            ).fetchone()[0]  # type: ignore[index]
            for table in ORCHESTRATOR_TABLES
        }


def fill(url: str, app_id: str) -> None:
    """At least one row of ``app_id`` in every orchestrator table, through the public API."""
    app = build_app(url, app_id)
    orchestrator = app.orchestrator
    ctx = runner_context(f"runner-{app_id}")
    waiter = register(app, "waiter")
    waited = register(app, "waited")
    invocation = app.state_backend.get_invocation(waited)
    orchestrator.index_arguments_for_concurrency_control(invocation)
    orchestrator.waiting_for_results(waiter, [waited])
    orchestrator.register_runner_heartbeats([ctx.runner_id], can_run_atomic_service=True)
    orchestrator.record_atomic_service_execution_start(
        AtomicServiceRun(runner_id=ctx.runner_id, atomic_service_run_id=f"run-{app_id}"), None
    )


def test_purge_removes_one_app_and_leaves_the_other_untouched(database_url: str) -> None:
    fill(database_url, "purge-a")
    fill(database_url, "purge-b")
    before_b = rows_per_table(database_url, "purge-b")
    assert all(count > 0 for count in rows_per_table(database_url, "purge-a").values())
    assert all(count > 0 for count in before_b.values())

    build_app(database_url, "purge-a").orchestrator.purge()

    assert rows_per_table(database_url, "purge-a") == dict.fromkeys(ORCHESTRATOR_TABLES, 0)
    assert rows_per_table(database_url, "purge-b") == before_b


def test_auto_purge_takes_the_arguments_and_waiting_edges_along(database_url: str) -> None:
    app = build_app(database_url, "auto-purge")
    orchestrator = app.orchestrator
    owner = runner_context("owner")
    done = register(app, "done")
    waiter = register(app, "waiter")
    orchestrator.index_arguments_for_concurrency_control(app.state_backend.get_invocation(done))
    orchestrator.waiting_for_results(waiter, [done])
    for status in (InvocationStatus.PENDING, InvocationStatus.RUNNING, InvocationStatus.SUCCESS):
        # the base class's release of waiters is bypassed to keep the edge for this test
        orchestrator._atomic_status_transition(done, status, owner.runner_id)
    orchestrator.set_up_invocation_auto_purge(done)
    orchestrator.conf.auto_final_invocation_purge_hours = 0.0
    orchestrator.auto_purge()

    counts = rows_per_table(database_url, "auto-purge")
    assert counts["pynenc_orchestrator_invocation"] == 1  # the waiter, never final
    assert counts["pynenc_orchestrator_argument"] == 0
    assert counts["pynenc_orchestrator_waiting"] == 0
    with pytest.raises(KeyError):
        orchestrator.get_invocation_status_record(done)


def test_status_records_carry_the_servers_clock(database_url: str) -> None:
    app = build_app(database_url, "server-clock")
    orchestrator = app.orchestrator
    assert isinstance(orchestrator, PostgresOrchestrator)
    invocation_id = register(app, "clock")
    record = orchestrator._atomic_status_transition(
        invocation_id, InvocationStatus.PENDING, "owner"
    )
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status_set_at, now() FROM pynenc_orchestrator_invocation "
            "WHERE app_id = 'server-clock' AND invocation_id = %s",
            (invocation_id,),
        ).fetchone()
    assert row is not None
    assert record.timestamp == row[0]
    assert record.timestamp.tzinfo is not None
    assert orchestrator.get_invocation_status_record(invocation_id) == record


def test_the_loser_gets_pynencs_own_errors(database_url: str) -> None:
    app = build_app(database_url, "errors")
    orchestrator = app.orchestrator
    invocation_id = register(app, "errors")
    orchestrator._atomic_status_transition(invocation_id, InvocationStatus.PENDING, "owner")
    with pytest.raises(InvocationStatusOwnershipError) as ownership:
        orchestrator._atomic_status_transition(invocation_id, InvocationStatus.RUNNING, "other")
    assert (ownership.value.current_owner, ownership.value.attempted_owner) == ("owner", "other")
    with pytest.raises(InvocationStatusTransitionError) as transition:
        orchestrator._atomic_status_transition(invocation_id, InvocationStatus.PENDING, "owner")
    assert transition.value.from_status == InvocationStatus.PENDING
    # A recovery status overrides ownership, as pynenc defines it.
    record = orchestrator._atomic_status_transition(
        invocation_id, InvocationStatus.PENDING_RECOVERY, "recoverer"
    )
    assert (record.status, record.runner_id) == (InvocationStatus.PENDING_RECOVERY, None)
    with pytest.raises(KeyError):
        orchestrator._atomic_status_transition("no-such-invocation", InvocationStatus.PENDING, "x")


def test_a_fresh_holder_without_heartbeats_keeps_the_slot(database_url: str) -> None:
    """The start itself counts as a sign of life until runner_considered_dead_after_minutes."""
    orchestrator = build_app(database_url, "fresh-holder").orchestrator
    first = AtomicServiceRun(runner_id="first", atomic_service_run_id="first-run")
    second = AtomicServiceRun(runner_id="second", atomic_service_run_id="second-run")
    assert orchestrator.record_atomic_service_execution_start(first, None)
    assert not orchestrator.record_atomic_service_execution_start(second, None)
    # A start resent by the holder itself is accepted, not blocked.
    assert orchestrator.record_atomic_service_execution_start(first, None)
    (active,) = orchestrator.get_active_atomic_service_executions()
    assert active.atomic_service_run_id == "first-run"


def test_a_dead_holder_is_abandoned_when_the_slot_is_next_claimed(database_url: str) -> None:
    app = build_app(database_url, "dead-holder", runner_considered_dead_after_minutes=0.01)
    orchestrator = app.orchestrator
    orchestrator.register_runner_heartbeats(["first"], can_run_atomic_service=True)
    first = AtomicServiceRun(runner_id="first", atomic_service_run_id="first-run")
    assert orchestrator.record_atomic_service_execution_start(first, None)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Age the holder's heartbeat and claim on the server, as 0.6 s of silence would.
        conn.execute(
            "UPDATE pynenc_runner_heartbeat SET last_heartbeat_at = now() - interval '1 s'"
        )
        conn.execute(
            "UPDATE pynenc_atomic_service_execution SET recorded_at = now() - interval '1 s'"
        )
    second = AtomicServiceRun(runner_id="second", atomic_service_run_id="second-run")
    assert orchestrator.record_atomic_service_execution_start(second, None)

    executions = {
        e.atomic_service_run_id: e
        for e in orchestrator.get_atomic_service_executions_in_timerange(
            datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
        )
    }
    assert executions["first-run"].status == AtomicServiceExecutionStatus.ABANDONED
    assert executions["first-run"].reason.startswith("holder_dead: runner first")
    assert executions["second-run"].status == AtomicServiceExecutionStatus.RUNNING
    # The late finish of the abandoned run does not overwrite the first terminal status.
    orchestrator.finalize_atomic_service_execution(
        first, datetime.now(UTC), AtomicServiceExecutionStatus.COMPLETED
    )
    (active,) = orchestrator.get_active_atomic_service_executions()
    assert active.atomic_service_run_id == "second-run"
    (late,) = orchestrator.get_atomic_service_executions_in_timerange(
        datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC), runner_id="first"
    )
    assert late.status == AtomicServiceExecutionStatus.ABANDONED


def test_a_status_change_resent_after_a_lost_reply_is_not_refused(database_url: str) -> None:
    """The database layer resends a statement whose reply was lost with the connection.

    A resent change finds its own committed write and succeeds; the same move made by
    another change is still refused with pynenc's error.
    """
    app = build_app(database_url, "resend")
    orchestrator = app.orchestrator
    assert isinstance(orchestrator, PostgresOrchestrator)
    invocation_id = register(app, "resend")
    first = orchestrator._change_status(invocation_id, InvocationStatus.PENDING, "owner", "c-1")
    again = orchestrator._change_status(invocation_id, InvocationStatus.PENDING, "owner", "c-1")
    assert again == first
    with pytest.raises(InvocationStatusTransitionError):
        orchestrator._change_status(invocation_id, InvocationStatus.PENDING, "owner", "c-2")
