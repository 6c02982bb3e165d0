"""Tasks and helpers that build real invocations for the backend under test.

The module-level app only declares the tasks; each test points a task at its own app.
"""

from __future__ import annotations

from typing import Any

from pynenc import Pynenc
from pynenc.arguments import Arguments
from pynenc.call import Call
from pynenc.invocation import DistributedInvocation
from pynenc.invocation.status import InvocationStatus, InvocationStatusRecord
from pynenc.runner.runner_context import RunnerContext

declaring_app = Pynenc(config_values={"app_id": "pynenc-postgres-reliability-tasks"})


@declaring_app.task
def echo(value: Any) -> Any:
    return value


def new_invocation(app: Pynenc, value: Any) -> DistributedInvocation[Any, Any]:
    """An invocation of ``echo(value)`` bound to ``app``; nothing is stored yet."""
    echo.app = app
    return DistributedInvocation.isolated(Call(echo, Arguments({"value": value})))


def record(
    app: Pynenc,
    invocation: DistributedInvocation[Any, Any],
    status: InvocationStatus,
    ctx: RunnerContext,
) -> None:
    """Add one history row for ``invocation`` through pynenc's public backend API."""
    app.state_backend.add_histories(
        [invocation], InvocationStatusRecord(status, ctx.runner_id), ctx
    )
