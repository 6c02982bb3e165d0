"""An invocation taken from the queue by a worker that died before PENDING is run again.

The worker's half of pynenc's protocol is literal here: ``broker.retrieve_invocation``
takes the queue row, and nothing moves the invocation to PENDING, as when the process is
killed between the two calls. pynenc's pending-recovery task asks the orchestrator for
``get_pending_invocations_for_recovery``; that call routes such invocations again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.db.notify import stop_all_listeners
from pynenc_postgres.orchestrator import PostgresOrchestrator
from tests.orchestrator.apps import build_app, register, runner_context
from tests.waiting import wait_until

MAX_PENDING_SECONDS = 0.5


@pytest.fixture
def app(database_url: str) -> Iterator[Pynenc]:
    app = (
        PynencBuilder()
        .postgres(url=database_url)
        .app_id("stranded")
        .custom_config(max_pending_seconds=MAX_PENDING_SECONDS, queue_timeout_sec=0.05)
        .build()
    )
    yield app
    stop_all_listeners()


def _orchestrator(app: Pynenc) -> PostgresOrchestrator:
    orchestrator = app.orchestrator
    assert isinstance(orchestrator, PostgresOrchestrator)
    return orchestrator


def test_a_claimed_but_never_pending_invocation_is_routed_again_and_runs(app: Pynenc) -> None:
    stranded = register(app, "taken by a worker that died")
    waiting = register(app, "still in the queue")
    assert app.broker.retrieve_invocation() == stranded  # the dead worker's claim
    assert app.broker.count_invocations() == 1

    # Younger than max_pending_seconds: it may be a live worker between its two calls.
    assert list(app.orchestrator.get_pending_invocations_for_recovery()) == []
    assert app.broker.count_invocations() == 1

    routed = wait_until(
        lambda: _orchestrator(app).route_stranded_invocations(MAX_PENDING_SECONDS),
        "the stranded invocation was never routed again",
    )
    assert routed == [stranded]
    # Routed once: the invocation that never left the queue has no second copy.
    assert app.broker.count_invocations() == 2
    assert _orchestrator(app).route_stranded_invocations(MAX_PENDING_SECONDS) == []

    ctx = runner_context("survivor")
    taken = [str(i.invocation_id) for i in app.orchestrator.get_invocations_to_run(2, ctx)]
    assert sorted(taken) == sorted([stranded, waiting])
    assert app.orchestrator.get_invocation_status(stranded) == InvocationStatus.PENDING


def test_pynencs_recovery_call_routes_it_again(app: Pynenc) -> None:
    stranded = register(app, "taken by a worker that died")
    assert app.broker.retrieve_invocation() == stranded

    def recovered() -> bool:
        assert list(app.orchestrator.get_pending_invocations_for_recovery()) == []
        return app.broker.count_invocations() == 1

    wait_until(recovered, "pynenc's recovery call did not route the invocation again")
    assert app.broker.retrieve_invocation() == stranded


def test_pending_and_running_invocations_are_left_to_pynencs_own_recovery(app: Pynenc) -> None:
    pending = register(app, "pending")
    ctx = runner_context("live")
    assert [str(i.invocation_id) for i in app.orchestrator.get_invocations_to_run(1, ctx)] == [
        pending
    ]

    wait_until(
        lambda: list(app.orchestrator.get_pending_invocations_for_recovery()) == [pending],
        "the PENDING invocation never became old enough for pynenc's recovery",
    )
    assert app.broker.count_invocations() == 0


def test_another_broker_is_never_given_copies(database_url: str) -> None:
    """With pynenc's memory broker the queue is not in this database: nothing to compare."""
    app = build_app(database_url, "memory-broker", max_pending_seconds=MAX_PENDING_SECONDS)
    taken = register(app, "taken")
    assert app.broker.retrieve_invocation() == taken

    assert app.orchestrator.get_invocation_status(taken) == InvocationStatus.REGISTERED
    orchestrator = _orchestrator(app)
    # Well past max_pending_seconds by the server's clock, still nothing is routed.
    wait_until(
        lambda: (
            orchestrator.db.fetchone(
                "SELECT now() - status_set_at > make_interval(secs => %s) "
                "FROM pynenc_orchestrator_invocation WHERE invocation_id = %s",
                (MAX_PENDING_SECONDS, taken),
            )
            == (True,)
        ),
        "the invocation never grew older than max_pending_seconds",
    )
    assert orchestrator.route_stranded_invocations(MAX_PENDING_SECONDS) == []
    assert app.broker.count_invocations() == 0


def test_a_worker_dead_after_the_combined_claim_leaves_it_to_pending_recovery(
    app: Pynenc,
) -> None:
    """With the queue in the same database, the claim moves the invocation to PENDING in
    the same statement: a worker that dies right after it leaves a PENDING invocation in
    no queue row, which pynenc's pending recovery finds once it is older than
    ``max_pending_seconds``."""
    taken_by_the_dead = register(app, "taken and made pending by a worker that died")
    dead = runner_context("dead")
    taken = [str(i.invocation_id) for i in app.orchestrator.get_invocations_to_run(1, dead)]
    assert taken == [taken_by_the_dead]
    assert app.orchestrator.get_invocation_status(taken_by_the_dead) == InvocationStatus.PENDING
    assert app.broker.count_invocations() == 0

    wait_until(
        lambda: (
            list(app.orchestrator.get_pending_invocations_for_recovery()) == [taken_by_the_dead]
        ),
        "the invocation left PENDING by the dead worker was not offered for recovery",
    )


def _taken_at(app: Pynenc, invocation_id: str) -> object:
    row = _orchestrator(app).db.fetchone(
        "SELECT taken_at FROM pynenc_orchestrator_invocation WHERE app_id = %s "
        "AND invocation_id = %s",
        (app.app_id, invocation_id),
    )
    assert row is not None
    return row[0]


def _take_leaving_the_status_change(app: Pynenc, runner_id: str) -> str | None:
    """The combined claim of a worker whose task needs pynenc's concurrency check: the
    statement takes the queue row and leaves the PENDING change for a later statement."""
    orchestrator = _orchestrator(app)
    backend = orchestrator._combined_backend()
    broker = orchestrator._combined_broker()
    assert backend is not None and broker is not None
    params = orchestrator._take_params(backend, runner_context(runner_id), "change-1")
    params["free_tasks"] = []
    row = orchestrator._claim_and_take(broker, broker.conf.queues[0], params)
    return None if row is None else str(row[0])


def test_a_take_left_for_a_separate_status_change_is_routed_again_if_the_worker_dies(
    app: Pynenc,
) -> None:
    stranded = register(app, "taken for a concurrency check by a worker that died")
    assert _take_leaving_the_status_change(app, "dead") == stranded
    assert app.orchestrator.get_invocation_status(stranded) == InvocationStatus.REGISTERED
    assert _taken_at(app, stranded) is not None
    assert app.broker.count_invocations() == 0

    routed = wait_until(
        lambda: _orchestrator(app).route_stranded_invocations(MAX_PENDING_SECONDS),
        "the invocation taken for a concurrency check was never routed again",
    )
    assert routed == [stranded]
    assert app.broker.count_invocations() == 1


def test_the_trace_of_a_take_goes_with_the_next_status_change(app: Pynenc) -> None:
    """Only invocations taken and not moved on carry a trace, so the index the search
    reads stays as small as the number of workers between their two statements."""
    checked = register(app, "taken for a concurrency check, then made pending")
    assert _take_leaving_the_status_change(app, "live") == checked
    assert _taken_at(app, checked) is not None
    app.orchestrator.set_invocation_status(
        checked, InvocationStatus.PENDING, runner_context("live")
    )
    assert _taken_at(app, checked) is None

    plain = register(app, "taken by the broker's own claim, then made pending")
    assert app.broker.retrieve_invocation() == plain
    assert _taken_at(app, plain) is not None
    app.orchestrator.set_invocation_status(plain, InvocationStatus.PENDING, runner_context("live"))
    assert _taken_at(app, plain) is None

    moved = register(app, "taken and made pending by one statement")
    taken = app.orchestrator.get_invocations_to_run(1, runner_context("live"))
    assert [str(i.invocation_id) for i in taken] == [moved]
    assert _taken_at(app, moved) is None
