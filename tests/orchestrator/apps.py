"""Apps and tasks for the orchestrator tests, importable by spawned child processes."""

from __future__ import annotations

import os
import socket

from pynenc import Pynenc, PynencBuilder
from pynenc.runner.runner_context import RunnerContext

ORCHESTRATOR_CLS = "PostgresOrchestrator"

# A placeholder app: tests rebind the task to an app on their own database.
placeholder = PynencBuilder().memory().app_id("orchestrator-tests-placeholder").build()


@placeholder.task
def work(label: str) -> str:
    return label


def build_app(url: str, app_id: str, **config: object) -> Pynenc:
    """pynenc's memory broker and trigger; our state backend and orchestrator at ``url``."""
    return (
        PynencBuilder()
        .memory()
        .postgres_state_backend(url=url)
        .app_id(app_id)
        .custom_config(**{"orchestrator_cls": ORCHESTRATOR_CLS, **config})
        .build()
    )


def runner_context(runner_id: str) -> RunnerContext:
    return RunnerContext(
        runner_cls="TestRunner",
        runner_id=runner_id,
        pid=os.getpid(),
        hostname=socket.gethostname(),
    )


def register(app: Pynenc, label: str) -> str:
    """Register one invocation of ``work`` through pynenc's own path; return its id."""
    work.app = app
    invocation = work(label)
    return str(invocation.invocation_id)


# Atomic-service timing for the takeover test: 6 s cycles, a check every 0.3 s, and a
# runner dead after 6 s without a heartbeat.
SERVICE_CONFIG: dict[str, object] = {
    "atomic_service_interval_minutes": 0.1,
    "atomic_service_spread_margin_minutes": 0.0,
    "atomic_service_max_start_slot_fraction": 1.0,
    "atomic_service_check_interval_minutes": 0.005,
    "atomic_service_membership_stabilization_minutes": 0.0,
    "runner_considered_dead_after_minutes": 0.1,
    "runner_loop_sleep_time_sec": 0.05,
}
