"""A runner process whose Python clock is skewed; run as ``python -m`` with the skew in env.

It registers itself with a heartbeat, puts one invocation in PENDING and one in RUNNING
(both owned by itself), keeps heartbeating, and answers the parent's questions on stdin
with its own recovery decisions: ``recover <max_pending_seconds> <dead_after_minutes>``.
It prints one JSON document per line.
"""

# The clock is skewed before pynenc (or anything that reads the time) is imported.
import tests.orchestrator.skewed_clock  # noqa: F401, I001

import json
import sys
import threading
import time

from pynenc.invocation.status import InvocationStatus

from tests.orchestrator.apps import build_app, register, runner_context

HEARTBEAT_SECONDS = 0.2


def main(url: str, app_id: str, runner_id: str, orchestrator_cls: str) -> None:
    app = build_app(url, app_id, orchestrator_cls=orchestrator_cls)
    orchestrator = app.orchestrator
    ctx = runner_context(runner_id)
    orchestrator.register_runner_heartbeats([runner_id])
    pending = register(app, f"{runner_id}-pending")
    running = register(app, f"{runner_id}-running")
    orchestrator.set_invocation_status(pending, InvocationStatus.PENDING, ctx)
    orchestrator.set_invocation_status(running, InvocationStatus.PENDING, ctx)
    orchestrator.set_invocation_status(running, InvocationStatus.RUNNING, ctx)

    def heartbeat() -> None:
        while True:
            orchestrator.register_runner_heartbeats([runner_id])
            time.sleep(HEARTBEAT_SECONDS)

    threading.Thread(target=heartbeat, daemon=True).start()
    say(python_time=time.time(), pending=pending, running=running)
    for line in sys.stdin:
        _, max_pending_seconds, dead_after_minutes = line.split()
        app.conf.max_pending_seconds = float(max_pending_seconds)
        app.conf.runner_considered_dead_after_minutes = float(dead_after_minutes)
        say(
            pending=sorted(orchestrator.get_pending_invocations_for_recovery()),
            running=sorted(orchestrator.get_running_invocations_for_recovery()),
        )


def say(**document: object) -> None:
    print(json.dumps(document), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
