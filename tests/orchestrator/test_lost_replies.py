"""A statement whose reply is lost after its commit is resent, and counts once.

Each test goes through :class:`~tests.reliability.lost_reply.LostReplyProxy`: the server
runs and commits the statement, the connection drops before the reply arrives, and the
database layer resends the statement on a new connection. Nothing may be counted, written
or refused twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.notify import stop_all_listeners
from tests.orchestrator.apps import build_app, register, runner_context, work
from tests.reliability.lost_reply import LostReplyProxy, lost_reply_proxy


@pytest.fixture(autouse=True)
def _no_listener_left() -> Iterator[None]:
    """All-Postgres apps start a LISTEN thread; none may outlive its test's database."""
    yield
    stop_all_listeners()


@pytest.fixture
def proxy(database_url: str) -> Iterator[LostReplyProxy]:
    with lost_reply_proxy(database_url) as proxy:
        yield proxy
    dispose_all()


def fast_retries(url: str, app_id: str) -> Pynenc:
    return build_app(url, app_id, postgres_retry_initial_delay=0.01)


def all_postgres(url: str, app_id: str) -> Pynenc:
    return PynencBuilder().postgres(url=url, retry_initial_delay=0.01).app_id(app_id).build()


def history(url: str, invocation_id: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status FROM pynenc_invocation_history WHERE invocation_id = %s "
            "ORDER BY recorded_at, write_order",
            (invocation_id,),
        ).fetchall()
    return [row[0] for row in rows]


def queued(url: str, invocation_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pynenc_broker_message WHERE invocation_id = %s",
            (invocation_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_retry_increment_resent_after_a_lost_reply_counts_once(
    proxy: LostReplyProxy,
) -> None:
    app = fast_retries(proxy.url, "lost-retry-count")
    invocation_id = register(app, "once")
    proxy.arm("retries = retries + 1")
    app.orchestrator.increment_invocation_retries(invocation_id)
    assert proxy.dropped == 1
    assert app.orchestrator.get_invocation_retries(invocation_id) == 1
    app.orchestrator.increment_invocation_retries(invocation_id)
    assert app.orchestrator.get_invocation_retries(invocation_id) == 2


def test_a_status_change_resent_after_a_lost_reply_writes_one_history_row(
    proxy: LostReplyProxy, database_url: str
) -> None:
    app = fast_retries(proxy.url, "lost-status")
    invocation_id = register(app, "pending")
    owner = runner_context("owner")
    proxy.arm("pynenc-postgres: status change")
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.PENDING, owner)
    assert proxy.dropped == 1
    assert app.orchestrator.get_invocation_status(invocation_id) == InvocationStatus.PENDING
    assert history(database_url, invocation_id) == ["registered", "pending"]


def test_a_result_resent_after_a_lost_reply_is_stored_once_with_success(
    proxy: LostReplyProxy, database_url: str
) -> None:
    app = fast_retries(proxy.url, "lost-result")
    invocation_id = register(app, "result")
    owner = runner_context("owner")
    orchestrator = app.orchestrator
    orchestrator.set_invocation_status(invocation_id, InvocationStatus.PENDING, owner)
    orchestrator.set_invocation_status(invocation_id, InvocationStatus.RUNNING, owner)
    invocation = app.state_backend.get_invocation(invocation_id)
    proxy.arm("pynenc_invocation_result")
    orchestrator.set_invocation_result(invocation, "the result", owner)
    assert proxy.dropped == 1
    assert orchestrator.get_invocation_status(invocation_id) == InvocationStatus.SUCCESS
    assert app.state_backend.get_result(invocation_id) == "the result"
    assert history(database_url, invocation_id) == ["registered", "pending", "running", "success"]


def test_a_retry_resent_after_a_lost_reply_counts_and_routes_once(
    proxy: LostReplyProxy, database_url: str
) -> None:
    app = all_postgres(proxy.url, "lost-retry")
    work.app = app
    invocation = work("retry")
    invocation_id = invocation.invocation_id
    assert app.broker.retrieve_invocation() == invocation_id
    owner = runner_context("owner")
    orchestrator = app.orchestrator
    orchestrator.set_invocation_status(invocation_id, InvocationStatus.PENDING, owner)
    orchestrator.set_invocation_status(invocation_id, InvocationStatus.RUNNING, owner)
    proxy.arm("retries = retries + 1")
    orchestrator.set_invocation_retry(invocation, ValueError("again"), owner)
    assert proxy.dropped == 1
    assert orchestrator.get_invocation_status(invocation_id) == InvocationStatus.RETRY
    assert orchestrator.get_invocation_retries(invocation_id) == 1
    assert queued(database_url, invocation_id) == 1
    assert history(database_url, invocation_id) == ["registered", "pending", "running", "retry"]


def test_a_registration_resent_after_a_lost_reply_registers_once_and_runs_once(
    proxy: LostReplyProxy, database_url: str
) -> None:
    """The resent registration writes no second row or history; its route may queue a
    second copy (as any resent route may), and the copy is dropped when taken."""
    app = all_postgres(proxy.url, "lost-register")
    work.app = app
    proxy.arm("pynenc-postgres: register and route")
    invocation_id = work("registered").invocation_id
    assert proxy.dropped == 1
    assert history(database_url, invocation_id) == ["registered"]
    copies = queued(database_url, invocation_id)
    assert copies == 2  # the first attempt's route and the resent one
    owner = runner_context("owner")
    taken = [
        [str(i.invocation_id) for i in app.orchestrator.get_invocations_to_run(1, owner)]
        for _ in range(copies)
    ]
    assert taken[0] == [invocation_id]
    assert all(later == [] for later in taken[1:])
    assert queued(database_url, invocation_id) == 0
    assert history(database_url, invocation_id) == ["registered", "pending"]
