"""A database seeded by real pynenc runs, shared by the audit, retention, inspect and role tests.

Two apps run real tasks on ThreadRunners with our state backend and trigger: successes,
failures, a retried task, a slow task, a workflow with sub-invocations, and a task that
emits an event whose trigger runs another task. A worker process is then killed with
SIGKILL while a task is RUNNING, as a crashed worker would be. The seeded database is
used as the template of a fresh clone for every test.
"""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import AtomicServiceRun

from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.models import STATE_TABLES
from pynenc_postgres.db.settings import DatabaseSettings
from tests.audit import tasks
from tests.conftest import PostgresServer
from tests.task_failures import expected_task_failures
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
APP_A = "audit-a"
APP_B = "audit-b"
# The seed runs on pynenc's SQLite broker and trigger with our orchestrator.
ORCHESTRATOR_CLS = "PostgresOrchestrator"


@dataclass
class Seed:
    """Where the seeded template is, and the ids of the invocations made."""

    template: str
    ids: dict[str, str] = field(default_factory=dict)
    runner_a: str = ""


def _build(url: str, sqlite_path: Path, app_id: str) -> Pynenc:
    return (
        PynencBuilder()
        .sqlite(sqlite_db_path=str(sqlite_path))
        .postgres_state_backend(url=url)
        .thread_runner(min_threads=1, max_threads=4)
        .app_id(app_id)
        .custom_config(
            orchestrator_cls=ORCHESTRATOR_CLS,
            runner_loop_sleep_time_sec=0.01,
            invocation_wait_results_sleep_time_sec=0.01,
            trigger_cls="PostgresTrigger",
        )
        .build()
    )


def _run(
    app: Pynenc,
    calls: dict[str, Any],
    failing: dict[str, tuple[Any, type[BaseException]]],
    *,
    events: bool = False,
) -> dict[str, str]:
    """Run the invocations made by ``calls`` to completion on a ThreadRunner.

    :param failing: the calls meant to fail, each with its task and the exception it
        raises; every other call must succeed, and no runner thread may fail otherwise.
    :param events: ``place_order`` emits an event whose trigger runs ``ship_order``.
    """
    for task in tasks.ALL_TASKS:
        task.app = app
    if events:
        app.trigger.register_task_triggers(tasks.ship_order, tasks.SHIP_ON_ORDER)
    outcomes: dict[str, type[BaseException] | None] = {}
    runner = threading.Thread(target=app.runner.run, daemon=True)
    with expected_task_failures(Counter(failing.values())):
        runner.start()
        try:
            invocations = {name: make() for name, make in calls.items()}
            # Every call is awaited before anything is asserted: a runner stopped early
            # would leave the workflow waiting for its steps, and its join would hang.
            for name, invocation in invocations.items():
                try:
                    invocation.result  # noqa: B018 - waits for the invocation to end
                    outcomes[name] = None
                except Exception as exc:  # compared with `failing` below
                    outcomes[name] = type(exc)
            ids = {name: inv.invocation_id for name, inv in invocations.items()}
            if events:
                ids.update(_fire_triggers(app))
        finally:
            app.runner.stop_runner_loop()
            runner.join()
        assert outcomes == {name: failing[name][1] if name in failing else None for name in calls}
    return ids


def _fire_triggers(app: Pynenc) -> dict[str, str]:
    """Run the trigger loop once, and wait for the invocation the order event caused.

    The runner's own trigger loop may get there first; either way the event has one
    trigger run. An event nobody listens to is emitted too.
    """
    ping = app.trigger.emit_event("audit.ping", {"note": "nobody listens"})
    (order_event,) = app.trigger.get_events(event_code="order.placed")
    app.trigger.trigger_loop_iteration(
        AtomicServiceRun(runner_id="audit-seed", atomic_service_run_id="audit-seed-loop")
    )
    runs = wait_until(
        lambda: app.trigger.get_trigger_runs_for_event(order_event.event_id),
        "the order event caused a trigger run",
    )
    shipped = runs[0].triggered_invocation_id
    wait_until(
        lambda: app.orchestrator.get_invocation_status(shipped) == InvocationStatus.SUCCESS,
        "the triggered ship_order succeeded",
    )
    return {"order_event": order_event.event_id, "ping_event": ping, "ship_order": shipped}


def _latest_status(url: str, app_id: str, invocation_id: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status FROM pynenc_invocation_history WHERE app_id = %s "
            "AND invocation_id = %s ORDER BY recorded_at DESC, write_order DESC, status DESC "
            "LIMIT 1",
            (app_id, invocation_id),
        ).fetchone()
    return row[0] if row else None


def _kill_worker_while_running(url: str, sqlite_path: Path) -> str:
    """Start ``stuck`` in a worker process and SIGKILL the worker once it is RUNNING."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.stuck_worker", url, str(sqlite_path), APP_A],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert worker.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(worker.stdout, selectors.EVENT_READ)
            wait_until(
                lambda: selector.select(timeout=0.1) or worker.poll() is not None,
                "the stuck worker printing its invocation id",
            )
        invocation_id = worker.stdout.readline().strip()
        assert invocation_id, f"the worker exited ({worker.poll()}) without an invocation id"

        def running() -> bool:
            assert worker.poll() is None, "the worker exited before running its task"
            return _latest_status(url, APP_A, invocation_id) == "running"

        wait_until(running, f"the stuck worker's invocation {invocation_id} RUNNING")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    return invocation_id


def _wait_until_unused(server: PostgresServer, name: str) -> None:
    """A killed client's server processes exit on their own; CREATE DATABASE needs that."""
    with server.admin() as conn:

        def sessions() -> int:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
            assert row is not None
            return int(row[0])

        wait_until(lambda: sessions() == 0, f"every session of {name} closed by the server")


@pytest.fixture(scope="session")
def audit_seed(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    name = postgres_server.create_database(template=postgres_server.template)
    url = postgres_server.url_for(name)
    work = tmp_path_factory.mktemp("audit-seed")
    seed = Seed(template=name)

    seed.ids.update(
        _run(
            _build(url, work / "a.sqlite", APP_A),
            {
                "add": lambda: tasks.add(1, 2),
                "add_2": lambda: tasks.add(3, 4),
                "divide_zero": lambda: tasks.divide(1, 0),
                "divide_zero_2": lambda: tasks.divide(2, 0),
                "parse_bad": lambda: tasks.parse("not a number"),
                "flaky": lambda: tasks.flaky("seed"),
                "slow": lambda: tasks.slow(0.3),
                "pipeline": lambda: tasks.pipeline(3),
                "place_order": lambda: tasks.place_order("A-1"),
            },
            events=True,
            failing={
                "divide_zero": (tasks.divide, ZeroDivisionError),
                "divide_zero_2": (tasks.divide, ZeroDivisionError),
                "parse_bad": (tasks.parse, ValueError),
            },
        )
    )
    seed.ids.update(
        {
            f"b_{key}": value
            for key, value in _run(
                _build(url, work / "b.sqlite", APP_B),
                {"add": lambda: tasks.add(10, 20), "divide_zero": lambda: tasks.divide(5, 0)},
                failing={"divide_zero": (tasks.divide, ZeroDivisionError)},
            ).items()
        }
    )
    seed.ids["stuck"] = _kill_worker_while_running(url, work / "stuck.sqlite")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT runner_id FROM pynenc_invocation_history WHERE app_id = %s "
            "AND invocation_id = %s AND status = 'running'",
            (APP_A, seed.ids["slow"]),
        ).fetchone()
        assert row is not None
        seed.runner_a = row[0]
    dispose_all()
    _wait_until_unused(postgres_server, name)
    return seed


@pytest.fixture
def seeded_url(postgres_server: PostgresServer, audit_seed: Seed) -> Iterator[str]:
    """A fresh copy of the seeded database for one test."""
    name = postgres_server.create_database(template=audit_seed.template)
    url = postgres_server.url_for(name)
    yield url
    dispose_all()
    postgres_server.drop_database(name)


@pytest.fixture
def seeded_settings(seeded_url: str) -> DatabaseSettings:
    return DatabaseSettings(url=seeded_url)


def all_rows(url: str) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of every pynenc table, for before/after comparisons."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: set(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in STATE_TABLES
        }
