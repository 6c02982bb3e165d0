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

    Each thread puts ``(pid, listener backend pid, component classes, ids in the order
    taken)`` on ``results``, or ``("error", traceback)``.
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
                # Read before the claim: once the producer is done, an empty claim
                # that started afterwards means the queue is drained.
                done = finished.is_set()
                invocation_id = broker.retrieve_invocation()
                if invocation_id is not None:
                    taken.append(str(invocation_id))
                elif done:
                    break
            listener = broker.wakeups()
            classes = f"{type(broker).__name__}+{type(app.client_data_store).__name__}"
            results.put((os.getpid(), getattr(listener, "backend_pid", None), classes, taken))
        except BaseException:
            results.put(("error", traceback.format_exc()))
            start.abort()

    workers = [threading.Thread(target=drain) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
