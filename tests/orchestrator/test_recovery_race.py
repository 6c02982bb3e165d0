"""Recovery of RUNNING invocations moves one only while its owner is still dead.

pynenc's ``recover_running_invocations`` lists the RUNNING invocations of dead runners,
then moves each to RUNNING_RECOVERY and reroutes it. An owner whose heartbeat comes back
between the list and the move must keep its invocation: otherwise it runs twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc, context
from pynenc.core_tasks import recover_running_invocations
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.orchestrator import PostgresOrchestrator
from pynenc_postgres.orchestrator.sql import statements
from tests.orchestrator.apps import build_app, register, runner_context

SQL = statements("public")
DEADLINE_SEC = 30.0


def orchestrator_of(app: Pynenc) -> PostgresOrchestrator:
    orchestrator = app.orchestrator
    assert isinstance(orchestrator, PostgresOrchestrator)
    return orchestrator


def running(app: Pynenc, label: str, owner: str) -> str:
    """An invocation RUNNING under ``owner``."""
    invocation_id = register(app, label)
    ctx = runner_context(owner)
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.PENDING, ctx)
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.RUNNING, ctx)
    return invocation_id


def beat_from_owner_process(url: str, app_id: str, runner_id: str, age: str = "0 s") -> None:
    """The owner's heartbeat as its own process writes it (the statement it sends)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL.register_heartbeats, (app_id, False, None, [runner_id], None))
        conn.execute(
            "UPDATE pynenc_runner_heartbeat SET last_heartbeat_at = now() - %s::interval "
            "WHERE app_id = %s AND runner_id = %s",
            (age, app_id, runner_id),
        )


def statuses(app: Pynenc, invocation_id: str) -> list[str]:
    return [h.status_record.status.value for h in app.state_backend.get_history(invocation_id)]


def run_recovery_task(app: Pynenc) -> None:
    """pynenc's own recovery task body, in the context a runner gives it."""
    previous = context.get_current_app()
    context.set_current_app(app)
    context.set_runner_context(app.app_id, runner_context("recoverer"))
    try:
        recover_running_invocations.func()
    finally:
        context.clear_runner_context(app.app_id)
        if previous is not None:
            context.set_current_app(previous)


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_an_owner_that_beats_again_after_the_listing_keeps_its_invocation(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(database_url, "recovery-race")
    orchestrator = orchestrator_of(app)
    revived = running(app, "revived", "owner-revived")
    dead = running(app, "dead", "owner-dead")
    # Both owners silent for an hour: dead by pynenc's rule (10 minutes).
    beat_from_owner_process(database_url, app.app_id, "owner-revived", "1 hour")
    beat_from_owner_process(database_url, app.app_id, "owner-dead", "1 hour")

    listed: list[str] = []
    original = orchestrator.get_running_invocations_for_recovery

    def list_then_owner_beats() -> Iterator[str]:
        ids = list(original())
        listed.extend(ids)
        # The revived owner's process beats right after the recovery read its row.
        beat_from_owner_process(database_url, app.app_id, "owner-revived")
        return iter(ids)

    monkeypatch.setattr(orchestrator, "get_running_invocations_for_recovery", list_then_owner_beats)
    warnings = Collected()
    app.logger.addHandler(warnings)  # pynenc's logger does not propagate to the root
    try:
        run_recovery_task(app)
    finally:
        app.logger.removeHandler(warnings)

    assert sorted(listed) == sorted([revived, dead])
    record = orchestrator.get_invocation_status_record(revived)
    assert (record.status, record.runner_id) == (InvocationStatus.RUNNING, "owner-revived")
    assert statuses(app, revived) == ["registered", "pending", "running"]
    # The other, still dead, was recovered in the same pass.
    assert statuses(app, dead)[-2:] == ["running_recovery", "rerouted"]
    assert any(
        f"invocation:{revived} not recovered: its runner owner-revived is alive again" in m
        for m in warnings.messages
    )


def test_a_heartbeat_being_written_holds_off_the_recovery_statement(
    database_url: str,
) -> None:
    """The check of the owner and the move are one statement: a heartbeat committing
    while the statement runs is waited for and seen, never overtaken."""
    app = build_app(database_url, "recovery-lock")
    invocation_id = running(app, "held", "owner")
    beat_from_owner_process(database_url, app.app_id, "owner", "1 hour")
    result: list[Any] = []

    with psycopg.connect(database_url) as owner:
        # The owner's heartbeat, written but not yet committed.
        owner.execute(SQL.register_heartbeats, (app.app_id, False, None, ["owner"], None))

        def recover() -> None:
            try:
                app.orchestrator.set_invocation_status(
                    invocation_id, InvocationStatus.RUNNING_RECOVERY, runner_context("recoverer")
                )
                result.append("done")
            except Exception as exc:
                result.append(exc)

        thread = threading.Thread(target=recover)
        thread.start()
        wait_for_lock_wait(database_url, "pynenc_orchestrator_invocation")
        owner.commit()
        thread.join(DEADLINE_SEC)

    assert result == ["done"]  # refused quietly: pynenc's recovery task carries on
    record = app.orchestrator.get_invocation_status_record(invocation_id)
    assert (record.status, record.runner_id) == (InvocationStatus.RUNNING, "owner")
    assert statuses(app, invocation_id) == ["registered", "pending", "running"]


def test_a_dead_owner_loses_its_invocation_in_one_statement(database_url: str) -> None:
    app = build_app(database_url, "recovery-dead")
    invocation_id = running(app, "lost", "owner")
    beat_from_owner_process(database_url, app.app_id, "owner", "1 hour")
    never_beat = running(app, "orphan", "owner-without-heartbeat")
    ctx = runner_context("recoverer")

    for target in (invocation_id, never_beat):
        app.orchestrator.set_invocation_status(target, InvocationStatus.RUNNING_RECOVERY, ctx)
        assert statuses(app, target)[-1] == "running_recovery"
        record = app.orchestrator.get_invocation_status_record(target)
        assert (record.status, record.runner_id) == (InvocationStatus.RUNNING_RECOVERY, None)


def wait_for_lock_wait(url: str, table: str) -> None:
    deadline = time.monotonic() + DEADLINE_SEC
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND query LIKE %s",
                (f"%{table}%",),
            ).fetchone()
            if row and row[0]:
                return
            assert time.monotonic() < deadline, "the recovery statement never waited"
            time.sleep(0.01)
