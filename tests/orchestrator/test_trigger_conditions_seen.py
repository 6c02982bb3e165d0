"""A trigger condition registered by another process is seen by the very next status change.

The orchestrator's combined statements tell, for each status change, whether trigger
conditions watch the task (and pynenc's trigger is asked only then). Nothing is cached: a
process that has been changing statuses of a task with no conditions sees a condition that
another process (another host) registers with its next statement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.db.notify import stop_all_listeners
from tests.orchestrator.apps import runner_context, work

REGISTER_ELSEWHERE = textwrap.dedent(
    """
    import sys
    from pynenc import PynencBuilder
    from pynenc.identifiers.task_id import TaskId
    from pynenc.invocation.status import InvocationStatus
    from pynenc.trigger.arguments import create_argument_filter
    from pynenc.trigger.conditions import StatusCondition

    url, app_id, module, name = sys.argv[1:5]
    app = PynencBuilder().postgres(url=url).app_id(app_id).build()
    condition = StatusCondition(
        TaskId(module, name),
        [InvocationStatus.SUCCESS, InvocationStatus.RUNNING],
        create_argument_filter(None),
    )
    app.trigger.register_condition(condition)
    """
)


@pytest.fixture(autouse=True)
def _no_listener_left() -> Iterator[None]:
    """All-Postgres apps start a LISTEN thread; none may outlive its test's database."""
    yield
    stop_all_listeners()


def all_postgres(url: str, app_id: str) -> Pynenc:
    return PynencBuilder().postgres(url=url).app_id(app_id).build()


def valid_conditions(url: str, app_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pynenc_trigger_valid_condition WHERE app_id = %s", (app_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def run_to_success(app: Pynenc, label: str) -> None:
    """One invocation of ``work`` submitted, taken and run to SUCCESS by this process."""
    work.app = app
    invocation = work(label)
    owner = runner_context(f"owner-{label}")
    taken = list(
        app.orchestrator.get_invocations_to_run(1, owner, lambda: ["default"], lambda _queue: None)
    )
    assert [t.invocation_id for t in taken] == [invocation.invocation_id]
    app.orchestrator.set_invocation_status(
        invocation.invocation_id, InvocationStatus.RUNNING, owner
    )
    app.orchestrator.set_invocation_result(taken[0], label, owner)


def test_a_condition_registered_by_another_process_is_reported_at_the_next_change(
    database_url: str,
) -> None:
    app_id = "conditions-elsewhere"
    app = all_postgres(database_url, app_id)
    run_to_success(app, "before")
    assert valid_conditions(database_url, app_id) == 0

    subprocess.run(
        [
            sys.executable,
            "-c",
            REGISTER_ELSEWHERE,
            database_url,
            app_id,
            work.task_id.module,
            work.task_id.func_name,
        ],
        env={**os.environ},
        check=True,
    )

    run_to_success(app, "after")
    # RUNNING and SUCCESS of the second invocation, reported by this process at once.
    assert valid_conditions(database_url, app_id) == 2
