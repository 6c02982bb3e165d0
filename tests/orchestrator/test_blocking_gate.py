"""Blocking control is asked again only when its answer may have grown.

pynenc's runner loop asks for the blocking invocations before every claim. After an empty
answer, the query is sent again only when a waiting edge was added (notified to every
process), when this process changed a status while the app had waiting edges, or at the
re-check; a status change of an app without edges cannot add to the answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.db.notify import stop_all_listeners
from pynenc_postgres.orchestrator import PostgresOrchestrator
from pynenc_postgres.orchestrator.blocking_control import PostgresBlockingControl
from tests.orchestrator.apps import register, runner_context

DEADLINE_SEC = 30.0


@pytest.fixture
def app(database_url: str) -> Iterator[Pynenc]:
    app = (
        PynencBuilder()
        .app_id(f"gate-{uuid.uuid4().hex[:8]}")
        .postgres(url=database_url)
        # The re-check must not explain a query sent during the test, and neither may a
        # change of host leader: another test's leftover worker on this host could hand
        # the host's LISTEN session over mid-test, and a new session rightly asks again.
        .custom_config(
            postgres_broker_recheck_interval_sec=600,
            postgres_broker_listener_scope="process",
        )
        .build()
    )
    notifier = app.broker.notifier()
    notifier.start()
    deadline = time.monotonic() + DEADLINE_SEC
    while not notifier.live:
        assert time.monotonic() < deadline, "the LISTEN session never became live"
        time.sleep(0.01)
    yield app
    stop_all_listeners()


def control(app: Pynenc) -> PostgresBlockingControl:
    orchestrator = app.orchestrator
    assert isinstance(orchestrator, PostgresOrchestrator)
    blocking = orchestrator.blocking_control
    assert isinstance(blocking, PostgresBlockingControl)
    return blocking


def ask(app: Pynenc) -> tuple[list[str], bool]:
    """The answer, and whether it was read from the server (not skipped)."""
    gate = control(app).gate
    skipped = gate.skipped
    answer = list(app.orchestrator.get_blocking_invocations(10))
    return answer, gate.skipped == skipped


def wait_for_query(app: Pynenc) -> list[str]:
    """Ask until the query is sent (a notification may take a moment to arrive)."""
    deadline = time.monotonic() + DEADLINE_SEC
    while True:
        answer, queried = ask(app)
        if queried:
            return answer
        assert time.monotonic() < deadline, "blocking control was never asked again"
        time.sleep(0.01)


def test_status_changes_of_an_app_without_waiting_edges_send_no_query(app: Pynenc) -> None:
    invocation_id = register(app, "alone")
    assert ask(app) == ([], True)
    assert ask(app) == ([], False)
    ctx = runner_context("runner-a")
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.PENDING, ctx)
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.RUNNING, ctx)
    assert ask(app) == ([], False)


def test_a_new_edge_and_then_status_changes_while_edges_exist_ask_again(app: Pynenc) -> None:
    waiter = register(app, "waiter")
    waited = register(app, "waited")
    assert ask(app) == ([], True)
    ctx = runner_context("runner-a")
    app.orchestrator.set_invocation_status(waited, InvocationStatus.PENDING, ctx)
    app.orchestrator.set_invocation_status(waited, InvocationStatus.RUNNING, ctx)
    assert ask(app) == ([], False)

    # The waited invocation runs: the new edge is asked about, the answer is still empty.
    app.orchestrator.waiting_for_results(waiter, [waited])
    assert wait_for_query(app) == []
    assert ask(app) == ([], False)

    # With an edge in place, this process's status change may add to the answer.
    app.orchestrator.set_invocation_status(waited, InvocationStatus.RETRY, ctx)
    assert ask(app) == ([waited], True)
