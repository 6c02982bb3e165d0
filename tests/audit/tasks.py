"""Tasks run by real pynenc runners to seed the audit database.

They are bound to an app built by the fixture (``task.app = app``), so the same task
objects serve two apps run one after the other.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pynenc import PynencBuilder
from pynenc.trigger.conditions import EventContext
from pynenc.trigger.trigger_builder import TriggerBuilder

# A placeholder app: the seeding fixture rebinds every task to a Postgres-backed app.
app = PynencBuilder().memory().app_id("audit-placeholder").build()

flaky_attempts: dict[str, int] = {}
release_stuck = threading.Event()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def divide(x: int, y: int) -> float:
    return x / y


@app.task
def parse(text: str) -> int:
    return int(text)


@app.task(max_retries=2, retry_for=(ConnectionError,))
def flaky(key: str) -> str:
    """Fails with ConnectionError on its first attempt, then succeeds."""
    flaky_attempts[key] = flaky_attempts.get(key, 0) + 1
    if flaky_attempts[key] == 1:
        raise ConnectionError(f"transient failure of {key}")
    return f"{key} after {flaky_attempts[key]} attempts"


@app.task
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def stuck() -> str:
    """Stays RUNNING until the fixture releases it (a worker that hangs)."""
    release_stuck.wait()
    return "released"


@app.workflow
def pipeline(n: int) -> int:
    """A workflow whose steps are sub-invocations."""
    pipeline.wf.set_data("steps", n)
    return sum(add(i, i).result for i in range(n))


@app.task
def place_order(order_id: str) -> str:
    """Emits ``order.placed``, whose trigger runs ``ship_order`` for the same order."""
    place_order.app.trigger.emit_event("order.placed", {"order_id": order_id})
    return order_id


@app.task
def ship_order(order_id: str) -> str:
    return f"shipped {order_id}"


def order_of(context: EventContext) -> dict[str, Any]:
    return {"order_id": context.payload["order_id"]}


# Registered by the seeding fixture on the app it builds.
SHIP_ON_ORDER = TriggerBuilder().on_event("order.placed").with_args_from_event(order_of)

ALL_TASKS = (add, divide, parse, flaky, slow, stuck, pipeline, place_order, ship_order)
