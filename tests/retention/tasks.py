"""Tasks whose runs leave rows in every table retention must clean.

They are bound to an app built by the fixture (``task.app = app``).
"""

from __future__ import annotations

import threading
from typing import Any

from pynenc import PynencBuilder
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.trigger.conditions import EventContext
from pynenc.trigger.trigger_builder import TriggerBuilder

app = PynencBuilder().memory().app_id("retention-placeholder").build()

BIG = "x" * 5000
"""An argument longer than ``min_size_to_cache``: stored in the client data store."""


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def measure(text: str) -> int:
    """Takes a large argument (client data) and returns a large result."""
    return len(text)


@app.task
def echo_big(text: str) -> str:
    """Returns a large value: the result is client data too."""
    return text + "!"


@app.task
def divide(x: int, y: int) -> float:
    return x / y


@app.task(registration_concurrency=ConcurrencyControlType.ARGUMENTS)
def unique(key: str) -> str:
    """Concurrency-controlled: its arguments are indexed by the orchestrator."""
    return key


@app.workflow
def pipeline(n: int) -> int:
    """A workflow that keeps data and waits for its steps (waiting edges)."""
    pipeline.wf.set_data("steps", n)
    return sum(add(i, i).result for i in range(n))


@app.task
def place_order(order_id: str) -> str:
    place_order.app.trigger.emit_event("order.placed", {"order_id": order_id})
    return order_id


@app.task
def ship_order(order_id: str) -> str:
    return f"shipped {order_id}"


def order_of(context: EventContext) -> dict[str, Any]:
    return {"order_id": context.payload["order_id"]}


SHIP_ON_ORDER = TriggerBuilder().on_event("order.placed").with_args_from_event(order_of)

ALL_TASKS = (add, measure, echo_big, divide, unique, pipeline, place_order, ship_order)

release_hold = threading.Event()


@app.task
def hold() -> str:
    """Stays RUNNING until the test releases it: work in flight during retention."""
    release_hold.wait(120)
    return "released"


ALL_TASKS = (*ALL_TASKS, hold)
