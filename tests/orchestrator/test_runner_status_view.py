"""``pynenc_runner_status``: runners, heartbeat ages on the server's clock, the holder."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import AtomicServiceRun

from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings
from tests.orchestrator.apps import build_app, register, runner_context


def test_the_view_shows_heartbeat_age_owned_invocations_and_the_holder(
    database_url: str,
) -> None:
    app = build_app(database_url, "runner-view")
    orchestrator = app.orchestrator
    busy = runner_context("busy")
    orchestrator.register_runner_heartbeats(["busy", "idle"], can_run_atomic_service=True)
    app.state_backend.store_runner_context(busy)
    for label, target in (("a", InvocationStatus.RUNNING), ("b", InvocationStatus.PENDING)):
        invocation_id = register(app, label)
        orchestrator.set_invocation_status(invocation_id, InvocationStatus.PENDING, busy)
        if target == InvocationStatus.RUNNING:
            orchestrator.set_invocation_status(invocation_id, target, busy)
    assert orchestrator.record_atomic_service_execution_start(
        AtomicServiceRun(runner_id="idle", atomic_service_run_id="idle-run"), None
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE pynenc_runner_heartbeat SET last_heartbeat_at = now() - interval '5 min' "
            "WHERE runner_id = 'idle'"
        )
        rows = conn.execute(
            "SELECT runner_id, runner_cls, heartbeat_age, pending_invocations, "
            "running_invocations, holds_atomic_service, atomic_service_run_id "
            "FROM pynenc_runner_status WHERE app_id = 'runner-view' ORDER BY runner_id"
        ).fetchall()
    (b_id, b_cls, b_age, b_pending, b_running, b_holds, _), idle_row = rows
    assert (b_id, b_cls, b_pending, b_running, b_holds) == ("busy", "TestRunner", 1, 1, False)
    assert timedelta(0) <= b_age < timedelta(minutes=1)
    assert idle_row[0] == "idle" and idle_row[1] is None  # no stored context
    assert timedelta(minutes=5) <= idle_row[2] < timedelta(minutes=6)
    assert idle_row[3:] == (0, 0, True, "idle-run")


def test_the_view_binds_to_the_configured_schema(empty_database_url: str) -> None:
    schema.upgrade(DatabaseSettings(url=empty_database_url, schema="orchestrator_space"))
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orchestrator_space.pynenc_runner_heartbeat "
            "(app_id, runner_id, can_run_atomic_service) VALUES ('a', 'r', true)"
        )
        conn.execute("SET search_path TO public")
        row = conn.execute(
            "SELECT runner_id, running_invocations FROM orchestrator_space.pynenc_runner_status"
        ).fetchone()
    assert row == ("r", 0)
