"""A runner that claims the atomic service and holds it until it is killed.

Run as ``python -m tests.orchestrator.service_holder URL APP_ID RUNNER_ID ORCHESTRATOR``.
It claims the slot through pynenc's own ``try_claim_atomic_service_run``, prints the
run id, then heartbeats as a live runner does and never finishes the run: the parent
kills it with SIGKILL mid-service, as a crash would.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from tests.orchestrator.apps import SERVICE_CONFIG, build_app, runner_context

HEARTBEAT_SECONDS = 0.2


def main(url: str, app_id: str, runner_id: str, orchestrator_cls: str) -> None:
    app = build_app(url, app_id, **{**SERVICE_CONFIG, "orchestrator_cls": orchestrator_cls})
    orchestrator = app.orchestrator
    ctx = runner_context(runner_id)
    while (run := orchestrator.try_claim_atomic_service_run(ctx)) is None:
        time.sleep(0.05)

    def heartbeat() -> None:
        while True:
            orchestrator.register_runner_heartbeats([runner_id], can_run_atomic_service=True)
            time.sleep(HEARTBEAT_SECONDS)

    threading.Thread(target=heartbeat, daemon=True).start()
    print(json.dumps({"run_id": run.atomic_service_run_id}), flush=True)
    threading.Event().wait()  # "runs the service" until killed


if __name__ == "__main__":
    main(*sys.argv[1:5])
