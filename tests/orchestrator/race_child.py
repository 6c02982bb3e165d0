"""A racer: one process that attempts, on command, the same step as seven others.

Each round the parent sends a command to every racer, the racers meet at a barrier,
and each makes its attempt at once and reports whether it won or which error it got.
"""

from __future__ import annotations

import traceback
from typing import Any

from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import AtomicServiceRun

from tests.orchestrator.apps import build_app, runner_context


def race(url: str, app_id: str, index: int, commands: Any, barrier: Any, results: Any) -> None:
    """Serve commands until ``None``: ``(round, kind, invocation_id, status, runner_id)``."""
    app = build_app(url, app_id)
    orchestrator = app.orchestrator
    orchestrator.count_invocations()  # open the connection before the first race
    results.put(("ready", index, None, None))
    while (command := commands.get()) is not None:
        round_no, kind, invocation_id, status, runner_id = command
        barrier.wait()
        try:
            if kind == "transition":
                orchestrator.set_invocation_status(
                    invocation_id, InvocationStatus(status), runner_context(runner_id)
                )
            else:
                run = AtomicServiceRun(
                    runner_id=runner_id, atomic_service_run_id=f"{invocation_id}-{index}"
                )
                if not orchestrator.record_atomic_service_execution_start(run, None):
                    results.put((round_no, index, "blocked", None))
                    continue
            results.put((round_no, index, "won", None))
        except Exception as exc:  # the losers' errors are the point of the race
            results.put((round_no, index, type(exc).__name__, traceback.format_exc()))
