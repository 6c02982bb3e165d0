"""One host's idle consumers: a task wakes one of them, and the others send nothing.

Six spawned processes, each a consumer in pynenc's loop (``retrieve_invocation`` again
and again, 0.2 s each), built from ``PYNENC__*`` variables alone as
PersistentProcessRunner's workers are. They share one ``LISTEN`` connection: the process
that won the election of the host's socket name holds it. Each process counts the claim
statements it sends.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from pynenc_postgres.broker import PostgresBroker
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.notify import stop_all_listeners
from tests.broker.children import idle_consumer
from tests.broker.conftest import build_app
from tests.conftest import PostgresServer

PROCESSES = 6
TASKS = 5
DEADLINE_SEC = 120.0


@dataclass
class Host:
    """The consumer processes and what they share with the test."""

    processes: list[Any]
    claims: Any
    waiting: Any
    leaders: Any
    stop: Any
    results: Any
    broker: PostgresBroker
    url: str

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_SEC
        while not condition():
            self.check_errors()
            if time.monotonic() > deadline:
                pytest.fail(f"gave up after {DEADLINE_SEC}s waiting for {what}")
            time.sleep(0.02)

    def check_errors(self) -> None:
        for slot, process in enumerate(self.processes):
            if process.exitcode not in (None, -signal.SIGKILL):
                pytest.fail(f"consumer {slot} exited with {process.exitcode}")

    def alive(self) -> list[int]:
        return [slot for slot, p in enumerate(self.processes) if p.is_alive()]

    def all_idle(self) -> bool:
        return all(self.waiting[slot] == 1 for slot in self.alive())

    def taken(self, count: int) -> list[tuple[int, str]]:
        """The next ``count`` invocations taken: (slot, id)."""
        got = []
        deadline = time.monotonic() + DEADLINE_SEC
        while len(got) < count:
            try:
                slot, _, invocation_id = self.results.get(timeout=0.1)
            except queue.Empty:
                self.check_errors()
                if time.monotonic() > deadline:
                    pytest.fail(f"only {len(got)} of {count} invocations were taken")
                continue
            assert slot != "error", invocation_id
            got.append((slot, invocation_id))
        return got

    def route_from_another_process(self, invocation_id: str) -> None:
        """Route as a client on another host would: one statement, its NOTIFY."""
        broker = self.broker
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                broker.sql.route_one,
                (
                    broker.app_id,
                    "default",
                    0.0,
                    invocation_id,
                    broker.sql.channel,
                    f"default:{broker.app_id}",
                ),
            )


@pytest.fixture(scope="module")
def host(postgres_server: PostgresServer) -> Iterator[Host]:
    """The six processes, started once for the module (the leader's death comes last)."""
    name = postgres_server.create_database(template=postgres_server.template)
    broker_url = postgres_server.url_for(name)
    app = build_app(broker_url)
    environment = {
        "PYNENC__APP_ID": app.app_id,
        "PYNENC__BROKER_CLS": "PostgresBroker",
        "PYNENC__POSTGRES_URL": broker_url,
        "PYNENC__QUEUE_TIMEOUT_SEC": "0.2",
        # No safety re-check within the test: every claim it sees was caused by a task.
        "PYNENC__POSTGRES_BROKER_RECHECK_INTERVAL_SEC": "600",
        # While a consumer polls, it does so rarely: these tests are about wake-ups.
        "PYNENC__POSTGRES_BROKER_POLL_INTERVAL_SEC": "30",
    }
    saved = {k: v for k, v in os.environ.items() if k.startswith("PYNENC__")}
    os.environ.update(environment)
    ctx = multiprocessing.get_context("spawn")
    claims = ctx.Array("i", PROCESSES)
    waiting = ctx.Array("i", PROCESSES)
    leaders = ctx.Array("i", PROCESSES)
    stop = ctx.Event()
    results: Any = ctx.Queue()
    processes = [
        ctx.Process(target=idle_consumer, args=(slot, claims, waiting, leaders, stop, results))
        for slot in range(PROCESSES)
    ]
    try:
        for process in processes:
            process.start()
    finally:  # the children copied the environment when they started
        for key in environment:
            os.environ.pop(key, None)
        os.environ.update(saved)
    broker = app.broker
    assert isinstance(broker, PostgresBroker)
    handle = Host(processes, claims, waiting, leaders, stop, results, broker, broker_url)
    try:
        handle.wait_until(handle.all_idle, "every consumer to wait, idle")
        yield handle
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=DEADLINE_SEC)
            if process.is_alive():
                process.kill()
                process.join()
        stop_all_listeners()
        dispose_all()
        postgres_server.drop_database(name)


def listen_sessions(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE '%%(listen)'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_task_wakes_one_idle_consumer_and_the_others_send_nothing(host: Host) -> None:
    host.wait_until(host.all_idle, "every consumer to wait, idle")
    assert sum(host.leaders) == 1
    assert listen_sessions(host.url) == 1
    before = list(host.claims)
    takers: Counter[int] = Counter()
    for n in range(TASKS):
        host.route_from_another_process(f"task-{n}")
        ((slot, invocation_id),) = host.taken(1)
        assert invocation_id == f"task-{n}"
        takers[slot] += 1
        # The taker claims once more, finds the queue empty, and waits again.
        host.wait_until(host.all_idle, "every consumer to wait again")
    claims = [after - then for after, then in zip(host.claims, before, strict=True)]

    # One claim that takes the task, one that finds the queue empty after it.
    assert sum(claims) == 2 * TASKS
    assert {slot: claims[slot] for slot in range(PROCESSES) if claims[slot]} == {
        slot: 2 * count for slot, count in takers.items()
    }
    assert host.broker.count_invocations() == 0


def test_a_batch_wakes_as_many_consumers_as_it_routed(host: Host) -> None:
    host.wait_until(host.all_idle, "every consumer to wait, idle")
    before = list(host.claims)
    host.broker.route_invocations([f"batch-{n}" for n in range(3)], "default", 0.0)
    taken = host.taken(3)
    assert sorted(i for _, i in taken) == ["batch-0", "batch-1", "batch-2"]
    host.wait_until(host.all_idle, "every consumer to wait again")
    claims = [after - then for after, then in zip(host.claims, before, strict=True)]
    # Three consumers woken, no more. Between them: a claim per invocation, and one
    # that finds the queue empty for each of them (the first woken may take more than
    # one before the others' claims arrive, and they then find none).
    assert sum(claims) == 6
    assert len([c for c in claims if c]) == 3


def test_when_the_leader_dies_another_process_leads_and_nothing_is_missed(host: Host) -> None:
    host.wait_until(host.all_idle, "every consumer to wait, idle")
    (leader,) = [slot for slot in range(PROCESSES) if host.leaders[slot]]
    # Queued without a notification, as if the one the leader got died with it.
    with psycopg.connect(host.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id) "
            "VALUES (%s, 'default', 0, 'unannounced')",
            (host.broker.app_id,),
        )
    os.kill(host.processes[leader].pid, signal.SIGKILL)
    host.processes[leader].join(DEADLINE_SEC)

    # The followers look at the table again when they lose their leader.
    ((slot, invocation_id),) = host.taken(1)
    assert invocation_id == "unannounced" and slot != leader
    host.wait_until(lambda: sum(host.leaders[slot] for slot in host.alive()) == 1, "a new leader")
    host.wait_until(host.all_idle, "every consumer to wait again")
    host.wait_until(lambda: listen_sessions(host.url) == 1, "one LISTEN session")

    host.route_from_another_process("after the change")
    assert [i for _, i in host.taken(1)] == ["after the change"]
