"""4 processes x 4 threads drain 10,000 invocations of mixed priorities, exactly once.

The consumers are spawned processes that build ``Pynenc()`` from environment variables
alone, as PersistentProcessRunner's workers do. One producer routes while they drain,
in batches of random size and priority (a batch of one through ``route_invocation``).
Every id must come out exactly once, and each consumer must receive the ids of one
priority in the order they were routed.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from tests.broker.children import consume
from tests.broker.conftest import build_app

PROCESSES = 4
THREADS = 4
INVOCATIONS = 10_000
PRIORITIES = (-100.0, -3.5, 0.0, 7.0, 100.0)
DEADLINE_SEC = 240


def route_all(app: Any, rng: random.Random) -> dict[str, float]:
    """Route every id in sequence order; return each id's priority."""
    broker = app.broker
    priority_of: dict[str, float] = {}
    sequence = 0
    while sequence < INVOCATIONS:
        size = min(rng.choice((1, 1, 1, 3, 10, 25)), INVOCATIONS - sequence)
        priority = rng.choice(PRIORITIES)
        ids = [f"inv-{n:05d}" for n in range(sequence, sequence + size)]
        if size == 1:
            broker.route_invocation(ids[0], "default", priority)
        else:
            broker.route_invocations(ids, "default", priority)
        priority_of.update(dict.fromkeys(ids, priority))
        sequence += size
    return priority_of


def test_every_invocation_is_taken_exactly_once_in_routing_order(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(broker_url)
    monkeypatch.setenv("PYNENC__APP_ID", app.app_id)
    monkeypatch.setenv("PYNENC__BROKER_CLS", "PostgresBroker")
    monkeypatch.setenv("PYNENC__CLIENT_DATA_STORE_CLS", "PostgresClientDataStore")
    monkeypatch.setenv("PYNENC__POSTGRES_URL", broker_url)
    monkeypatch.setenv("PYNENC__QUEUE_TIMEOUT_SEC", "0.5")

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES * THREADS + 1)
    finished = ctx.Event()
    results: Any = ctx.Queue()
    processes = [
        ctx.Process(target=consume, args=(THREADS, start, finished, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        start.wait(timeout=DEADLINE_SEC)
    except threading.BrokenBarrierError:
        pytest.fail(f"consumers did not start: {drain_errors(results)}")
    priority_of = route_all(app, random.Random(12))
    finished.set()

    reports = []
    deadline = time.monotonic() + DEADLINE_SEC
    while len(reports) < PROCESSES * THREADS:
        try:
            report = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"only {len(reports)} of {PROCESSES * THREADS} consumers reported")
        assert report[0] != "error", report[1]
        reports.append(report)
    for process in processes:
        process.join(timeout=DEADLINE_SEC)
        assert process.exitcode == 0

    taken = Counter(invocation_id for *_, ids in reports for invocation_id in ids)
    assert sorted(taken) == sorted(priority_of), "some ids never came out"
    assert [i for i, n in taken.items() if n > 1] == [], "ids taken more than once"
    assert app.broker.count_invocations() == 0

    for pid, _, _, ids in reports:
        by_priority: dict[float, list[str]] = defaultdict(list)
        for invocation_id in ids:
            by_priority[priority_of[invocation_id]].append(invocation_id)
        for priority, in_order in by_priority.items():
            assert in_order == sorted(in_order), (
                f"consumer in process {pid} took priority {priority} out of routing order"
            )

    # Resolved by name from the environment, through the pynenc.plugins entry points.
    assert {cls for _, _, cls, _ in reports} == {"PostgresBroker+PostgresClientDataStore"}
    # One LISTEN connection for the host: one process leads, the others follow it.
    roles = {pid: role for pid, role, _, _ in reports}
    assert len(roles) == PROCESSES
    assert sorted(roles.values()) == ["follower"] * (PROCESSES - 1) + ["leader"]
    # Work was spread: every process took some.
    assert len({pid for pid, _, _, ids in reports if ids}) == PROCESSES


def drain_errors(results: Any) -> list[str]:
    errors = []
    while True:
        try:
            report = results.get(timeout=0.5)
        except queue.Empty:
            return errors
        if report[0] == "error":
            errors.append(report[1])
