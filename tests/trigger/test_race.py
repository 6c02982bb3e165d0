"""Eight processes race for the same cron tick and the same trigger run, round after round.

Every round, each racer waits at a shared barrier and then sends the same conditional
statement; exactly one must win (none, for a claim that is still live). The racers are
separate interpreters with their own connections, like runners on separate hosts.
"""

from __future__ import annotations

import multiprocessing
import queue
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pynenc import PynencBuilder

from tests.trigger.race_worker import Order, race

PROCESSES = 8
ROUNDS = 200
# A racer that has not reported by then is stuck; the failure names it.
DEADLINE_SECONDS = 120
TICK_0 = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)


@dataclass
class Racers:
    """The racing processes and how to run a round on them."""

    orders: list[Any]
    results: Any
    processes: list[Any]
    app_id: str

    def round(self, order: Order) -> list[int]:
        """Give every racer ``order``; the indexes of those that won."""
        for orders in self.orders:
            orders.put(order)
        outcomes = self._collect(order.round)
        return sorted(index for index, won in outcomes.items() if won)

    def _collect(self, round_number: int) -> dict[int, Any]:
        outcomes: dict[int, Any] = {}
        while len(outcomes) < len(self.processes):
            try:
                index, reported_round, outcome = self.results.get(timeout=DEADLINE_SECONDS)
            except queue.Empty:
                missing = sorted(set(range(len(self.processes))) - set(outcomes))
                pytest.fail(f"racers {missing} did not report round {round_number}")
            assert isinstance(outcome, bool) or outcome == "ready", outcome  # a traceback
            assert reported_round == round_number
            outcomes[index] = outcome
        return outcomes


def start_racers(url: str, trigger_cls: str = "PostgresTrigger", sqlite_path: str = "") -> Racers:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES, timeout=DEADLINE_SECONDS)
    results = ctx.Queue()
    orders = [ctx.Queue() for _ in range(PROCESSES)]
    app_id = f"race-{uuid.uuid4().hex[:8]}"
    processes = [
        ctx.Process(
            target=race,
            args=(i, url, app_id, trigger_cls, sqlite_path, orders[i], results, barrier),
            daemon=True,
        )
        for i in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    racers = Racers(orders, results, processes, app_id)
    racers._collect(-1)  # every racer has built its app and connected
    return racers


@pytest.fixture
def racers(database_url: str) -> Iterator[Racers]:
    racers = start_racers(database_url)
    try:
        yield racers
    finally:
        for orders in racers.orders:
            orders.put(None)
        for process in racers.processes:
            process.join(DEADLINE_SECONDS)
            if process.is_alive():
                process.kill()


def report(name: str, winners: list[list[int]]) -> None:
    """Print the rounds and how many won each (shown with ``pytest -s``)."""
    per_round = Counter(len(w) for w in winners)
    by_racer = Counter(i for w in winners for i in w)
    print(
        f"\n{name}: {len(winners)} rounds, {PROCESSES} processes; rounds by number of "
        f"winners {dict(sorted(per_round.items()))}; wins by racer {dict(sorted(by_racer.items()))}"
    )


def test_first_tick_of_a_cron_condition_has_exactly_one_winner(racers: Racers) -> None:
    """No execution recorded yet (``expected_last_execution=None``): one insert lands."""
    winners = [
        racers.round(Order(r, "cron", key=f"cron-first-{r}", tick=TICK_0, expected=None))
        for r in range(ROUNDS)
    ]
    report("first cron tick", winners)
    assert all(len(w) == 1 for w in winners), [(r, w) for r, w in enumerate(winners) if len(w) != 1]


def test_each_next_cron_tick_has_exactly_one_winner(racers: Racers, database_url: str) -> None:
    """Every racer read the same last execution and tries to move it to the next tick."""
    key = "cron-next"
    assert racers.round(Order(0, "cron", key=key, tick=TICK_0)) != []
    winners = []
    for r in range(1, ROUNDS + 1):
        previous, tick = TICK_0 + timedelta(minutes=r - 1), TICK_0 + timedelta(minutes=r)
        winners.append(racers.round(Order(r, "cron", key=key, tick=tick, expected=previous)))
    report("next cron tick", winners)
    assert all(len(w) == 1 for w in winners), [(r, w) for r, w in enumerate(winners) if len(w) != 1]
    assert stored_last_execution(database_url, racers.app_id, key) == TICK_0 + timedelta(
        minutes=ROUNDS
    )


def test_pynencs_cron_check_fires_each_minute_once(racers: Racers, database_url: str) -> None:
    """pynenc's own check (cache, read, compare-and-set) on ``* * * * *``, a minute a round."""
    winners = [
        racers.round(Order(r, "cron_check", tick=TICK_0 + timedelta(minutes=r)))
        for r in range(ROUNDS)
    ]
    report("pynenc cron check", winners)
    assert all(len(w) == 1 for w in winners), [(r, w) for r, w in enumerate(winners) if len(w) != 1]


def test_each_trigger_run_is_claimed_exactly_once(racers: Racers) -> None:
    winners = [racers.round(Order(r, "claim", key=f"run-{r}")) for r in range(ROUNDS)]
    report("trigger run claim", winners)
    assert all(len(w) == 1 for w in winners), [(r, w) for r, w in enumerate(winners) if len(w) != 1]


def test_an_expired_claim_is_taken_over_by_exactly_one(racers: Racers, database_url: str) -> None:
    """A holder's claim lapsed (by the server clock); of eight takers, one gets the run."""
    holder = racer_app(database_url, racers.app_id).trigger
    winners = []
    for r in range(ROUNDS):
        run_id = f"expired-{r}"
        assert holder.claim_trigger_run(run_id, expiration_seconds=0)
        winners.append(racers.round(Order(r, "claim", key=run_id, seconds=60)))
        # The taker's claim is live now: the holder cannot take the run back.
        assert not holder.claim_trigger_run(run_id, expiration_seconds=0)
    report("expired claim takeover", winners)
    assert all(len(w) == 1 for w in winners), [(r, w) for r, w in enumerate(winners) if len(w) != 1]


def test_a_live_claim_is_won_by_nobody_else(racers: Racers, database_url: str) -> None:
    holder = racer_app(database_url, racers.app_id).trigger
    winners = []
    for r in range(ROUNDS // 4):
        run_id = f"live-{r}"
        assert holder.claim_trigger_run(run_id, expiration_seconds=600)
        winners.append(racers.round(Order(r, "claim", key=run_id)))
    report("live claim", winners)
    assert all(w == [] for w in winners), [(r, w) for r, w in enumerate(winners) if w]


def racer_app(url: str, app_id: str) -> Any:
    return (
        PynencBuilder()
        .app_id(app_id)
        .memory()
        .postgres_state_backend(url=url)
        .custom_config(trigger_cls="PostgresTrigger")
        .build()
    )


def stored_last_execution(url: str, app_id: str, condition_id: str) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT last_execution FROM pynenc_trigger_cron_execution "
            "WHERE app_id = %s AND condition_id = %s",
            (app_id, condition_id),
        ).fetchone()
    assert row is not None
    value: datetime = row[0]
    return value
