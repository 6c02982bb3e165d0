"""4 processes x 4 threads write the same invocations at the same moments.

Each round starts at a barrier shared by all 16 writers. In it every writer upserts all
the shared invocations (in its own random order, with arguments naming writer and round)
and adds one history row to each. A writer reaches the next barrier only after its calls
returned, so once the last barrier has passed, the stored arguments must come from the
last round; a final upsert made after every writer stopped must then win outright.

No call may deadlock. The layer retries a deadlock (40P01) like any transient error, so
a deadlock would go unnoticed; the writers therefore run with ``retry_attempts=1``,
where a deadlock (or any other failure) surfaces as an error that fails the test.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from pynenc.invocation.status import InvocationStatus, InvocationStatusRecord
from pynenc.models.call_dto import CallDTO
from pynenc.state_backend.base_state_backend import InvocationHistory

from tests.reliability.conftest import build_app
from tests.reliability.tasks import new_invocation
from tests.waiting import DEFAULT_TIMEOUT

PROCESSES = 4
THREADS = 4
ROUNDS = 8
INVOCATIONS = 24
BASE_TIME = datetime(2030, 1, 1, tzinfo=UTC)


def test_concurrent_upserts_and_history_lose_nothing(database_url: str) -> None:
    # One attempt: a deadlock is an error here, not a silent retry.
    app = build_app(database_url, retry_attempts=1)
    backend = app.state_backend
    invocations = [new_invocation(app, f"initial {n}") for n in range(INVOCATIONS)]
    dtos = {inv.invocation_id: (inv.to_dto(), inv.call.call_id) for inv in invocations}
    ids = list(dtos)

    ctx = multiprocessing.get_context("fork")
    # A writer that dies breaks the barrier for the others instead of leaving them waiting.
    barrier = ctx.Barrier(PROCESSES * THREADS, timeout=DEFAULT_TIMEOUT)
    failures: Any = ctx.Queue()

    def write(writer: int) -> None:
        rng = random.Random(writer)
        for round_number in range(ROUNDS):
            barrier.wait()
            order = rng.sample(ids, len(ids))
            value = app.serializer.serialize(f"writer {writer} round {round_number}")
            backend._upsert_invocations(
                [(dtos[i][0], CallDTO(dtos[i][1], {"value": value})) for i in order]
            )
            history = InvocationHistory(
                invocation_id=order[0],
                status_record=InvocationStatusRecord(InvocationStatus.RUNNING, f"w{writer}"),
                runner_context_id=f"writer-{writer}",
            )
            # Distinct instants per writer and round: these rows are distinct events.
            history._timestamp = BASE_TIME + timedelta(microseconds=writer * ROUNDS + round_number)
            backend._add_histories(order, history)

    def process(index: int) -> None:
        def thread(number: int) -> None:
            try:
                write(index * THREADS + number)
            except BaseException:
                failures.put(traceback.format_exc())
                barrier.abort()

        threads = [threading.Thread(target=thread, args=(n,)) for n in range(THREADS)]
        for each in threads:
            each.start()
        for each in threads:
            each.join()

    processes = [ctx.Process(target=process, args=(p,)) for p in range(PROCESSES)]
    for each in processes:
        each.start()
    for each in processes:
        each.join(DEFAULT_TIMEOUT)
    assert [each.exitcode for each in processes] == [0] * PROCESSES
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert errors == [], "\n".join(errors)

    writers = PROCESSES * THREADS
    last_round = {f"writer {w} round {ROUNDS - 1}" for w in range(writers)}
    for invocation_id in ids:
        stored = backend.get_invocation(invocation_id).call.arguments.kwargs["value"]
        assert stored in last_round
        history = backend.get_history(invocation_id)
        assert len(history) == writers * ROUNDS
        assert {h.runner_context_id for h in history} == {f"writer-{w}" for w in range(writers)}

    final = app.serializer.serialize("final")
    backend._upsert_invocations([(dtos[i][0], CallDTO(dtos[i][1], {"value": final})) for i in ids])
    for invocation_id in ids:
        assert backend.get_invocation(invocation_id).call.arguments.kwargs["value"] == "final"
