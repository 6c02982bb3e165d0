"""One of the processes that race for cron ticks and trigger runs (tests/trigger/test_race.py).

Started with multiprocessing's ``spawn`` context, so each is a fresh interpreter with
its own app, trigger and database connections. Each round it takes an order from its
own queue, waits at the barrier shared by every racer, so that all of them send their
statement at the same moment, and reports whether it won.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pynenc import Pynenc, PynencBuilder
from pynenc.orchestrator.atomic_service import AtomicServiceRun
from pynenc.trigger.conditions import CronCondition

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier


@dataclass(frozen=True)
class Order:
    """What every racer does in one round.

    ``kind`` is ``cron`` (store_last_cron_execution with ``expected``), ``cron_check``
    (pynenc's own cron check, _should_trigger_cron_condition, on the ``* * * * *``
    condition) or ``claim`` (claim_trigger_run for ``seconds``).
    """

    round: int
    kind: str
    key: str = ""
    tick: datetime | None = None
    expected: datetime | None = None
    seconds: int = 60


def build_app(url: str, app_id: str, trigger_cls: str, sqlite_path: str) -> Pynenc:
    builder = PynencBuilder().app_id(app_id)
    builder = builder.sqlite(sqlite_db_path=sqlite_path) if sqlite_path else builder.memory()
    return builder.postgres_state_backend(url=url).custom_config(trigger_cls=trigger_cls).build()


def race(
    index: int,
    url: str,
    app_id: str,
    trigger_cls: str,
    sqlite_path: str,
    orders: Queue[Order | None],
    results: Queue[tuple[int, int, Any]],
    barrier: Barrier,
) -> None:
    try:
        trigger = build_app(url, app_id, trigger_cls, sqlite_path).trigger
        cron = CronCondition("* * * * *")
        trigger.register_condition(cron)
        trigger.get_last_cron_execution("warm-up")  # connect before the first round
        service_run = AtomicServiceRun(runner_id=f"racer-{index}", atomic_service_run_id="race")
        results.put((index, -1, "ready"))
        while (order := orders.get()) is not None:
            barrier.wait()
            if order.kind == "cron":
                won = trigger.store_last_cron_execution(order.key, order.tick, order.expected)
            elif order.kind == "cron_check":
                won = trigger._should_trigger_cron_condition(cron, order.tick, service_run)
                won = won is not None
            else:
                won = trigger.claim_trigger_run(order.key, order.seconds)
            results.put((index, order.round, bool(won)))
    except BaseException:
        results.put((index, -1, traceback.format_exc()))
        raise
