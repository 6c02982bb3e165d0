"""Code that runs in child processes of the broker tests.

Nothing here imports ``pynenc_postgres`` at module level: a spawned child must find
``PostgresBroker`` by name, through the ``pynenc.plugins`` entry point, from
``PYNENC__*`` environment variables alone.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any


def consume(threads: int, start: Any, finished: Any, results: Any) -> None:
    """Drain the queue with ``threads`` threads until the producer has ``finished``.

    Each thread puts ``(pid, the process's role in the host's notifier, component
    classes, ids in the order taken)`` on ``results``, or ``("error", traceback)``.
    """
    try:
        from pynenc import Pynenc

        app = Pynenc()
        broker = app.broker
    except BaseException:
        for _ in range(threads):
            results.put(("error", traceback.format_exc()))
        raise

    def drain() -> None:
        try:
            taken: list[str] = []
            start.wait()
            while True:
                # Read before the wait: once the producer is done, a queue found empty
                # afterwards is drained. An idle consumer returns None without
                # claiming when nothing woke it (another consumer was woken instead),
                # so "drained" is asked of the table itself.
                done = finished.is_set()
                invocation_id = broker.retrieve_invocation()
                if invocation_id is not None:
                    taken.append(str(invocation_id))
                elif done and broker.count_invocations() == 0:
                    break
            role = broker.notifier().role
            classes = f"{type(broker).__name__}+{type(app.client_data_store).__name__}"
            results.put((os.getpid(), role, classes, taken))
        except BaseException:
            results.put(("error", traceback.format_exc()))
            start.abort()

    workers = [threading.Thread(target=drain) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def idle_consumer(
    slot: int, claims: Any, waiting: Any, leaders: Any, stop: Any, results: Any
) -> None:
    """One process with one consumer in pynenc's loop: retrieve, and again.

    It counts the claim statements it sends in ``claims[slot]``, publishes how many of
    its consumers the host's dispatcher has as idle in ``waiting[slot]`` and whether it
    leads the host's notifier in ``leaders[slot]``, and puts ``(slot, pid, id)`` on
    ``results`` for every invocation it takes, until ``stop`` is set.
    """
    try:
        from pynenc import Pynenc

        app = Pynenc()
        broker = app.broker
        db = broker.db
        fetchone = db.fetchone
        claim_statements = {broker.sql.claim, broker.sql.claim_relaxed}

        def counting_fetchone(query: str, params: Any) -> Any:
            if query in claim_statements:
                with claims.get_lock():
                    claims[slot] += 1
            return fetchone(query, params)

        db.fetchone = counting_fetchone  # type: ignore[method-assign]
        notifier = broker.notifier()
        key = broker.wake_key(broker.app_id, "default")
        while not stop.is_set():
            invocation_id = broker.retrieve_invocation()
            if invocation_id is not None:
                results.put((slot, os.getpid(), str(invocation_id)))
            waiting[slot] = notifier.waiting(key)
            leaders[slot] = 1 if notifier.role == "leader" else 0
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))
        raise
