"""A database seeded by real runs on the Postgres-only stack, cloned for every test.

App ``retention-a`` runs successes, a failure, a workflow with data and steps that it
waits for, concurrency-controlled tasks, arguments and results large enough for the
client data store, and an event whose trigger runs another task. Afterwards, with no
runner, two invocations are submitted and stay unfinished (queued): one of them takes
the same large argument as a finished one, so they share a stored value. App
``retention-b`` runs one task, and must never be touched.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import AtomicServiceRun

from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.notify import stop_all_listeners
from tests.audit.conftest import _wait_until_unused
from tests.conftest import PostgresServer
from tests.retention import tasks
from tests.task_failures import expected_task_failures
from tests.waiting import wait_until

APP = "retention-a"
OTHER_APP = "retention-b"


@dataclass
class Seed:
    template: str
    finished: set[str] = field(default_factory=set)
    unfinished: set[str] = field(default_factory=set)


def build(
    url: str, app_id: str = APP, config: dict[str, Any] | None = None, **settings: Any
) -> Pynenc:
    return (
        PynencBuilder()
        .postgres(url=url, **settings)
        .thread_runner(min_threads=1, max_threads=4)
        .app_id(app_id)
        .custom_config(
            runner_loop_sleep_time_sec=0.01,
            invocation_wait_results_sleep_time_sec=0.01,
            **(config or {}),
        )
        .build()
    )


def bind(app: Pynenc) -> None:
    for task in tasks.ALL_TASKS:
        task.app = app


def run_to_completion(
    app: Pynenc, calls: list[Callable[[], Any]], failing: int = 0, events: bool = False
) -> list[str]:
    """Run the invocations ``calls`` make on a ThreadRunner and wait for each to end."""
    bind(app)
    if events:
        app.trigger.register_task_triggers(tasks.ship_order, tasks.SHIP_ON_ORDER)
    runner = threading.Thread(target=app.runner.run, daemon=True)
    ids: list[str] = []
    expected = Counter({(tasks.divide, ZeroDivisionError): failing}) if failing else Counter()
    with expected_task_failures(expected):
        runner.start()
        try:
            invocations = [make() for make in calls]
            for invocation in invocations:
                try:
                    invocation.result  # noqa: B018 - waits for the invocation to end
                except ZeroDivisionError:
                    pass
                ids.append(invocation.invocation_id)
            if events:
                ids.append(_fire_trigger(app))
        finally:
            app.runner.stop_runner_loop()
            runner.join()
    return ids


def _fire_trigger(app: Pynenc) -> str:
    (event,) = app.trigger.get_events(event_code="order.placed")
    app.trigger.trigger_loop_iteration(
        AtomicServiceRun(runner_id="retention-seed", atomic_service_run_id="retention-seed-loop")
    )
    runs = wait_until(
        lambda: app.trigger.get_trigger_runs_for_event(event.event_id),
        "the order event caused a trigger run",
    )
    shipped: str = runs[0].triggered_invocation_id
    wait_until(
        lambda: app.orchestrator.get_invocation_status(shipped) == InvocationStatus.SUCCESS,
        "the triggered ship_order succeeded",
    )
    return shipped


def statuses(url: str, app_id: str = APP) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT invocation_id, status FROM pynenc_orchestrator_invocation WHERE app_id = %s",
            (app_id,),
        ).fetchall()
    return dict(rows)


@pytest.fixture(scope="session")
def retention_seed(postgres_server: PostgresServer) -> Seed:
    name = postgres_server.create_database(template=postgres_server.template)
    url = postgres_server.url_for(name)
    app = build(url)
    run_to_completion(
        app,
        [
            lambda: tasks.add(1, 2),
            lambda: tasks.measure(tasks.BIG),
            lambda: tasks.echo_big(tasks.BIG + "result"),
            lambda: tasks.divide(1, 0),
            lambda: tasks.unique("k1"),
            lambda: tasks.unique("k2"),
            lambda: tasks.pipeline(2),
            lambda: tasks.place_order("R-1"),
        ],
        failing=1,
        events=True,
    )
    # Submitted with no runner: they stay queued, one sharing the stored large argument.
    bind(app)
    tasks.add(100, 1)
    tasks.measure(tasks.BIG)
    run_to_completion(build(url, OTHER_APP), [lambda: tasks.add(10, 20)])
    stop_all_listeners()
    dispose_all()
    _wait_until_unused(postgres_server, name)
    seed = Seed(template=name)
    final = {s.value for s in InvocationStatus.get_final_statuses()}
    for invocation_id, status in statuses(url).items():
        (seed.finished if status in final else seed.unfinished).add(invocation_id)
    assert len(seed.unfinished) == 2, statuses(url)
    assert len(seed.finished) >= 10
    return seed


@pytest.fixture
def seeded(postgres_server: PostgresServer, retention_seed: Seed) -> Iterator[str]:
    """A fresh copy of the seeded database for one test."""
    name = postgres_server.create_database(template=retention_seed.template)
    url = postgres_server.url_for(name)
    yield url
    stop_all_listeners()
    dispose_all()
    postgres_server.drop_database(name)


def age(url: str, by: timedelta, app_id: str = APP) -> None:
    """Move every time of the app's rows back by ``by``, as if all of it happened then."""
    updates = {
        "pynenc_invocation_history": "recorded_at = recorded_at - %(by)s",
        "pynenc_orchestrator_invocation": (
            "status_set_at = status_set_at - %(by)s, purgeable_since = purgeable_since - %(by)s"
        ),
        "pynenc_client_data": "stored_at = stored_at - %(by)s",
        "pynenc_runner_context": "created_at = created_at - %(by)s",
        "pynenc_runner_heartbeat": (
            "last_heartbeat_at = last_heartbeat_at - %(by)s, "
            "first_heartbeat_at = first_heartbeat_at - %(by)s"
        ),
    }
    with psycopg.connect(url, autocommit=True) as conn:
        for table, assignment in updates.items():
            conn.execute(
                f"UPDATE {table} SET {assignment} WHERE app_id = %(app)s",
                {"by": by, "app": app_id},
            )
