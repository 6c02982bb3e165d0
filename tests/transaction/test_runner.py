"""``in_transaction()`` with a real runner alive: what is rolled back never runs, what is
committed runs once, and an idle worker is woken by the commit itself.

The runner is pynenc's own command (``python -m pynenc --app ... runner start``), a
``PersistentProcessRunner`` with one worker process, configured by ``PYNENC__*``
variables alone. Its worker waits for work with ``LISTEN``, and both its wait
(``queue_timeout_sec``) and its fallback poll (``postgres_broker_poll_interval_sec``) are
10 minutes: a task that starts within the tests' one-minute deadlines was handed over by
a notification, not found by a poll. A single worker takes the queue in routing order,
so once a committed task has run, anything routed before it would have run too.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres import in_transaction
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.notify import stop_all_listeners
from tests.conftest import PostgresServer
from tests.transaction import tasks
from tests.transaction.shop import (
    KINDS,
    LARGE_DOCUMENT,
    app_rows,
    bound,
    build_app,
    create_business_tables,
    orders,
    rows_of_invocations,
    submit_order_tasks,
    task_runs,
    unit_of_work,
)
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
IDLE_WAIT_SEC = 600.0
APPLICATION_NAME = "tx-runner"


@dataclass
class Runner:
    url: str
    app: Pynenc
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def runner(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runner]:
    name = postgres_server.create_database(template=postgres_server.template)
    url = postgres_server.url_for(name)
    create_business_tables(url)
    app_id = f"tx-runner-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYNENC__")}
    env |= {
        "PYNENC__APP_ID": app_id,
        "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
        "PYNENC__BROKER_CLS": "PostgresBroker",
        "PYNENC__ORCHESTRATOR_CLS": "PostgresOrchestrator",
        "PYNENC__TRIGGER_CLS": "PostgresTrigger",
        "PYNENC__CLIENT_DATA_STORE_CLS": "PostgresClientDataStore",
        "PYNENC__POSTGRES_URL": url,
        "PYNENC__POSTGRES_APPLICATION_NAME": APPLICATION_NAME,
        "PYNENC__POSTGRES_BROKER_WAKEUP": "listen",
        "PYNENC__QUEUE_TIMEOUT_SEC": str(IDLE_WAIT_SEC),
        "PYNENC__POSTGRES_BROKER_POLL_INTERVAL_SEC": str(IDLE_WAIT_SEC),
        "PYNENC__RUNNER_CLS": "PersistentProcessRunner",
        "PYNENC__NUM_PROCESSES": "1",
        "PYNENC__LOGGING_LEVEL": "warning",
    }
    log = tmp_path_factory.mktemp("tx-runner") / "runner.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pynenc", "--app", "tests.transaction.tasks", "runner", "start"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Runner(url, build_app(url, app_id), process, log)
    try:

        def started() -> bool:
            assert process.poll() is None, f"the runner exited:\n{running.log_tail()}"
            # The runner process and its worker each heartbeat.
            return len(running.app.orchestrator.get_active_runners()) >= 2

        wait_until(started, "the runner and its worker heartbeating")
        with bound(running.app):
            warm_up = tasks.send_invoice(0)
            wait_final(running, [warm_up])
        yield running
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        stop_all_listeners()
        dispose_all()
        postgres_server.drop_database(name)


def wait_final(runner: Runner, invocations: Sequence[Any]) -> None:
    orchestrator = runner.app.orchestrator

    def final() -> bool:
        assert runner.process.poll() is None, f"the runner exited:\n{runner.log_tail()}"
        return all(
            orchestrator.get_invocation_status(i.invocation_id).is_final() for i in invocations
        )

    wait_until(final, lambda: f"{len(invocations)} invocation(s) final\n{runner.log_tail()}")


def status_counts(url: str, app_id: str, invocation_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Per invocation: how many RUNNING and SUCCESS rows its history has."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT invocation_id, count(*) FILTER (WHERE status = 'running'), "
            "count(*) FILTER (WHERE status = 'success') FROM pynenc_invocation_history "
            "WHERE app_id = %s AND invocation_id = ANY(%s) GROUP BY 1",
            (app_id, invocation_ids),
        ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def expected_result(invocation: Any, order_id: int) -> Any:
    task = invocation.call.task
    if task.task_id == tasks.attach_document.task_id:
        return len(LARGE_DOCUMENT)
    if task.task_id == tasks.reserve_stock.task_id:
        return f"reserved-{order_id}"
    return f"invoice-{order_id}"


@pytest.mark.parametrize("kind", KINDS)
def test_rolled_back_tasks_never_run_and_committed_ones_run_once(kind: str, runner: Runner) -> None:
    base = 1000 * (KINDS.index(kind) + 1)
    rolled_back_order, committed_order = base + 1, base + 2
    app = runner.app
    with bound(app):
        with unit_of_work(kind, runner.url) as unit:
            unit.add_order(rolled_back_order)
            with in_transaction(unit.target):
                rolled_back = submit_order_tasks(rolled_back_order)
            unit.rollback()
        # Routed after the rolled-back tasks would have been: it is their positive control.
        with unit_of_work(kind, runner.url) as unit:
            unit.add_order(committed_order)
            with in_transaction(unit.target):
                committed = submit_order_tasks(committed_order)
            unit.commit()
        wait_final(runner, committed)

        committed_ids = [invocation.invocation_id for invocation in committed]
        for invocation in committed:
            assert invocation.status == InvocationStatus.SUCCESS
            assert invocation.result == expected_result(invocation, committed_order)
    # Each task body ran exactly once, and pynenc recorded one run and one success each.
    assert sorted(task_runs(runner.url, committed_order)) == sorted(committed_ids)
    assert status_counts(runner.url, app.app_id, committed_ids) == {
        invocation_id: (1, 1) for invocation_id in committed_ids
    }
    assert rows_of_invocations(runner.url, committed_ids)["pynenc_invocation_result"] == len(
        committed
    )

    rolled_back_ids = [invocation.invocation_id for invocation in rolled_back]
    assert task_runs(runner.url, rolled_back_order) == []
    left = rows_of_invocations(runner.url, rolled_back_ids)
    assert sum(left.values()) == 0, left
    assert rolled_back_order not in orders(runner.url)
    assert committed_order in orders(runner.url)
    stored = rows_of_invocations(runner.url, committed_ids)["pynenc_invocation_result"]
    print(
        f"\n[{kind}] rolled back: {len(rolled_back)} submitted, rows left {sum(left.values())} "
        f"in {len(left)} tables, task runs {len(task_runs(runner.url, rolled_back_order))}; "
        f"committed: {len(committed)} submitted, task runs "
        f"{len(task_runs(runner.url, committed_order))}, results stored {stored}"
    )


def worker_waiting(url: str, after: Any) -> bool:
    """The worker's last statement is an empty claim made after ``after`` (server clock).

    Only the worker claims; once its claim found nothing it waits for a notification.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND state = 'idle' AND state_change > %s "
            "AND query LIKE %s",
            (APPLICATION_NAME, after, "%DELETE FROM %pynenc_broker_message%SKIP LOCKED%"),
        ).fetchone()
    return bool(row and row[0])


def test_an_idle_worker_is_woken_by_the_commit(runner: Runner) -> None:
    app = runner.app
    with bound(app):
        previous = tasks.send_invoice(2000)
        wait_final(runner, [previous])
        with psycopg.connect(runner.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT status_set_at FROM pynenc_orchestrator_invocation "
                "WHERE app_id = %s AND invocation_id = %s",
                (app.app_id, previous.invocation_id),
            ).fetchone()
        assert row is not None
        wait_until(
            lambda: worker_waiting(runner.url, row[0]),
            "the worker's claim after its last task found nothing (it waits now)",
        )

        with psycopg.connect(runner.url) as conn:
            conn.execute("INSERT INTO shop_order VALUES (2001, 'woken by the commit')")
            with in_transaction(conn):
                invocation = tasks.send_invoice(2001)
            conn.commit()
            committed_at = time.monotonic()
        # The worker's wait and its poll would each last 10 minutes: only the
        # notification delivered by the commit can start it within wait_final's minute.
        wait_final(runner, [invocation])
        picked_up_after = time.monotonic() - committed_at
        assert invocation.result == "invoice-2001"
    assert task_runs(runner.url, 2001) == [invocation.invocation_id]
    print(f"\nidle worker: task finished {picked_up_after * 1000:.0f} ms after the commit")


def test_a_client_killed_before_its_commit_leaves_nothing(runner: Runner) -> None:
    app = runner.app
    order_id = 3001
    before = app_rows(runner.url, app.app_id)
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.transaction.killed_client", runner.url, app.app_id, "3001"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert client.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(client.stdout, selectors.EVENT_READ)
            wait_until(
                lambda: selector.select(timeout=0.1) or client.poll() is not None,
                "the client submitting inside its transaction",
            )
        line = client.stdout.readline()
        assert line, f"the client exited ({client.poll()}) before submitting"
        report = json.loads(line)
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
        if client.stdout is not None:
            client.stdout.close()
    submitted: list[str] = report["invocation_ids"]

    def session_gone() -> bool:
        with psycopg.connect(runner.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (report["backend_pid"],)
            ).fetchone()
        return row == (0,)

    wait_until(session_gone, "the server ending the killed client's session")
    with bound(app):
        control = tasks.send_invoice(3002)  # routed after the killed client's tasks
        wait_final(runner, [control])
        assert control.result == "invoice-3002"

    left = rows_of_invocations(runner.url, submitted)
    assert sum(left.values()) == 0, left
    assert task_runs(runner.url, order_id) == []
    assert order_id not in orders(runner.url)
    # Nor its large argument, which is keyed by its content, not by an invocation.
    assert app_rows(runner.url, app.app_id)["pynenc_client_data"] == before["pynenc_client_data"]
    print(f"\nkilled client: {len(submitted)} submitted, rows left {sum(left.values())}")
